#!/usr/bin/env python
"""Fold a trained RIFormer into its deploy form, check it, and write the deploy checkpoint.

    python tools/reparam.py CKPT [-o OUT] [--arch riformer_s12] [--form deploy|plain]
    python tools/reparam.py DETECTOR.pt [-o OUT]      # every RIFormerBlock of a detector checkpoint

CKPT: the trainer's student checkpoint, a plain state dict (.pth/.pt/.safetensors) or an
mmpretrain RIFormer checkpoint (training form, or its plain deploy form, which gets the
remaining folds). The deploy model is compared with the training model on a random batch
(logits and every stage output) and written only when they agree within --tol
(`models.reparam_checkpoint` does the work).
DETECTOR.pt: an ultralytics, yolo9 or yolov5 checkpoint; its folded copy (DETECTOR.deploy.pt) keeps the
detector's layout with a rewritten model YAML (models.handoff.detector.reparameterize_detector).
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import CheckpointError, reparam_checkpoint  # noqa: E402
from models.handoff.detector import is_detector_checkpoint, reparameterize_detector  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='training checkpoint (.safetensors, .pth, .pt)')
    parser.add_argument('-o', '--output', help='deploy checkpoint path (default: CKPT.deploy.safetensors next to the input)')
    parser.add_argument('--arch', help='force a registered architecture (default: inferred from the tensors)')
    parser.add_argument('--form', default='deploy', choices=('deploy', 'plain'),
                        help='deploy: every fold (default); plain: affine into norm1 only, as mmpretrain')
    parser.add_argument('--tol', type=float, default=1e-5, help='max relative error allowed (default 1e-5)')
    parser.add_argument('--image-size', type=int,
                        help='check-batch resolution (default: from metadata, else 224; detectors: their training imgsz)')
    parser.add_argument('--batch-size', type=int, default=2, help='check-batch size (default 2)')
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        if is_detector_checkpoint(args.checkpoint):
            reparameterize_detector(args.checkpoint, args.output, args.tol, args.image_size, args.batch_size)
        else:
            reparam_checkpoint(args.checkpoint, args.output, args.arch, args.form, args.tol,
                               args.image_size, args.batch_size)
        print(f'  done in {time.perf_counter() - start:.1f}s')
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
