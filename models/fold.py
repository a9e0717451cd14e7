"""Folding (reparameterization) of a model and of a checkpoint file into the deploy form, and
the equivalence check that guards every deploy file. tools/reparam.py is its command."""
import copy
import json
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn

from .checkpoint_io import build_model, read_checkpoint, read_metadata, save_model
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


def residual_branches(block: RIFormerBlock, x: torch.Tensor):
    """The two residual branches of a RIFormer block (any form) on `x`, by the reference forward:
    the token mixer's (`x1 - x`) and the MLP's (`block(x) - x1`), with `x1 = x + ` the first."""
    mixer = block.layer_scale1(block.drop_path1(block.token_mixer(block.norm1(x))))
    x1 = x + mixer
    return mixer, block.layer_scale2(block.drop_path2(block.mlp(block.norm2(x1))))


def _block_inputs(model: nn.Module, x: torch.Tensor, names) -> Dict[str, torch.Tensor]:
    """The input of each named RIFormer block of `model` when it runs on `x` (its first call)."""
    modules = dict(model.named_modules())
    inputs = {}

    def keep(name):
        return lambda module, args: inputs.setdefault(name, args[0].detach())

    handles = [modules[n].register_forward_pre_hook(keep(n)) for n in names]
    try:
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return inputs


@torch.no_grad()
def compare_blocks(reference: nn.Module, candidate: nn.Module, x: torch.Tensor, names=None) -> Dict[str, float]:
    """Relative error of each RIFormer block's residual branches in `candidate` against the same
    block in `reference`, each measured against the branch's own size (`relative_error`). A
    block near identity (layer scale 1e-5, as after short training) hides a wrong fold from a
    comparison of whole outputs; here it shows in full. Both blocks get the input the reference
    block sees on `x` and run in float64, so the error is the fold's (float32 rounding of the
    folded weights, about 1e-7), not cancellation in `block(x) - x`.

    Args:
        reference, candidate: models holding RIFormer blocks under the same module names (a
            model and its folded copy), in eval mode.
        x: the input batch.
        names: the blocks to compare (default: every RIFormer block of `reference`).

    Returns:
        {block name: the larger of its two branch errors}.

    Example:
        >>> import timm, torch, models
        >>> m = timm.create_model('riformer_mini').eval()
        >>> errors = compare_blocks(m, models.reparameterize(m, inplace=False), torch.randn(1, 3, 32, 32))
        >>> len(errors), max(errors.values()) < 1e-5
        (6, True)
    """
    if names is None:
        names = [n for n, m in reference.named_modules() if isinstance(m, RIFormerBlock)]
    inputs = _block_inputs(reference, x, names)
    ref_modules, cand_modules = dict(reference.named_modules()), dict(candidate.named_modules())
    errors = {}
    for name in names:
        if name not in inputs:
            continue        # not on the path of this input: nothing to compare
        x64 = inputs[name].double()
        ref = residual_branches(copy.deepcopy(ref_modules[name]).double().eval(), x64)
        cand = residual_branches(copy.deepcopy(cand_modules[name]).double().eval(), x64)
        errors[name] = max(relative_error(a, b) for a, b in zip(ref, cand))
    return errors


def worst_error(errors: Dict[str, float]):
    """(name, error) of the largest error, NaN counting as the largest; (None, 0.0) when empty."""
    if not errors:
        return None, 0.
    return max(errors.items(), key=lambda kv: float('inf') if kv[1] != kv[1] else kv[1])


def check_blocks(errors: Dict[str, float], tol: float, output_error: float, what: str):
    """CheckpointError unless every block's branch error is within `tol` (NaN fails)."""
    name, worst = worst_error(errors)
    if not worst <= tol:
        bad = sum(not e <= tol for e in errors.values())
        raise CheckpointError(
            f'block check failed: the residual branches of {bad} of {len(errors)} folded blocks differ from the '
            f'unfolded ones by up to {worst:.3g} of their size (worst: {name}) > tol {tol:g}, while the whole '
            f'output moved only {output_error:.2g}: the fold is wrong; {what} not written')


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
    stage output, and each block's residual branches against their own size: `compare_blocks`)
    and written only when all agree within `tol` (tools/reparam.py is its CLI).

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
        {'output', 'errors' (per output), 'max_rel_error', 'folds', 'block_errors' (per block:
        `compare_blocks`), 'block_error' (the largest)}.

    Raises:
        CheckpointError: bad input or a failed check; nothing is written then.

    Example:
        >>> reparam_checkpoint('runs/digits/imitation/model.safetensors')   # doctest: +SKIP
    """
    from .paths import check_output, one_line_write_failure
    src = Path(src)
    check_output([Path(out) if out else default_output(src, form)], [src])
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
    # Outputs alone cannot see a wrong fold in a block whose branches are small next to its input.
    block_errors = compare_blocks(reference, deployed, x)
    check_blocks(block_errors, tol, worst, 'deploy file')
    worst_block, block_error = worst_error(block_errors)

    out = Path(out) if out else default_output(src, form)
    folds = [f for f in FOLDS[form] if not (start_form == 'plain' and f == 'affine->norm1')]
    with one_line_write_failure(out):       # a full disk: one line, no partial file (the write is atomic)
        save_model(out, deployed, extra={
            'folds': ','.join(folds), 'max_rel_error': f'{worst:.3e}', 'errors': json.dumps(errors),
            'source': f'{src.name} ({ckpt.source} layout, {start_form} form)', 'image_size': str(size),
            'block_error': f'{block_error:.3e}',
            # the training recipe, when the source has one: tools/evaluate.py finds its data there
            **({'recipe': read_metadata(src)['recipe']} if 'recipe' in read_metadata(src) else {}),
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
    log(f'  blocks: the residual branches of all {len(block_errors)} blocks within {block_error:.1e} of their '
        f'own size (worst: {worst_block})')
    return {'output': str(out), 'errors': errors, 'max_rel_error': worst, 'folds': folds,
            'block_errors': block_errors, 'block_error': block_error}
