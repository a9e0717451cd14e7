#!/usr/bin/env python
"""Evaluate a checkpoint on the validation split of a recipe's data.

    python tools/evaluate.py CKPT --recipe recipes/digits/imitation.yaml [--compare OTHER] [--json OUT]

CKPT: a deploy checkpoint (tools/reparam.py), a trainer student file (model.safetensors /
best.safetensors, RIFormer or any timm model), or a teacher file. With --compare, also reports
how often the two checkpoints predict the same class and their largest logit difference.
"""
import argparse
import json
import sys
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from distill.config import RecipeError, load_recipe  # noqa: E402
from distill.data import build_datasets  # noqa: E402
from models import CheckpointError  # noqa: E402


def load_for_eval(path) -> torch.nn.Module:
    """The model a checkpoint holds, in eval mode, whatever its kind."""
    tensors, metadata = models.read_tensors(path)
    if metadata.get('format') == 'timm':
        model = timm.create_model(metadata['arch'], num_classes=int(metadata['num_classes']))
        models.load_checked(model, tensors, what=f'checkpoint {path}')
        return model.eval()
    return models.build_model(models.read_checkpoint(path))


@torch.no_grad()
def predict(model, loader):
    logits, targets = [], []
    for images, labels in loader:
        logits.append(model(images).float())
        targets.append(labels)
    return torch.cat(logits), torch.cat(targets)


def accuracy(logits, targets, k=1):
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return 100. * float(top.eq(targets[:, None]).any(dim=1).float().mean())


def evaluate_checkpoint(path, recipe, compare=None, batch_size=256):
    _, val_set, _ = build_datasets(recipe.data, recipe.train.seed)
    loader = DataLoader(val_set, batch_size=batch_size)
    logits, targets = predict(load_for_eval(path), loader)
    result = {'checkpoint': str(path), 'images': len(targets),
              'top1': accuracy(logits, targets, 1), 'top5': accuracy(logits, targets, 5)}
    if compare:
        other, _ = predict(load_for_eval(compare), loader)
        result.update({
            'compare': str(compare),
            'compare_top1': accuracy(other, targets, 1),
            'agreement': 100. * float(logits.argmax(1).eq(other.argmax(1)).float().mean()),
            'max_logit_diff': float((logits - other).abs().max()),
            'max_rel_logit_diff': models.relative_error(other, logits),
        })
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--recipe', required=True, help='recipe whose data section defines the validation set')
    parser.add_argument('--compare', help='second checkpoint to compare predictions with')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--json', help='also write the result as JSON here')
    args = parser.parse_args(argv)
    try:
        result = evaluate_checkpoint(args.checkpoint, load_recipe(args.recipe), args.compare, args.batch_size)
    except (CheckpointError, RecipeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    line = f'{result["checkpoint"]}: top-1 {result["top1"]:.2f}  top-5 {result["top5"]:.2f}  ({result["images"]} images)'
    if args.compare:
        line += (f'\n  vs {result["compare"]}: top-1 {result["compare_top1"]:.2f}, same prediction on '
                 f'{result["agreement"]:.2f}%, max logit difference {result["max_logit_diff"]:.2e}')
    print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
