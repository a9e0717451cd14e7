"""A checkpoint's accuracy on a recipe's validation split, optionally next to a second
checkpoint's predictions (tools/evaluate.py and tools/pipeline.py)."""
from torch.utils.data import DataLoader

import models

from .config import Recipe
from .data import build_datasets
from .metrics import accuracy, agreement
from .similarity import collect


def evaluate_checkpoint(path, recipe: Recipe, compare=None, batch_size: int = 256) -> dict:
    """Top-1 / top-5 of the model in `path` (any kind `models.load_model` opens) on the
    recipe's validation split. With `compare`, also that checkpoint's top-1, the share of
    images both predict alike (`agreement`, %) and the largest absolute / relative logit
    difference."""
    _, val_set, _ = build_datasets(recipe.data, recipe.train.seed, recipe.student.arch)
    loader = DataLoader(val_set, batch_size=batch_size)
    ours = collect(models.load_model(path), loader, [])
    logits, targets = ours.logits, ours.targets
    result = {'checkpoint': str(path), 'images': len(targets),
              'top1': accuracy(logits, targets, 1), 'top5': accuracy(logits, targets, 5)}
    if compare:
        other = collect(models.load_model(compare), loader, []).logits
        result.update({
            'compare': str(compare),
            'compare_top1': accuracy(other, targets, 1),
            'agreement': agreement(logits, other),
            'max_logit_diff': float((logits - other).abs().max()),
            'max_rel_logit_diff': models.relative_error(other, logits),
        })
    return result
