"""Deploy forms of the other efficient backbones: EfficientViT (MSRA) and FasterNet from timm.

Both train with BatchNorm; at deploy time every BN follows a conv (or sits before a linear) and
folds into it exactly (eval-mode BN is an affine map):

* EfficientViT `efficientvit_m0`..`m5`: its own `fuse()` methods (ConvNorm -> Conv2d,
  NormLinear -> Linear), applied by `timm.utils.reparameterize_model`.
* FasterNet `fasternet_t0`..`fasternet_l`: no fuse in timm, so folded here: patch embed /
  merging conv + BN, the MLP's first 1x1 conv + BN, layer scale into the MLP's last conv, and
  the partial conv built in its inference ('slicing') form.

The deploy model has no BatchNorm left, so nothing downstream (e.g. ultralytics resetting every
BatchNorm2d's eps) can change it. Deploy files are safetensors whose metadata names the timm
model, so `load_efficient_deploy(path)` rebuilds the structure and loads the folded tensors.
"""
import json
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .errors import CheckpointError

FORMAT = 'timm-deploy'
EFFICIENTVIT = tuple(f'efficientvit_m{i}' for i in range(6))
FASTERNET = ('fasternet_t0', 'fasternet_t1', 'fasternet_t2', 'fasternet_s', 'fasternet_m', 'fasternet_l')
EFFICIENT_NAMES = EFFICIENTVIT + FASTERNET


def _check_name(name: str):
    if name not in EFFICIENT_NAMES:
        raise CheckpointError(f'unknown efficient backbone {name!r}; choose one of {", ".join(EFFICIENT_NAMES)}')


def create_training(name: str, num_classes: int = 0, weights: Optional[str] = None, **kwargs) -> nn.Module:
    """The timm training form (BN, split-cat partial conv), eval mode. `weights`: a local timm
    checkpoint of that model (nothing is downloaded)."""
    import timm
    from .checkpoint_io import create_pretrained
    _check_name(name)
    if weights is not None and not Path(weights).is_file():
        raise CheckpointError(f'{weights}: no such file')
    try:
        if weights is None:
            return timm.create_model(name, num_classes=num_classes, **kwargs).eval()
        # read by our reader (CRCs, weights_only, one line for a pickle of objects), not by timm
        overlay = dict(file=str(weights))
        return create_pretrained(name, num_classes=num_classes, pretrained_cfg_overlay=overlay, **kwargs).eval()
    except CheckpointError:
        raise
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(f'{weights}: does not load into {name} ({first})') from None


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode BN as one conv with bias (computed in float64)."""
    scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    ).to(conv.weight.device)
    fused.weight.copy_(conv.weight.double() * scale.view(-1, 1, 1, 1))
    fused.bias.copy_((bias - bn.running_mean.double()) * scale + bn.bias.double())
    return fused


@torch.no_grad()
def deploy_fasternet(model: nn.Module) -> nn.Module:
    """Fold a FasterNet (in place). The model must have been built with
    `pconv_fw_type='slicing'` (its inference form; the weights are the same)."""
    from timm.models.fasternet import MLPBlock, PatchEmbed, PatchMerging
    for module in list(model.modules()):
        if isinstance(module, PatchEmbed) and isinstance(module.norm, nn.BatchNorm2d):
            module.proj, module.norm = fold_conv_bn(module.proj, module.norm), nn.Identity()
        elif isinstance(module, PatchMerging) and isinstance(module.norm, nn.BatchNorm2d):
            module.reduction, module.norm = fold_conv_bn(module.reduction, module.norm), nn.Identity()
        elif isinstance(module, MLPBlock):
            if isinstance(module.mlp[1], nn.BatchNorm2d):
                module.mlp[0], module.mlp[1] = fold_conv_bn(module.mlp[0], module.mlp[1]), nn.Identity()
            if module.layer_scale is not None:   # ls * W x == (ls W) x: fold into the last conv
                last = module.mlp[3]
                last.weight.copy_(last.weight.double() * module.layer_scale.double().view(-1, 1, 1, 1))
                module.layer_scale = None
    return model


def _check_no_batchnorm(model: nn.Module, name: str):
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise CheckpointError(f'{name}: {len(left)} BatchNorm layers left after folding (first: {left[0]})')


def to_deploy(name: str, model: nn.Module) -> nn.Module:
    """The deploy form of a training-form `name` model (a new module; `model` is unchanged)."""
    import copy
    from timm.utils import reparameterize_model
    _check_name(name)
    model = copy.deepcopy(model).eval()
    if name in EFFICIENTVIT:
        model = reparameterize_model(model, inplace=True)
    else:
        # Same variant in its inference form; only the forward of the partial conv differs.
        layer_scale = any(k.endswith('.layer_scale') for k in model.state_dict())
        slicing = create_training(name, num_classes=_num_classes(model), pconv_fw_type='slicing',
                                  layer_scale_init_value=1. if layer_scale else 0.)
        slicing.load_state_dict(model.state_dict())
        model = deploy_fasternet(slicing)
    _check_no_batchnorm(model, name)
    return model.eval()


def create_deploy(name: str, num_classes: int = 0, weights: Optional[str] = None) -> nn.Module:
    """Build `name` (optionally with local training weights) and fold it."""
    return to_deploy(name, create_training(name, num_classes=num_classes, weights=weights))


def _num_classes(model: nn.Module) -> int:
    return int(getattr(model, 'num_classes', 0))


def save_efficient_deploy(path, name: str, model: nn.Module, extra: Optional[dict] = None):
    """Write a deploy model of `name` with the metadata `load_efficient_deploy` rebuilds it from."""
    from .checkpoint_io import write_safetensors
    _check_no_batchnorm(model, name)
    config = {'arch': name, 'num_classes': _num_classes(model)}
    metadata = {'format': FORMAT, 'arch': name, 'form': 'deploy', 'config': json.dumps(config), **(extra or {})}
    write_safetensors(path, model.state_dict(), metadata)


def load_efficient_deploy(path, metadata: dict, tensors: dict, features_only=False,
                          out_indices: Optional[Sequence[int]] = None) -> nn.Module:
    """Rebuild a deploy file written by `save_efficient_deploy` (tensors/metadata already read)."""
    from .checkpoint_io import load_checked
    name, num_classes = stored_config(path, metadata)
    model = create_deploy(name, num_classes=num_classes)
    try:
        load_checked(model, tensors, what=f'{path}')
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    model.eval()
    return as_features(model, out_indices) if features_only else model


def stored_config(path, metadata: dict):
    """(name, num_classes) of a deploy file's `config` metadata, checked before anything is built:
    JSON object, a known backbone, a class count up to 100000 (the bound of our own configs), so
    that an edited file cannot ask for an unbounded head or give a traceback."""
    try:
        config = json.loads(metadata.get('config', '{}'))
    except ValueError:
        raise CheckpointError(f'{path}: its metadata config is not valid JSON') from None
    if not isinstance(config, dict):
        raise CheckpointError(f'{path}: its metadata config is not a JSON object')
    name = config.get('arch', metadata.get('arch'))
    _check_name(name)
    num_classes = config.get('num_classes', 0)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or not 0 <= num_classes <= 100_000:
        raise CheckpointError(f'{path}: its metadata config has num_classes = {str(num_classes)[:60]}, '
                              f'not a class count up to 100000')
    return name, num_classes


def as_features(model: nn.Module, out_indices: Optional[Sequence[int]] = None) -> nn.Module:
    """Wrap a timm model (with `feature_info`) so that it returns its stage outputs."""
    from timm.models import FeatureListNet
    num = len(model.feature_info)
    indices = tuple(range(num)) if out_indices is None else tuple(out_indices)
    bad = [i for i in indices if not -num <= i < num]
    if bad:
        raise CheckpointError(f'out_indices {bad} out of range for {num} stages')
    return FeatureListNet(model, out_indices=indices, flatten_sequential=True).eval()
