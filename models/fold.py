"""Folding (reparameterization) of a model and of a checkpoint file into the deploy form, and
the equivalence check that guards every deploy file. tools/reparam.py is its command."""
import copy
import json
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn

from .checkpoint_io import build_model, read_checkpoint, save_model
from .errors import CheckpointError
from .riformer import RIFormerBlock

# The folds each target form applies, in the words written into deploy metadata.
FOLDS = {
    'plain': ['affine->norm1'],
    'deploy': ['affine->norm1', 'layer_scale1->norm1', 'norm2->mlp.fc1', 'layer_scale2->mlp.fc2'],
}


def reparameterize(model: nn.Module, form: str = 'deploy', inplace: bool = True) -> nn.Module:
    """Fold every RIFormer block of `model` into `form` (timm's `reparameterize_model` shape).
    Repeating the call, or calling it on a model already in that form, changes nothing.

    Args:
        model: a RIFormer, or any model holding RIFormer blocks (a detector's backbone and neck).
        form: 'deploy' (every fold) or 'plain' (affine into norm1 only, as mmpretrain).
        inplace: fold `model` itself (default, as this project has always done; timm's default
            is a copy) or, with False, a deep copy, leaving `model` untouched.

    Returns:
        The folded model: `model` itself, or the copy.

    Raises:
        ValueError: `model` has no RIFormer blocks.

    Example:
        >>> import timm, models
        >>> train = timm.create_model('riformer_mini').eval()
        >>> deploy = models.reparameterize(train, inplace=False)
        >>> train.form, deploy.form
        ('train', 'deploy')
    """
    blocks = [m for m in model.modules() if isinstance(m, RIFormerBlock)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no RIFormer blocks to reparameterize')
    if not inplace:
        model = copy.deepcopy(model)
        blocks = [m for m in model.modules() if isinstance(m, RIFormerBlock)]
    for block in blocks:
        block.reparameterize(form)
    return model


def relative_error(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """max |a - b| / max |a|: an error relative to the output's scale (elementwise relative
    error is meaningless where outputs cross zero). NaN anywhere gives NaN.

    Args:
        reference: the trusted tensor (a).
        candidate: the tensor checked against it (b), same shape.

    Returns:
        The error as a Python float (computed in float64).

    Example:
        >>> import torch
        >>> relative_error(torch.tensor([2., -4.]), torch.tensor([2., -3.]))
        0.25
    """
    reference, candidate = reference.detach().double(), candidate.detach().double()
    diff = (reference - candidate).abs().max()
    scale = reference.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return float(diff / scale)


@torch.no_grad()
def compare_forms(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> Dict[str, float]:
    """Relative error of `candidate` against `reference` for the logits (when the models have a
    classifier) and for every stage output.

    Args:
        reference, candidate: RIFormers (any forms) with the same architecture, in eval mode.
        x: the input batch.

    Returns:
        {'stage0': error, ..., 'logits': error} (`relative_error` of each output).

    Example:
        >>> import timm, torch, models
        >>> m = timm.create_model('riformer_mini').eval()
        >>> errors = compare_forms(m, models.reparameterize(m, inplace=False), torch.randn(1, 3, 32, 32))
        >>> max(errors.values()) < 1e-5
        True
    """
    ref_final, ref_stages = reference.forward_intermediates(x)
    cand_final, cand_stages = candidate.forward_intermediates(x)
    errors = {f'stage{i}': relative_error(a, b) for i, (a, b) in enumerate(zip(ref_stages, cand_stages))}
    if reference.num_classes > 0:
        errors['logits'] = relative_error(reference.forward_head(ref_final), candidate.forward_head(cand_final))
    return errors


def default_output(path: Path, form: str) -> Path:
    """CKPT.pth -> CKPT.FORM.safetensors, next to the input."""
    stem = path.name
    for suffix in ('.safetensors', '.pth', '.pt', '.bin', '.ckpt'):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    return path.with_name(f'{stem}.{form}.safetensors')


def reparam_checkpoint(src, out=None, arch: Optional[str] = None, form: str = 'deploy', tol: float = 1e-5,
                       image_size: Optional[int] = None, batch_size: int = 2, seed: int = 0, log=print) -> dict:
    """Fold a RIFormer checkpoint file into `form`, check it, and write the result.

    The folded model is compared with the training model on a random batch (logits and every
    stage output) and written only when they agree within `tol` (tools/reparam.py is its CLI).

    Args:
        src: the trainer's student file, a plain state dict or an mmpretrain RIFormer checkpoint
            (training form, or its plain form, which gets the remaining folds).
        out: the output path (default: `default_output(src, form)`).
        arch: force a registered architecture (default: inferred from the tensors).
        form: 'deploy' (every fold) or 'plain' (affine into norm1 only, as mmpretrain).
        tol: the largest relative error allowed (max |a - b| / max |a|).
        image_size: the check batch's resolution (default: from the metadata, else 224).
        log: where the report lines go.

    Returns:
        {'output', 'errors' (per output), 'max_rel_error', 'folds'}.

    Raises:
        CheckpointError: bad input or a failed check; nothing is written then.

    Example:
        >>> reparam_checkpoint('runs/digits/imitation/model.safetensors')   # doctest: +SKIP
    """
    src = Path(src)
    ckpt = read_checkpoint(src)
    start_form = ckpt.config.form
    if start_form == 'deploy':
        raise CheckpointError(f'{src}: already in deploy form; nothing to fold (load it with models.load_deploy)')
    if start_form == form:
        raise CheckpointError(f'{src}: already in {form} form; ask for --form deploy to fold the rest')
    reference = build_model(ckpt, arch=arch)
    deployed = reparameterize(reference, form, inplace=False)

    size = image_size or int(ckpt.metadata.get('image_size', 224))
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, reference.in_chans, size, size, generator=generator)
    errors = compare_forms(reference, deployed, x)
    worst = max(errors.values(), key=lambda e: float('inf') if e != e else e)
    if not worst <= tol:   # also catches NaN
        raise CheckpointError(
            f'equivalence check failed: max relative error {worst:.3g} > tol {tol:g} '
            f'({", ".join(f"{k} {v:.3g}" for k, v in errors.items())}); deploy file not written')

    out = Path(out) if out else default_output(src, form)
    if out.resolve() == src.resolve():
        raise CheckpointError(f'{out}: output would overwrite the input; pass another -o')
    folds = [f for f in FOLDS[form] if not (start_form == 'plain' and f == 'affine->norm1')]
    save_model(out, deployed, extra={
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
