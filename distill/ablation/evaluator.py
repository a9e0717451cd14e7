"""A finished ablation run's student against the teacher: top-1, agreement and per-block CKA /
normalised MSE on the validation split (distill/similarity.py), RIFormers in deploy form; with an
`erf` section, the effective receptive field of student and teacher (distill/erf.py)."""
import json
import os
import threading
from pathlib import Path
from typing import Optional

import torch

import models

from ..config import load_recipe
from ..data import build_datasets
from ..erf import effective_receptive_field
from ..integrity import is_regular_file, read_json
from ..recorders import default_imitated_blocks
from ..similarity import collect, compare
from .config import AblationTeacher, ERFConfig


class Evaluator:
    """Evaluates final students against the teacher; the teacher's pass is computed once."""

    def __init__(self, teacher: AblationTeacher, erf: Optional[ERFConfig] = None):
        self.teacher = teacher
        self.erf = erf
        self._teacher_cache = {}
        self._lock = threading.Lock()     # one evaluation at a time: they share the CPU

    def __call__(self, run_dir: Path) -> dict:
        cached = run_dir / 'ablation_metrics.json'
        model_file = run_dir / 'model.safetensors'
        # not a regular file (a link, a FIFO): read_json says so in one line, nothing is opened
        if os.path.lexists(cached) and (not is_regular_file(cached)
                                        or cached.stat().st_mtime >= model_file.stat().st_mtime):
            metrics = read_json(cached)
            if self.erf is None or metrics.get('erf_block') == self.erf.block:
                return metrics
        with self._lock:
            metrics = self._evaluate(run_dir)
        cached.write_text(json.dumps(metrics, indent=2))
        return metrics

    def _evaluate(self, run_dir: Path) -> dict:
        recipe = load_recipe(run_dir / 'recipe.yaml')
        student, form = load_student(run_dir / 'model.safetensors')
        _, val_set, _ = build_datasets(recipe.data, recipe.train.seed, recipe.student.arch)
        loader = torch.utils.data.DataLoader(val_set, batch_size=128)
        blocks = default_imitated_blocks(student) if hasattr(student, 'stages') else []
        # The run's own teacher (one of teacher.seeds); a run without one is compared with the first.
        checkpoint = recipe.teacher.checkpoint if recipe.teacher is not None else self.teacher.checkpoints()[0][1]
        key = (recipe.data.source, recipe.data.path, recipe.data.image_size, recipe.data.val_fraction,
               recipe.data.split_seed, tuple(blocks), checkpoint)
        if key not in self._teacher_cache:
            teacher = models.create_teacher(self.teacher.arch, checkpoint)
            self._teacher_cache[key] = (collect(teacher, loader, blocks, 'teacher'), self._erf(teacher, val_set))
        teacher_collected, teacher_erf = self._teacher_cache[key]
        metrics = compare(collect(student, loader, blocks, 'student'), teacher_collected)
        metrics['eval'] = form
        metrics['blocks'] = blocks
        if self.erf is not None:
            erf = self._erf(student, val_set)
            metrics.update(erf_block=self.erf.block, erf_rms_radius=erf.rms_radius, erf_area50=erf.area50,
                           erf_map=erf.map.tolist(), teacher_erf_rms_radius=teacher_erf.rms_radius,
                           teacher_erf_area50=teacher_erf.area50, teacher_erf_map=teacher_erf.map.tolist())
        return metrics

    def _erf(self, model, val_set):
        if self.erf is None:
            return None
        images = torch.stack([val_set[i][0] for i in range(min(self.erf.images, len(val_set)))])
        return effective_receptive_field(model, images, self.erf.block)


def load_student(path: Path):
    """(model, how): the deploy form of a RIFormer checkpoint (written next to it when missing or
    stale), else the trained model."""
    if models.read_metadata(path).get('format') == models.checkpoint_io.FORMAT:
        deploy = path.with_name(path.name.replace('.safetensors', '.deploy.safetensors'))
        if not deploy.is_file() or deploy.stat().st_mtime < path.stat().st_mtime:
            try:
                models.reparam_checkpoint(path, deploy, log=lambda *a: None)
            except models.CheckpointError as e:
                return models.load_model(path), f'trained (reparam failed: {str(e)[:80]})'
        return models.load_deploy(deploy), 'deploy'
    return models.load_model(path).float(), 'trained'
