#!/usr/bin/env python
"""Fold a trained RIFormer into its deploy form, check it, and write the deploy checkpoint.

    python tools/reparam.py CKPT [-o OUT] [--arch riformer_s12] [--form deploy|plain]
    python tools/reparam.py --pretrained riformer_s12     # the official weights (mmpretrain's, via timm)
    python tools/reparam.py --random riformer_s12         # random weights, for smoke tests of a hand-off
    python tools/reparam.py DETECTOR.pt [-o OUT]      # every RIFormerBlock of a detector checkpoint

CKPT: the trainer's student checkpoint, a plain state dict (.pth/.pt/.safetensors) or an
mmpretrain RIFormer checkpoint (training form, or its plain deploy form, which gets the
remaining folds). The deploy model is compared with the training model on a random batch
(logits and every stage output, and each block's two residual branches against their own
size, which sees a wrong fold in a block near identity) and written only when all agree within
--tol (`models.reparam_checkpoint` does the work).
DETECTOR.pt: an ultralytics, yolo9 or yolov5 checkpoint; its folded copy (DETECTOR.deploy.pt) keeps the
detector's layout with a rewritten model YAML, after the same two checks: every output tensor, and
each folded block's residual branches (models.handoff.detector.reparameterize_detector).
"""
import sys
import tempfile
import time
from pathlib import Path

from . import Parser, one_line_errors

# models (torch, timm) is imported after the arguments are parsed: --help and argument errors in
# a fraction of a second instead of the seconds torch takes.


def reparam_timm_model(args):
    """--pretrained / --random: build the training-form model with timm, then fold it like a file
    (same check, same metadata) through a temporary training checkpoint."""
    import models
    from models import CheckpointError, UsageError, reparam_checkpoint
    from models.checkpoint_io import create_pretrained
    from models.pretrained import unavailable_reason
    name = args.pretrained or args.random
    arch = name.split('.')[0]
    if arch not in models.ARCHS:
        raise UsageError(f'{name}: not a RIFormer; choose one of {", ".join(models.ARCHS)}')
    import timm
    if args.pretrained:
        why = unavailable_reason(name)
        if why:
            raise CheckpointError(f'{name}: {why}; download that file where there is network and pass it '
                                  f'instead (python tools/reparam.py FILE -o {arch}.deploy.safetensors)')
        try:
            model = create_pretrained(name)     # the cached file read by our reader, not timm's
        except OSError as e:     # no network and nothing in the torch hub cache
            raise CheckpointError(f'{name}: could not download the official weights ({type(e).__name__}); on a '
                                  f'machine without network, download the URL that timm.get_pretrained_cfg('
                                  f'{name!r}).url names and pass the file instead') from None
    else:
        model = timm.create_model(arch)
    output = args.output or f'{arch}.{args.form}.safetensors'
    with tempfile.TemporaryDirectory() as tmp:
        trained = Path(tmp) / f'{name}.safetensors'
        models.save_model(trained, model, {'image_size': str(model.pretrained_cfg['input_size'][-1])})
        label = f'{name} ({"timm pretrained weights" if args.pretrained else "random init"})'
        reparam_checkpoint(trained, output, None, args.form, args.tol, args.image_size, args.batch_size,
                           log=lambda line: print(line.replace(str(trained), label)))


@one_line_errors
def main(argv=None):
    parser = Parser(description=__doc__.split('\n\n')[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('checkpoint', nargs='?', help='training checkpoint (.safetensors, .pth, .pt)')
    source.add_argument('--pretrained', metavar='NAME',
                        help="timm's pretrained RIFormer weights instead of a file: riformer_s12 (mmpretrain's "
                             "ImageNet weights, downloaded once into the torch hub cache) or a tag such as "
                             "riformer_s12.mmpretrain_in1k_384")
    source.add_argument('--random', metavar='ARCH',
                        help='a randomly initialised ARCH (e.g. riformer_s12) instead of a file: a deploy '
                             'checkpoint for smoke tests of a detector hand-off, no training, no download')
    parser.add_argument('-o', '--output', help='deploy checkpoint path (default: CKPT.deploy.safetensors next to the '
                                               'input; ARCH.deploy.safetensors here for --pretrained / --random)')
    parser.add_argument('--arch', help='force a registered architecture (default: inferred from the tensors)')
    parser.add_argument('--form', default='deploy', choices=('deploy', 'plain'),
                        help='deploy: every fold (default); plain: affine into norm1 only, as mmpretrain')
    parser.add_argument('--tol', type=float, default=1e-5,
                        help="max relative error allowed, of the outputs and of each block's residual branches "
                             'against their own size (default 1e-5)')
    parser.add_argument('--image-size', type=int,
                        help='check-batch resolution (default: from metadata, else 224; detectors: their training imgsz)')
    parser.add_argument('--batch-size', type=int, default=2, help='check-batch size (default 2)')
    args = parser.parse_args(argv)
    from models import reparam_checkpoint
    from models.handoff.detector import is_detector_checkpoint, reparameterize_detector
    start = time.perf_counter()
    if args.checkpoint is None:
        reparam_timm_model(args)
    elif is_detector_checkpoint(args.checkpoint):
        reparameterize_detector(args.checkpoint, args.output, args.tol, args.image_size, args.batch_size)
    else:
        reparam_checkpoint(args.checkpoint, args.output, args.arch, args.form, args.tol,
                           args.image_size, args.batch_size)
    print(f'  done in {time.perf_counter() - start:.1f}s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
