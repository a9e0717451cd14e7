"""A finished ablation run's student against the teacher: top-1, agreement and per-block CKA /
normalised MSE on the validation split (distill/similarity.py), RIFormers in deploy form."""
import json
import threading
from pathlib import Path

import torch

import models

from ..config import load_recipe
from ..data import build_datasets
from ..recorders import default_imitated_blocks
from ..similarity import collect, compare
from .config import AblationTeacher


class Evaluator:
    """Evaluates final students against the teacher; the teacher's pass is computed once."""

    def __init__(self, teacher: AblationTeacher):
        self.teacher = teacher
        self._teacher_cache = {}
        self._lock = threading.Lock()     # one evaluation at a time: they share the CPU

    def __call__(self, run_dir: Path) -> dict:
        cached = run_dir / 'ablation_metrics.json'
        model_file = run_dir / 'model.safetensors'
        if cached.is_file() and cached.stat().st_mtime >= model_file.stat().st_mtime:
            return json.loads(cached.read_text())
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
        key = (recipe.data.source, recipe.data.path, recipe.data.image_size, recipe.data.val_fraction, tuple(blocks))
        if key not in self._teacher_cache:
            teacher = models.create_teacher(self.teacher.arch, self.teacher.checkpoint)
            self._teacher_cache[key] = collect(teacher, loader, blocks, 'teacher')
        metrics = compare(collect(student, loader, blocks, 'student'), self._teacher_cache[key])
        metrics['eval'] = form
        metrics['blocks'] = blocks
        return metrics


def load_student(path: Path):
    """(model, how): the deploy form of a RIFormer checkpoint (written next to it when missing or
    stale), else the trained model."""
    if models.read_metadata(path).get('format') == models.checkpoint.FORMAT:
        deploy = path.with_name(path.name.replace('.safetensors', '.deploy.safetensors'))
        if not deploy.is_file() or deploy.stat().st_mtime < path.stat().st_mtime:
            try:
                models.reparam_checkpoint(path, deploy, log=lambda *a: None)
            except models.CheckpointError as e:
                return models.load_model(path), f'trained (reparam failed: {str(e)[:80]})'
        return models.load_deploy(deploy), 'deploy'
    return models.load_model(path).float(), 'trained'
