"""Whole-detector reparameterization (ultralytics, yolo9, yolov5): fold every RIFormerBlock of a
detector checkpoint into the deploy form, check it against the unfolded detector, and write it
in the layout their own loaders take.

The checkpoint is read by `safe_load.load_pickled` (nothing named in the file runs) and written by
`detector_file.save_detector`; both names, and the file helpers, are importable from here too."""
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .detector_file import (  # noqa: F401  (the names callers import from here)
    DATA_CLASSES, MODULE_PREFIXES, allowed_classes, detector_of, family, is_detector_checkpoint, pickled_globals,
    save_detector)
from .safe_load import load_pickled  # noqa: F401


def _tensors(out, prefix='out'):
    """Every tensor of a (nested) detector output, named by position."""
    if isinstance(out, torch.Tensor):
        return {prefix: out}
    if isinstance(out, dict):
        items = out.items()
    elif isinstance(out, (list, tuple)):
        items = enumerate(out)
    else:
        return {}
    found = {}
    for key, value in items:
        found.update(_tensors(value, f'{prefix}.{key}'))
    return found


@torch.no_grad()
def compare_detectors(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> dict:
    """Relative error (max |a - b| / max |a|) of every output tensor of `candidate` against
    `reference` on `x`, in eval mode: the decoded predictions and the head's raw maps."""
    from ..fold import relative_error
    ref, cand = _tensors(reference.eval()(x)), _tensors(candidate.eval()(x))
    if ref.keys() != cand.keys():
        raise CheckpointError(f'outputs differ in structure: {sorted(ref)} vs {sorted(cand)}')
    return {k: relative_error(ref[k], cand[k]) for k in ref}


def deploy_yaml(model: nn.Module) -> dict:
    """The model YAML of `model` with every RIFormerBlock row in its current form and every
    DeployBackbone row naming its architecture only, so that a rebuild makes the same modules."""
    import copy
    from .backbone import DeployBackbone
    from .layers import RIFormerNeckBlock
    cfg = copy.deepcopy(model.yaml)
    for row, layer in zip(cfg['backbone'] + cfg['head'], model.model):
        if isinstance(layer, RIFormerNeckBlock):
            row[3] = layer.yaml_args()
        elif isinstance(layer, nn.Sequential) and layer and all(isinstance(m, RIFormerNeckBlock) for m in layer):
            row[3] = layer[0].yaml_args()            # a row with repeats: one set of arguments
        elif isinstance(layer, DeployBackbone):
            row[3] = layer.portable_args()
    return cfg


def rebuild(model: nn.Module) -> nn.Module:
    """What a fine-tune / resume builds from `model.yaml` in the detector's own code base."""
    kind = family(model)
    nc = model.yaml.get('nc')
    if kind == 'ultralytics':
        from .yolo import register
        register()
        return type(model)(model.yaml, nc=nc, verbose=False)
    from .yolov5_build import build_detection_model
    return build_detection_model(model.yaml, f'{kind}.models.yolo', nc=nc)


def check_transfer(model: nn.Module, rebuilt: nn.Module):
    """Every tensor of `model` has a place of the same shape in `rebuilt` and back (what
    ultralytics reports as 'Transferred N/N items')."""
    have, want = model.state_dict(), rebuilt.state_dict()
    missing = [k for k in want if k not in have or have[k].shape != want[k].shape]
    extra = [k for k in have if k not in want]
    if missing or extra:
        raise CheckpointError(
            f'a rebuild from the rewritten YAML does not take every tensor: {len(missing)} new '
            f'(first: {missing[:1]}), {len(extra)} left over (first: {extra[:1]})')


def default_output(path: Path) -> Path:
    return path.with_name(f'{path.stem}.deploy{path.suffix}')


def reparameterize_detector(src, out=None, tol: float = 1e-5, image_size=None, batch_size: int = 2,
                            seed: int = 0, log=print) -> dict:
    """Fold every RIFormerBlock of a detector checkpoint (ultralytics, yolo9, yolov5) into the deploy
    form, check the outputs against the unfolded detector on a random batch at the checkpoint's
    image size and each folded block's residual branches against their own size, rewrite the
    stored YAML so a rebuild makes deploy-form blocks and takes every tensor, and write `out`
    (default SRC.deploy.pt) as a checkpoint the detector's own tools load.
    The optimizer state is not carried over (it belongs to the training-form parameters)."""
    import copy
    from ..fold import check_blocks, compare_blocks, reparameterize, worst_error
    from ..riformer import RIFormerBlock
    from ..paths import check_output
    src = Path(src)
    check_output([Path(out) if out else default_output(src)], [src])
    ckpt = load_pickled(src)
    model = detector_of(ckpt).eval()
    kind = family(model)
    blocks = [m for m in model.modules() if isinstance(m, RIFormerBlock)]
    if not blocks:
        raise CheckpointError(f'{src}: the detector has no RIFormer blocks to fold')
    todo = [name for name, m in model.named_modules() if isinstance(m, RIFormerBlock) and m.form != 'deploy']
    if not todo:
        raise CheckpointError(f'{src}: every RIFormer block is already in deploy form; nothing to fold')

    reference = copy.deepcopy(model)
    reparameterize(model, 'deploy')
    model.yaml = deploy_yaml(model)
    check_transfer(model, rebuild(model).eval())

    args = ckpt.get('train_args') or {}
    opt = ckpt.get('opt') or {}
    size = image_size or args.get('imgsz') or opt.get('imgsz') or 640
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))
    errors = compare_detectors(reference, model, x)
    worst = max(errors.values(), key=lambda e: float('inf') if e != e else e)
    if not worst <= tol:     # also catches NaN
        raise CheckpointError(
            f'equivalence check failed: max relative error {worst:.3g} > tol {tol:g}; detector not written')
    # Near-identity blocks (layer scale 1e-5 after short training) hide a wrong fold from the
    # outputs: each folded block's residual branches are checked against their own size.
    block_errors = compare_blocks(reference, model, x, names=todo)
    check_blocks(block_errors, tol, worst, 'detector')
    worst_block, block_error = worst_error(block_errors)

    out = Path(out) if out else default_output(src)
    keep = {k: ckpt[k] for k in ('train_args', 'names', 'opt') if k in ckpt}
    save_detector(model, out, extra={**keep, 'folds': f'{len(todo)} RIFormer blocks to deploy form',
                                     'max_rel_error': worst, 'block_error': block_error})
    log(f'{src} -> {out}')
    log(f'  {kind} {type(model).__name__}: folded {len(todo)} of {len(blocks)} RIFormer blocks '
        f'({len(blocks) - len(todo)} were already deploy-form)')
    log(f'  check on {batch_size}x3x{size}x{size}: max relative error {worst:.2e} (tol {tol:g}) over '
        f'{len(errors)} outputs; stored YAML rewritten, a rebuild takes all {len(model.state_dict())} tensors')
    log(f'  blocks: the residual branches of the {len(block_errors)} folded blocks within {block_error:.1e} of '
        f'their own size (worst: {worst_block})')
    return {'output': str(out), 'errors': errors, 'max_rel_error': worst, 'folded': len(todo), 'family': kind,
            'block_errors': block_errors, 'block_error': block_error}
