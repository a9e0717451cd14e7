#!/usr/bin/env python
"""Evaluate a checkpoint on the validation split of a recipe's data.

    python tools/evaluate.py CKPT --recipe recipes/digits/imitation.yaml [--compare OTHER] [--json OUT]

CKPT: a deploy checkpoint (tools/reparam.py), a trainer student file (model.safetensors /
best.safetensors, RIFormer or any timm model), or a teacher file. With --compare, also reports
how often the two checkpoints predict the same class and their largest logit difference.
"""
import json
import sys
from pathlib import Path

from distill.config import load_recipe
from distill.evaluation import evaluate_checkpoint

from . import Parser, one_line_errors


@one_line_errors
def main(argv=None):
    parser = Parser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint')
    parser.add_argument('--recipe', required=True, help='recipe whose data section defines the validation set')
    parser.add_argument('--compare', help='second checkpoint to compare predictions with')
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--json', help='also write the result as JSON here')
    args = parser.parse_args(argv)
    result = evaluate_checkpoint(args.checkpoint, load_recipe(args.recipe), args.compare, args.batch_size)
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
