#!/usr/bin/env python
"""Fold a trained RIFormer into its deploy form, check it, and write the deploy checkpoint.

    python tools/reparam.py CKPT [-o OUT] [--arch riformer_s12] [--form deploy|plain]

CKPT: the trainer's student checkpoint, a plain state dict (.pth/.pt/.safetensors) or an
mmpretrain RIFormer checkpoint (training form, or its plain deploy form, which gets the
remaining folds). The deploy model is compared with the training model on a random batch
(logits and every stage output) and written only when they agree within --tol.
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from models import CheckpointError  # noqa: E402


def default_output(path: Path, form: str) -> Path:
    stem = path.name
    for suffix in ('.safetensors', '.pth', '.pt', '.bin', '.ckpt'):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    return path.with_name(f'{stem}.{form}.safetensors')


def reparam_checkpoint(src, out=None, arch=None, form='deploy', tol=1e-5, image_size=None,
                       batch_size=2, seed=0, log=print) -> dict:
    src = Path(src)
    ckpt = models.read_checkpoint(src)
    start_form = ckpt.config.form
    if start_form == 'deploy':
        raise CheckpointError(f'{src}: already in deploy form; nothing to fold (load it with models.load_deploy)')
    if start_form == form:
        raise CheckpointError(f'{src}: already in {form} form; ask for --form deploy to fold the rest')
    reference = models.build_model(ckpt, arch=arch)
    deployed = models.reparameterize(copy.deepcopy(reference), form)

    size = image_size or int(ckpt.metadata.get('image_size', 224))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, reference.in_chans, size, size, generator=generator)
    errors = models.compare_forms(reference, deployed, x)
    worst = max(errors.values(), key=lambda e: float('inf') if e != e else e)
    if not worst <= tol:   # also catches NaN
        raise CheckpointError(
            f'equivalence check failed: max relative error {worst:.3g} > tol {tol:g} '
            f'({", ".join(f"{k} {v:.3g}" for k, v in errors.items())}); deploy file not written')

    out = Path(out) if out else default_output(src, form)
    if out.resolve() == src.resolve():
        raise CheckpointError(f'{out}: output would overwrite the input; pass another -o')
    folds = [f for f in models.FOLDS[form] if not (start_form == 'plain' and f == 'affine->norm1')]
    models.save_model(out, deployed, extra={
        'folds': ','.join(folds), 'max_rel_error': f'{worst:.3e}', 'errors': json.dumps(errors),
        'source': f'{src.name} ({ckpt.source} layout, {start_form} form)', 'image_size': str(size),
    })
    config = ckpt.config
    log(f'{src} -> {out}')
    log(f'  arch {arch or config.arch} depths {list(config.depths)} dims {list(config.dims)} '
        f'classes {config.num_classes} head {"norm-first" if config.head_norm_first else "pool-first"}')
    log(f'  source: {ckpt.source} layout, {start_form} form'
        + (f'; ignored {len(ckpt.ignored)} keys ({", ".join(ckpt.ignored[:3])})' if ckpt.ignored else ''))
    log(f'  folds: {", ".join(folds)}')
    log(f'  check on {batch_size}x{reference.in_chans}x{size}x{size}: max relative error {worst:.2e} '
        f'(tol {tol:g}; ' + ', '.join(f'{k} {v:.1e}' for k, v in errors.items()) + ')')
    return {'output': str(out), 'errors': errors, 'max_rel_error': worst, 'folds': folds}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('checkpoint', help='training checkpoint (.safetensors, .pth, .pt)')
    parser.add_argument('-o', '--output', help='deploy checkpoint path (default: CKPT.deploy.safetensors next to the input)')
    parser.add_argument('--arch', help='force a registered architecture (default: inferred from the tensors)')
    parser.add_argument('--form', default='deploy', choices=('deploy', 'plain'),
                        help='deploy: every fold (default); plain: affine into norm1 only, as mmpretrain')
    parser.add_argument('--tol', type=float, default=1e-5, help='max relative error allowed (default 1e-5)')
    parser.add_argument('--image-size', type=int, help='check-batch resolution (default: from metadata, else 224)')
    parser.add_argument('--batch-size', type=int, default=2, help='check-batch size (default 2)')
    args = parser.parse_args(argv)
    try:
        start = time.perf_counter()
        reparam_checkpoint(args.checkpoint, args.output, args.arch, args.form, args.tol,
                           args.image_size, args.batch_size)
        print(f'  done in {time.perf_counter() - start:.1f}s')
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
