#!/usr/bin/env python
"""Write an ImageNet-shaped folder of JPEGs: rehearsal data for timing and sizing a run, never
accuracy data (the pixels are noise; a class is its folder name only).

    python tools/imagenet_shaped.py /tmp/imagenet_shaped --train-images 4096 --val-images 1000
    python distill/train.py recipes/riformer_s12.yaml data.path=/tmp/imagenet_shaped ...

train/ and val/ hold one folder per class (n00000000 ...) of JPEGs whose sizes (around 500 x 375),
aspect ratios and qualities (75-95) spread like ImageNet's (the model: distill/imagenet_shaped.py).
The same arguments write the same bytes; a folder already written with them is left as it is.
"""
import sys
import time

from distill.cli import Parser, int_between, positive_int


def build_parser() -> Parser:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('out', help='the folder to write (new or empty; e.g. under /tmp, never committed)')
    p.add_argument('--train-images', type=positive_int, default=2000, help='images in train/ (default 2000)')
    p.add_argument('--val-images', type=positive_int, default=1000, help='images in val/ (default 1000)')
    p.add_argument('--classes', type=positive_int, default=1000,
                   help='class folders (default 1000, as ImageNet-1k); each split needs at least one image per class')
    p.add_argument('--seed', type=int_between(0, 2 ** 31 - 1), default=0, help='default 0')
    p.add_argument('--jobs', type=int_between(1, 256), default=1, help='processes writing images (default 1)')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from distill.imagenet_shaped import FolderSpec, ShapeError, write_folder
    spec = FolderSpec(args.train_images, args.val_images, args.classes, args.seed)
    start = time.perf_counter()
    try:
        manifest = write_folder(args.out, spec, args.jobs)
    except ShapeError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for split, s in manifest['stats'].items():
        print(f'{split}: {s["images"]} images in {args.classes} classes, mean {s["mean_width"]:.0f} x '
              f'{s["mean_height"]:.0f} px ({100 * s["share_500x375"]:.0f} % at 500 x 375), JPEG quality '
              f'{s["quality_range"][0]}-{s["quality_range"][1]}, mean {s["mean_kb"]:.0f} kB, {s["total_mb"]:.0f} MB')
    print(f'{args.out}: rehearsal data, never accuracy data ({time.perf_counter() - start:.1f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
