"""The distillation criterion: every loss term of a recipe, weighted and windowed by epoch.

Like DeiT's DistillationLoss, it runs the (frozen) teachers itself: the training step only
runs the student and hands over its logits. Features come from recorders declared by module
name; the student's hooks fire during the student's own forward. The terms, their losses and
what they record come from the registry (distill/terms.py).
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .config import DistillConfig
from .recorders import FeatureRecorder
from .teacher import run_teacher
from .terms import TERMS, LossContext, feature_modules, recorded_modules


class DistillationCriterion(nn.Module):
    def __init__(self, cfg: DistillConfig, student: nn.Module, teacher: Optional[nn.Module],
                 logit_teacher: Optional[nn.Module], blocks: List[str], label_smoothing: float = 0.,
                 global_batch: int = 1, feature_names: Optional[Dict[str, List[str]]] = None):
        """`blocks`: the imitated blocks; `feature_names`: `terms.feature_modules(cfg, blocks)`
        when the caller has it already (the trainer checks those modules on both models first)."""
        super().__init__()
        self.cfg = cfg
        # batch_sum reductions scale by the global batch, not the per-process one, so the
        # balance does not change with processes or accumulation.
        self.context = context = LossContext(label_smoothing, global_batch, cfg.feature_reduction)
        self.teacher = teacher
        self.logit_teacher = logit_teacher if logit_teacher is not None else teacher
        self.losses = nn.ModuleDict({name: term.build(getattr(cfg, name), context) for name, term in TERMS.items()})
        self.feature_names = feature_names if feature_names is not None else feature_modules(cfg, blocks)
        names = self.recorded_names = recorded_modules(self.feature_names)
        self.student_rec = FeatureRecorder(student, names, 'student') if names else None
        self.teacher_rec = FeatureRecorder(teacher, names, 'teacher') if names else None

    def active_terms(self, epoch: int) -> List[str]:
        return [t for t in TERMS if getattr(self.cfg, t).active(epoch)]

    def term_inputs(self, images, student_logits, targets, epoch: int) -> Dict[str, Tuple]:
        """{active term: the arguments of its loss}: (student logits, labels), (student logits,
        teacher logits) or (student features, teacher features), one feature pair per imitated
        block. Runs the teachers; the student's features were recorded by its own forward."""
        active = self.active_terms(epoch)
        teacher_logits = None
        if any(TERMS[t].needs_teacher for t in active):
            with torch.inference_mode():
                teacher_logits = run_teacher(self.teacher, images) if self.teacher is not None else None
                if self.logit_teacher is not self.teacher:
                    teacher_logits = run_teacher(self.logit_teacher, images)
        student_feats = self._take(self.student_rec)
        teacher_feats = self._take(self.teacher_rec) if teacher_logits is not None else {}
        inputs = {}
        for name in active:
            kind = TERMS[name].kind
            if kind == 'label':
                inputs[name] = (student_logits, targets)
            elif kind == 'logit':
                inputs[name] = (student_logits, teacher_logits)
            else:
                keys = self.feature_names[name]
                inputs[name] = ([student_feats[k] for k in keys], [teacher_feats[k] for k in keys])
        return inputs

    def forward(self, images, student_logits, targets, epoch: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        terms = {name: self.losses[name](*args)
                 for name, args in self.term_inputs(images, student_logits, targets, epoch).items()}
        total = sum(getattr(self.cfg, n).weight * v for n, v in terms.items())
        return total, terms

    def use_teacher_forward(self, teacher: nn.Module, forward: nn.Module):
        """Call `forward` (e.g. the compiled `teacher`, which shares its modules and hooks)
        wherever the criterion called `teacher`."""
        if self.teacher is teacher:
            self.teacher = forward
        if self.logit_teacher is teacher:
            self.logit_teacher = forward

    @staticmethod
    def _take(recorder):
        if recorder is None:
            return {}
        return dict(zip(recorder.names, recorder.take()))

    def clear_records(self):
        for rec in (self.student_rec, self.teacher_rec):
            if rec is not None:
                rec.clear()

    def remove_hooks(self):
        for rec in (self.student_rec, self.teacher_rec):
            if rec is not None:
                rec.remove()

