#!/usr/bin/env python
"""Input-pipeline throughput per worker core on an image folder: decode (Pillow vs
torchvision.io.decode_jpeg) and the recipe's train augmentation at its image size, and the
trainer's DataLoader settings next to timm's create_loader on the same transforms; prints a table
and how many worker cores one GPU needs at the imitation step's rate.

    python tools/imagenet_shaped.py /tmp/imagenet_shaped --train-images 2048
    python tools/loader_bench.py /tmp/imagenet_shaped --recipe recipes/riformer_s12.yaml

Per-image rows run in this process on one core (one torch thread); loader rows use one worker
process, so every images/s is one core's. The rows, the arithmetic and what the recipes took from
them: distill/loader_bench.py and docs/RESULTS.md.
"""
import json
import os
import sys
import time
from pathlib import Path

from distill.cli import Parser, positive_int

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / 'recipes' / 'riformer_s12.yaml'


def build_parser() -> Parser:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('folder', type=Path, help='an image folder with train/ class folders (tools/imagenet_shaped.py)')
    p.add_argument('--recipe', type=Path, default=DEFAULT_RECIPE,
                   help='whose data section gives the transforms (default recipes/riformer_s12.yaml)')
    p.add_argument('--images', type=positive_int, default=300, help='images per per-image row (default 300)')
    p.add_argument('--rounds', type=positive_int, default=5, help='turns of the per-image rows (default 5)')
    p.add_argument('--batch-size', type=positive_int, default=32, help='loader rows (default 32)')
    p.add_argument('--batches', type=positive_int, default=6, help='batches per epoch of a loader row (default 6)')
    p.add_argument('--epochs', type=positive_int, default=4, help='epochs of each loader row, taken in turns (default 4)')
    p.add_argument('--json', type=Path, help='also write the rows as JSON here')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from distill.config import RecipeError, load_recipe
    train = args.folder / 'train'
    if not train.is_dir() or not any(p.is_dir() for p in train.iterdir()):
        print(f'error: {args.folder}: no train/ folder of class folders; write one with tools/imagenet_shaped.py',
              file=sys.stderr)
        return 2
    for path in (args.json,):
        if path is not None and not path.parent.is_dir():
            print(f'error: {path}: folder {path.parent} does not exist', file=sys.stderr)
            return 2
    try:
        recipe = load_recipe(args.recipe, [f'data.path={args.folder}', 'data.source=folder'])
    except RecipeError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    import torch
    from distill import loader_bench
    from distill.benchmark.report import cpu_model   # imports torch: not at --help
    torch.set_num_threads(1)
    cfg = recipe.data
    files = loader_bench.folder_files(args.folder, cfg.train_split)
    needed = max(args.images, args.batch_size * args.batches)
    if len(files) < needed:
        print(f'error: {args.folder}/{cfg.train_split} has {len(files)} images, these rows need {needed}; '
              f'lower --images / --batches or write more', file=sys.stderr)
        return 2
    load = ' '.join(f'{v:.2f}' for v in os.getloadavg())
    print(f'machine: {cpu_model()}, {os.cpu_count()} CPUs, load average {load}; torch {torch.__version__}; '
          f'{args.recipe.name}: {cfg.image_size} px, auto_augment {cfg.auto_augment}, re_prob {cfg.re_prob} '
          f'({cfg.re_mode}), scale {cfg.scale}, hflip {cfg.hflip}', flush=True)
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print('note: the machine is busy; rates are lower than on an idle core, compare rows with each other')
    start = time.perf_counter()
    import tempfile
    with tempfile.TemporaryDirectory(prefix='loader_bench_arrow_') as arrow:     # the Arrow copy, removed after
        rows = loader_bench.per_image_rows(cfg, files[:args.images], args.rounds, Path(arrow))
    print(f'per-image rows done ({time.perf_counter() - start:.0f} s); loader rows ...', flush=True)
    rows += loader_bench.loader_rows(cfg, args.folder, args.batch_size, args.batches, args.epochs)
    print()
    print(loader_bench.table(rows))
    print()
    print('worker cores one GPU needs at the module-imitation step\'s rate (1,000-1,500 img/s per GPU):')
    print(loader_bench.arithmetic(rows))
    print(f'load average at end: {" ".join(f"{v:.2f}" for v in os.getloadavg())} '
          f'({time.perf_counter() - start:.0f} s)')
    if args.json:
        args.json.write_text(json.dumps({'command': 'python tools/loader_bench.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
                                         'machine': cpu_model(), 'rows': [{**r.__dict__, 'images_per_s': r.images_per_s,
                                                                          'steady_images_per_s': r.steady_images_per_s} for r in rows]},
                                        indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
