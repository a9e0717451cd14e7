#!/usr/bin/env python
"""How much a cheaper teacher forward changes the targets: logits and every recorded feature of
a teacher in bf16 (or fp32 through the fused path) against the same teacher in fp32 (timm's
reference forward), on the same images.

    python tools/teacher_targets.py --arch poolformer_s12 --batch 16 --img-size 224
    python tools/teacher_targets.py --arch poolformer_mini --checkpoint runs/digits/teacher/model.safetensors --digits

Features are those module imitation records at the default imitated blocks (the last block of
each stage): block outputs (L'_in, L_rel), token-mixer outputs (L_out) and norm1 outputs (L_in).
Errors: max |a - b| / max |b| and ||a - b|| / ||b|| over the batch.
"""
import copy
import sys

from distill.cli import Parser, one_line_errors, positive_int

# torch, timm and models are imported where they are used, after the arguments are parsed:
# --help and argument errors in a fraction of a second instead of the seconds torch takes.
PRECISIONS = ('fp32', 'bf16', 'auto')      # distill.teacher.PRECISIONS (a test checks)


def errors(got, want):
    diff = got.float() - want.float()
    return (diff.abs().max() / want.float().abs().max().clamp_min(1e-30)).item(), \
        (diff.norm() / want.float().norm().clamp_min(1e-30)).item()


def target_errors(teacher, images, precision='bf16', memory_format=None):
    """[(target name, max relative error, relative RMS error)] of `teacher` prepared in
    `precision` against a copy in fp32 through the reference forward; plus the share of images
    whose argmax agrees. `memory_format`: default channels_last."""
    import torch
    with torch.inference_mode():
        return _target_errors(teacher, images, precision, memory_format or torch.channels_last)


def _target_errors(teacher, images, precision, memory_format):
    import models
    from distill.recorders import FeatureRecorder, default_imitated_blocks
    from distill.teacher import prepare_teacher, run_teacher
    reference = prepare_teacher(copy.deepcopy(teacher), 'cpu', 'fp32', memory_format)
    for block in reference.modules():
        if isinstance(block, models.PoolFormerInferenceBlock):
            block.fused = False
    candidate = prepare_teacher(copy.deepcopy(teacher), 'cpu', precision, memory_format)
    names = [b + sub for b in default_imitated_blocks(reference) for sub in ('', '.token_mixer', '.norm1')]
    images = images.contiguous(memory_format=memory_format)
    with FeatureRecorder(reference, names) as rr, FeatureRecorder(candidate, names) as rc:
        want, got = run_teacher(reference, images), run_teacher(candidate, images)
        rows = [('logits', *errors(got, want))]
        rows += [(n, *errors(g, w)) for n, g, w in zip(names, rc.take(), rr.take())]
    agreement = 100. * got.argmax(1).eq(want.argmax(1)).float().mean().item()
    return rows, agreement


def digits_images(size: int, count: int):
    import torch
    from distill.data import DigitsDataset
    from torchvision import transforms
    ds = DigitsDataset('val', size)
    norm = transforms.Compose([transforms.ToTensor(),
                               transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return torch.stack([norm(ds.images[i]) for i in range(min(count, len(ds.images)))])


@one_line_errors
def main(argv=None) -> int:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--arch', default='poolformer_s12', help='timm PoolFormer name (default poolformer_s12)')
    p.add_argument('--checkpoint', help='teacher weights (any layout the trainer reads); default: timm init')
    p.add_argument('--precision', default='bf16', choices=PRECISIONS, help='the teacher compared with fp32')
    p.add_argument('--digits', action='store_true', help='digits validation images instead of random ones')
    p.add_argument('--batch', type=positive_int, default=16)
    p.add_argument('--img-size', type=positive_int, default=None, help='default 224 (32 with --digits)')
    p.add_argument('--threads', type=positive_int, default=None)
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    import torch
    import timm
    import models
    from distill.teacher import cpu_bf16_support
    from models import UsageError
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.img_size or (32 if args.digits else 224)
    if args.checkpoint:
        teacher = models.create_teacher(args.arch, args.checkpoint)
    elif args.arch in timm.list_models():
        torch.manual_seed(args.seed)
        teacher = timm.create_model(args.arch)
    else:
        raise UsageError(f'unknown teacher model {args.arch!r}; e.g. poolformer_s12, poolformer_mini')
    images = digits_images(size, args.batch) if args.digits else \
        torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    rows, agreement = target_errors(teacher, images, args.precision)
    source = args.checkpoint or 'timm init (untrained)'
    print(f'{args.arch} ({source}), {args.precision} vs fp32 reference, {len(images)} '
          f'{"digits validation" if args.digits else "random normal"} images at {size} px; '
          f'CPU bf16: {cpu_bf16_support() or "none (emulated)"}')
    width = max(len(r[0]) for r in rows)
    print(f'{"target".ljust(width)}  max rel error  rel RMS error')
    for name, max_rel, rms in rows:
        print(f'{name.ljust(width)}  {max_rel:13.2e}  {rms:13.2e}')
    print(f'same argmax as fp32: {agreement:.2f}% of images')
    return 0


if __name__ == '__main__':
    sys.exit(main())
