#!/usr/bin/env python
"""The loss balance of a recipe at its real shapes, without its data or downloaded weights.

    python tools/balance.py recipes/riformer_s12.yaml --processes 8        # S12, 224 px, 1000 classes, global batch 1024
    python tools/balance.py recipes/riformer_s12.yaml --processes 8 --readings   # every candidate reading of Table 10
    python tools/balance.py recipes/clutter/imitation.yaml distill.l_rel.reduction=mean

A proxy: the recipe's student and teacher architectures at its image size and class count, the
teacher with random non-trivial weights (layer scales around 0.5, norm weights 1 +- 0.3, logits
of std about 3) and the student initialised from it as the recipe says, on synthetic images
with a natural images' 1/f spectrum; the reading factors use the recipe's global batch
(train.batch_size x --processes x optim.grad_accum). For the balance on the real data and
teacher, run `distill/train.py RECIPE --check`. Shares are of the gradient norm on the
student's backbone (distill/balance.py); the proxy itself is distill/balance_proxy.py.
"""
import sys

from distill.balance_proxy import measure_windows

from . import Parser, int_between, one_line_errors


def readings_table(path, overrides, classes, processes, batch) -> str:
    """One line per (reading, window): each term's gradient share."""
    from distill import balance
    from distill.config import load_recipe
    lines = [f'{"reading":<16} {"epochs":<10} ' + ' '.join(f'{"grad % " + t:>16}' for t in ('soft', 'l_in_hidden', 'l_out', 'l_rel'))]
    for name, reading_overrides in balance.READINGS.items():
        recipe = load_recipe(path, [*overrides, *reading_overrides])
        for epoch, rows in measure_windows(recipe, classes, processes, batch):
            shares = {r.term: f'{100 * r.grad_share:.2f}' for r in rows}
            lines.append(f'{name:<16} {window(recipe, epoch):<10} '
                         + ' '.join(f'{shares.get(t, "-"):>16}' for t in ('soft', 'l_in_hidden', 'l_out', 'l_rel')))
    return '\n'.join(lines)


def window(recipe, epoch) -> str:
    from distill.terms import TERMS
    active = [t for t in TERMS if getattr(recipe.distill, t).active(epoch)]
    end = next((e for e in range(epoch + 1, recipe.train.epochs)
                if [t for t in TERMS if getattr(recipe.distill, t).active(e)] != active), recipe.train.epochs)
    return f'{epoch + 1}-{end}'


@one_line_errors
def main(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('recipe', help='the recipe whose loss balance to print (e.g. recipes/riformer_s12.yaml)')
    p.add_argument('overrides', nargs='*', help='key.sub=value, as for distill/train.py')
    p.add_argument('--processes', type=int_between(1, 65536), default=1,
                   help='processes the recipe runs on (its global batch: batch_size x processes x grad_accum)')
    p.add_argument('--classes', type=int_between(1, 100_000), help='class count (default: the embedded data\'s, else 1000)')
    p.add_argument('--batch', type=int_between(1, 4096), default=4, help='images in the measured batch (default 4)')
    p.add_argument('--readings', action='store_true', help='every candidate reading of Table 10, one line each')
    args = p.parse_args(argv)
    from models import UsageError
    from distill import balance
    from distill.config import EMBEDDED_SOURCES, load_recipe
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.teacher is None and recipe.logit_teacher is None:
        raise UsageError(f'{args.recipe}: no teacher, so no distillation terms to balance')
    classes = args.classes or (10 if recipe.data.source in EMBEDDED_SOURCES else 1000)
    global_batch = recipe.train.batch_size * args.processes * recipe.optim.grad_accum
    print(f'proxy: {recipe.student.arch} student, {recipe.teacher.arch if recipe.teacher else "-"} teacher with random '
          f'non-trivial weights, {classes} classes, {recipe.data.image_size} px 1/f-noise images (batch {args.batch}), '
          f'global batch {global_batch}')
    if args.readings:
        print(readings_table(args.recipe, args.overrides, classes, args.processes, args.batch))
        return 0
    for epoch, rows in measure_windows(recipe, classes, args.processes, args.batch):
        print(balance.table(rows, f'loss balance, epochs {window(recipe, epoch)}'))
        for line in balance.warnings(rows, global_batch, epoch):
            print(line, file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
