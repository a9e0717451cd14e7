#!/usr/bin/env python
"""Evaluate a checkpoint on the validation split of its recipe's data.

    python tools/evaluate.py CKPT [--recipe RECIPE.yaml] [--compare OTHER] [--json OUT]

CKPT: a deploy checkpoint (tools/reparam.py), a trainer student file (model.safetensors /
best.safetensors, RIFormer or any timm model), or a teacher file. The validation set is the one
of the recipe the checkpoint was trained with (stored in the trainer's files and carried into
deploy files); --recipe names another. With --compare, also reports how often the two
checkpoints predict the same class and their largest logit difference.
"""
import json
import sys
from pathlib import Path

from . import Parser, one_line_errors


def recipe_of(checkpoint, recipe_path=None):
    """The recipe to evaluate `checkpoint` with: `recipe_path`, else the one stored in the file."""
    from distill.config import load_recipe
    from models import UsageError
    from models.checkpoint_io import read_metadata, read_tensors
    if not Path(checkpoint).is_file():
        raise UsageError(f'{checkpoint}: no such checkpoint')
    if recipe_path:
        return load_recipe(recipe_path)
    stored = read_metadata(checkpoint).get('recipe')
    if not stored:
        read_tensors(checkpoint)      # a damaged file gets its own error, not 'holds no recipe'
        raise UsageError(f'{checkpoint} holds no recipe (files from distill/train.py have one, deploy files from tools/reparam.py carry it): '
                         f'pass --recipe RECIPE.yaml, the recipe whose data section defines the validation set')
    return stored_recipe(checkpoint, stored)


def stored_recipe(checkpoint, text: str):
    """The recipe stored in a checkpoint, checked like a recipe file (keys, types, ranges), and
    refused where it would reach the network: a file's recipe never downloads anything."""
    from distill.config import Recipe, RecipeError, build
    from models import UsageError
    try:
        raw = json.loads(text)
    except ValueError:
        raise UsageError(f'{checkpoint}: its stored recipe is not valid JSON (the file was edited or damaged); '
                         f'pass --recipe RECIPE.yaml') from None
    try:
        recipe = build(Recipe, raw, '').validate()
    except RecipeError as e:
        raise UsageError(f'{checkpoint}: its stored recipe does not validate ({e}); pass --recipe RECIPE.yaml') from None
    if recipe.data.source == 'hf_name':
        raise UsageError(f'{checkpoint}: its stored recipe names a Hugging Face Hub dataset ({recipe.data.path}), '
                         f'which would be downloaded; a recipe from a file never reaches the network: pass '
                         f'--recipe RECIPE.yaml to choose that data yourself')
    return recipe


@one_line_errors
def main(argv=None):
    parser = Parser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='the checkpoint to evaluate (.safetensors / .pth)')
    parser.add_argument('--recipe', help="recipe whose data section defines the validation set "
                                         "(default: the recipe stored in the checkpoint)")
    parser.add_argument('--compare', help='second checkpoint to compare predictions with')
    parser.add_argument('--batch-size', type=int, default=256, help='evaluation batch (default 256)')
    parser.add_argument('--json', help='also write the result as JSON here')
    args = parser.parse_args(argv)
    from distill.evaluation import evaluate_checkpoint
    result = evaluate_checkpoint(args.checkpoint, recipe_of(args.checkpoint, args.recipe), args.compare,
                                 args.batch_size)
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
