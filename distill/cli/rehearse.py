#!/usr/bin/env python
"""Rehearse a paper recipe on an ImageNet-shaped folder: three sessions of the trainer through
accelerate (uninterrupted; killed after its first checkpoint; resumed), reporting the step time
split into waiting for data and computing, peak RSS per process, checkpoint size and write time,
and whether the resumed run ends bit-identical to the uninterrupted one.

    python tools/rehearse.py recipes/riformer_s12.yaml --batch 8 --steps 8 --workers 1
    python tools/rehearse.py recipes/riformer_m48.yaml --memory      # peak RSS per process at the recipe's batch

The recipe runs as it is except data.path and the epoch length (data.max_train_images,
data.max_val_images), the output folder, a teacher checkpoint of random weights (timm's pretrained
ones need the network), and what --batch / --workers set; the report lists every override. The
folder (--data) is written first if it is not there (tools/imagenet_shaped.py; rehearsal data,
never accuracy data). --memory instead runs the recipe's training step in fresh processes at two
batch sizes, fp32 and bf16, and extrapolates the peak RSS of one process to the recipe's batch.
"""
import json
import sys
from pathlib import Path

from distill.cli import Parser, positive_int


def build_parser() -> Parser:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('recipe', type=Path, help='a paper recipe, e.g. recipes/riformer_s12.yaml')
    p.add_argument('--data', type=Path, default=Path('/tmp/imagenet_shaped'),
                   help='the ImageNet-shaped folder (default /tmp/imagenet_shaped; written if missing)')
    p.add_argument('--work', type=Path, default=None,
                   help='where the runs go (default /tmp/rehearsal/RECIPE_NAME; must not hold a run)')
    p.add_argument('--batch', type=positive_int, default=None,
                   help="per-process batch (default: the recipe's; lower it where this machine cannot compute it)")
    p.add_argument('--steps', type=positive_int, default=8, help='steps per epoch (default 8)')
    p.add_argument('--epochs', type=positive_int, default=2, help='epochs per run (default 2; at least 2)')
    p.add_argument('--processes', type=positive_int, default=2, help='training processes (default 2)')
    p.add_argument('--workers', type=int, default=None, help="loader workers per process (default: the recipe's)")
    p.add_argument('--val-images', type=positive_int, default=64, help='validation images (default 64)')
    p.add_argument('--kill-delay', type=float, default=2.0,
                   help='seconds after the first checkpoint is published before the kill (default 2)')
    p.add_argument('--memory', action='store_true',
                   help='measure peak RSS per process at two batch sizes instead, and extrapolate')
    p.add_argument('--memory-batches', default='2,4', help='with --memory: two batch sizes (default 2,4)')
    p.add_argument('--json', type=Path, help='also write the report as JSON here')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from distill.config import RecipeError, load_recipe
    try:
        recipe = load_recipe(args.recipe, [f'data.path={args.data}'])
    except RecipeError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    if args.json is not None and not args.json.parent.is_dir():
        print(f'error: {args.json}: folder {args.json.parent} does not exist', file=sys.stderr)
        return 2
    if args.memory:
        return memory(args, recipe)
    if recipe.data.source != 'folder' or recipe.teacher is None:
        print(f'error: {args.recipe}: a rehearsal needs a recipe with an image folder and a teacher '
              f'(a paper recipe, e.g. recipes/riformer_s12.yaml)', file=sys.stderr)
        return 2
    if args.epochs < 2:
        print('error: --epochs must be at least 2 (the kill comes after the first checkpoint)', file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 0:
        print('error: --workers must be 0 or more', file=sys.stderr)
        return 2
    work = args.work or Path('/tmp/rehearsal') / args.recipe.stem
    if any((work / run).exists() for run in ('a', 'b')):
        print(f'error: {work} holds runs of an earlier rehearsal; remove it or give --work', file=sys.stderr)
        return 2
    batch = args.batch or recipe.train.batch_size
    from distill.imagenet_shaped import FolderSpec, ShapeError, existing_spec, write_folder
    needed = batch * args.processes * args.steps
    spec = existing_spec(args.data)
    if spec is None:
        print(f'writing the ImageNet-shaped folder {args.data} (rehearsal data, never accuracy data) ...', flush=True)
        try:
            spec = FolderSpec(train_images=max(needed, 1000), val_images=max(args.val_images, 1000))
            write_folder(args.data, spec)
        except ShapeError as e:
            print(f'error: {e}', file=sys.stderr)
            return 2
    if spec.train_images < needed or spec.val_images < args.val_images:
        print(f'error: {args.data} has {spec.train_images} train / {spec.val_images} val images; this rehearsal '
              f'needs {needed} / {args.val_images}: write a larger folder elsewhere with tools/imagenet_shaped.py',
              file=sys.stderr)
        return 2
    from distill.rehearsal import rehearse, report_table
    report = rehearse(args.recipe, args.data, work, batch, args.steps, args.processes, args.workers,
                      args.val_images, args.epochs, args.kill_delay)
    print()
    print(report_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if 'error' not in report and report['resume']['exact'] else 1


def memory(args, recipe) -> int:
    from distill.cli import int_list
    try:
        small, large = int_list(args.memory_batches)
    except Exception:
        print(f'error: --memory-batches {args.memory_batches!r}: give two batch sizes, e.g. 2,4', file=sys.stderr)
        return 2
    from distill.rehearsal import memory_fit, probe_in_child
    rows = []
    print('| precision (student) | teacher | batch | peak RSS GiB | s per step | fixed GiB | GiB per image | '
          f'predicted at batch {recipe.train.batch_size} |')
    print('|---|---|---:|---:|---:|---:|---:|---:|')
    for precision in ('fp32', 'bf16'):
        probes = [probe_in_child(str(args.recipe), b, precision) for b in (small, large)]
        rows += probes
        if any('error' in p for p in probes):
            for p in probes:
                print(f'| {precision} | - | {p["batch"]} | {p.get("error", "")} | | | | |')
            continue
        fit = memory_fit(probes[0], probes[1], recipe.train.batch_size)
        rows.append({'precision': precision, **fit})
        for p in probes:
            print(f'| {precision} | {p["teacher_dtype"]} | {p["batch"]} | {p["peak_gib"]:.2f} | {p["step_s"]:.1f} | '
                  f'{fit["fixed_gib"]:.2f} | {fit["per_image_gib"]:.3f} | {fit["predicted_gib"]:.1f} |', flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
