"""The distillation criterion: every loss term of a recipe, weighted and windowed by epoch.

Like DeiT's DistillationLoss, it runs the (frozen) teachers itself: the training step only
runs the student and hands over its logits. Features come from recorders declared by module
name; the student's hooks fire during the student's own forward.
"""
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .config import DistillConfig
from .losses import FeatureMSE, HardTargetKD, LabelCE, RelationMSE, SoftTargetKD
from .recorders import FeatureRecorder
from .teacher import run_teacher

LOGIT_TERMS = ('soft', 'hard')
# Feature terms and the submodule (relative to an imitated block) whose output they compare.
FEATURE_TERMS = {'l_in': '.norm1', 'l_in_hidden': '', 'l_out': '.token_mixer', 'l_rel': ''}
TERMS = ('ce',) + LOGIT_TERMS + tuple(FEATURE_TERMS)


class DistillationCriterion(nn.Module):
    def __init__(self, cfg: DistillConfig, student: nn.Module, teacher: Optional[nn.Module],
                 logit_teacher: Optional[nn.Module], blocks: List[str], label_smoothing: float = 0.,
                 global_batch: int = 1):
        super().__init__()
        self.cfg = cfg
        # 'lambda x batch size' (feature_reduction batch_sum): the global batch, not the
        # per-process one, so the balance does not change with processes or accumulation.
        self.feature_scale = float(global_batch) if cfg.feature_reduction == 'batch_sum' else 1.0
        self.teacher = teacher
        self.logit_teacher = logit_teacher if logit_teacher is not None else teacher
        self.losses = nn.ModuleDict({
            'ce': LabelCE(label_smoothing),
            'soft': SoftTargetKD(cfg.soft.temperature, cfg.soft.normalize),
            'hard': HardTargetKD(),
            'l_in': FeatureMSE(self.feature_scale),
            'l_in_hidden': FeatureMSE(self.feature_scale),
            'l_out': FeatureMSE(self.feature_scale),
            'l_rel': RelationMSE(self.feature_scale),
        })
        used = [t for t in FEATURE_TERMS if getattr(cfg, t).weight != 0]
        self.feature_names = {t: [b + FEATURE_TERMS[t] for b in blocks] for t in used}
        names = sorted({n for ns in self.feature_names.values() for n in ns})
        self.student_rec = FeatureRecorder(student, names, 'student') if names else None
        self.teacher_rec = FeatureRecorder(teacher, names, 'teacher') if names else None

    def active_terms(self, epoch: int) -> List[str]:
        return [t for t in TERMS if getattr(self.cfg, t).active(epoch)]

    def forward(self, images, student_logits, targets, epoch: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        active = self.active_terms(epoch)
        teacher_logits = None
        if any(t in active for t in LOGIT_TERMS + tuple(FEATURE_TERMS)):
            with torch.inference_mode():
                teacher_logits = run_teacher(self.teacher, images) if self.teacher is not None else None
                if self.logit_teacher is not self.teacher:
                    teacher_logits = run_teacher(self.logit_teacher, images)
        student_feats = self._take(self.student_rec)
        teacher_feats = self._take(self.teacher_rec) if teacher_logits is not None else {}

        terms = {}
        for name in active:
            if name == 'ce':
                value = self.losses['ce'](student_logits, targets)
            elif name in LOGIT_TERMS:
                value = self.losses[name](student_logits, teacher_logits)
            else:
                keys = self.feature_names[name]
                value = self.losses[name]([student_feats[k] for k in keys], [teacher_feats[k] for k in keys])
            terms[name] = value
        total = sum(getattr(self.cfg, n).weight * v for n, v in terms.items())
        return total, terms

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

