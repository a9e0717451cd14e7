"""PoolFormer teachers: building them from a timm name and a local checkpoint, and using their
weights to initialise a RIFormer student (the paper's teacher-weight init)."""
from collections import OrderedDict
from typing import List, Mapping

import timm
import torch.nn as nn
from timm.layers import GroupNorm1, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.metaformer import MetaFormer, checkpoint_filter_fn as timm_metaformer_filter

from .checkpoint_io import create_pretrained, load_checked, read_state_dict
from .errors import CheckpointError
from .layouts import to_timm_names
from .pretrained import weights_source

# The PoolFormer (v1) settings of timm's poolformer_* entry points.
POOLFORMER_V1 = dict(
    downsample_norm=None, mlp_act=nn.GELU, mlp_bias=True, norm_layers=GroupNorm1,
    res_scale_init_values=None, use_mlp_head=False)

default_cfgs = generate_default_cfgs({'poolformer_mini': {
    'url': '', 'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (1, 1), 'crop_pct': 1.0,
    'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
    'first_conv': 'stem.conv', 'classifier': 'head.fc'}})


@register_model
def poolformer_mini(pretrained=False, **kwargs) -> MetaFormer:
    """A small PoolFormer, same shape as riformer_mini: the teacher of the CPU recipes."""
    from .riformer import ARCHS
    depths, dims, ls_init = ARCHS['riformer_mini']
    return build_model_with_cfg(
        MetaFormer, 'poolformer_mini', pretrained, pretrained_filter_fn=timm_metaformer_filter,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **{'depths': depths, 'dims': dims, 'layer_scale_init_values': ls_init, **POOLFORMER_V1, **kwargs})


def read_poolformer_state_dict(path):
    """A PoolFormer checkpoint (timm, sail-sg or mmpretrain layout) in timm names, plus whether its
    head normalises the map before pooling (sail-sg / mmpretrain)."""
    return read_state_dict(path)


def create_teacher(name: str, checkpoint=None, pretrained: bool = False, **kwargs) -> nn.Module:
    """A frozen timm model in eval mode with the weights of a local checkpoint or, without one and
    with `pretrained`, timm's pretrained weights for `name` (which may carry a tag, e.g.
    `poolformer_s12.sail_in1k`). With a checkpoint, the class count comes from it and shapes are
    checked, so a checkpoint of another architecture fails here with the offending key.

    Args:
        name: a timm model name, optionally with a weight tag.
        checkpoint: a local file in any layout `read_state_dict` reads; wins over `pretrained`.
        pretrained: timm's weights for `name` (downloaded once, then read from the cache).
        **kwargs: passed to `timm.create_model`.

    Returns:
        The model, in eval mode, with `requires_grad` off.

    Raises:
        CheckpointError: unknown name, no weights, or weights that do not fit.

    Example:
        >>> teacher = create_teacher('poolformer_mini', 'runs/digits/teacher/model.safetensors')  # doctest: +SKIP
        >>> teacher = create_teacher('poolformer_s12.sail_in1k', pretrained=True)                  # doctest: +SKIP
    """
    arch = name.split('.')[0]
    if arch not in timm.list_models():
        close = timm.list_models(f'*{arch.split("_")[0]}*')[:8]
        raise CheckpointError(f'unknown teacher model {name!r}; close timm names: {", ".join(close) or "none"}')
    if not checkpoint:
        if not pretrained:
            raise CheckpointError(f'teacher {name}: no weights; set a local checkpoint or use timm\'s pretrained ones')
        return _pretrained_teacher(name, **kwargs)
    sd, head_norm_first = read_poolformer_state_dict(checkpoint)
    fc = sd.get('head.fc.weight')
    model = timm.create_model(arch, num_classes=0 if fc is None else fc.shape[0], **kwargs)
    if head_norm_first:
        _use_norm_first_head(model)
        sd = _norm_first_keys(sd)
    try:
        load_checked(model, sd, what=f'teacher checkpoint {checkpoint}')
    except CheckpointError as e:
        raise CheckpointError(f'{e} (teacher {name})') from None
    model.eval().requires_grad_(False)
    return model


def _pretrained_teacher(name: str, **kwargs) -> nn.Module:
    """timm's pretrained weights (downloaded once, then read from the Hugging Face / torch hub
    cache; the file read by our reader, `create_pretrained`). timm would warn and return random
    weights for a name without any: refuse instead."""
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    if not (overlay.get('file') or overlay.get('url') or weights_source(name)):
        tagged = [t for t in timm.list_pretrained(f'{name.split(".")[0]}*')][:4]
        raise CheckpointError(f'teacher {name}: timm has no pretrained weights for it; use a tag that has '
                              f'(e.g. {", ".join(tagged) or "poolformer_s12.sail_in1k"}) or a local checkpoint')
    try:
        model = create_pretrained(name, **kwargs)
    except OSError as e:   # no network / not in the cache (Hub, HTTP and file errors are OSErrors)
        raise CheckpointError(
            f'teacher {name}: timm\'s pretrained weights are not in the local cache and could not be '
            f'downloaded ({type(e).__name__}); '
            f'on a machine without network, fetch them once where there is one (they stay in the '
            f'Hugging Face cache, HF_HOME) or point teacher.checkpoint at a local file') from None
    return model.eval().requires_grad_(False)


def _use_norm_first_head(model):
    # The original PoolFormer head normalises the last map, then pools. timm's MetaFormer head
    # pools, then normalises: move the norm into the pooling slot so timm's forward_head runs
    # norm -> pool -> identity, reproducing the checkpoint's logits.
    dim = model.head.norm.normalized_shape[0] if hasattr(model.head.norm, 'normalized_shape') else model.num_features
    model.head.global_pool = nn.Sequential(OrderedDict(
        norm=GroupNorm1(dim), pool=SelectAdaptivePool2d(pool_type='avg')))
    model.head.norm = nn.Identity()


def _norm_first_keys(sd):
    return {k.replace('head.norm.', 'head.global_pool.norm.'): v for k, v in sd.items()}


def adapt_head(model: nn.Module, head_norm_first: bool, state_dict: dict, source) -> dict:
    """Give `model` the head a checkpoint's weights were trained with: the original PoolFormer /
    mmpretrain head (GroupNorm1 on the map, then pool) or timm's (pool, then LayerNorm2d).
    Same shapes, different functions: loading one head's weights into the other silently
    changes the logits.

    Args:
        model: the model about to load the weights (a RIFormer or a timm PoolFormer).
        head_norm_first: whether the checkpoint's head normalises the map before pooling
            (`read_state_dict` says).
        state_dict: the checkpoint's tensors in timm names.
        source: names the checkpoint in errors.

    Returns:
        `state_dict` with keys for the adapted model.

    Raises:
        CheckpointError: a norm-first head for a model that cannot take one.

    Example:
        >>> sd, norm_first = models.read_state_dict('poolformer_s12.pth')          # doctest: +SKIP
        >>> models.load_checked(model, models.adapt_head(model, norm_first, sd, 'poolformer_s12.pth'))  # doctest: +SKIP
    """
    from .riformer import RIFormer
    if isinstance(model, RIFormer):
        model.set_head_norm_first(head_norm_first)
        return state_dict
    if not head_norm_first:
        return state_dict
    if isinstance(model, MetaFormer) and not isinstance(model.head.norm, nn.Identity):
        _use_norm_first_head(model)
        return _norm_first_keys(state_dict)
    raise CheckpointError(
        f'{source} has the original PoolFormer head (GroupNorm on the last map, then pooling), which a '
        f'{type(model).__name__} student cannot take: use a RIFormer student (riformer_*) or a timm '
        f'PoolFormer (poolformer_*), or convert the checkpoint to the timm layout')


def init_from_teacher(student: nn.Module, checkpoint) -> List[str]:
    """Copy every PoolFormer weight into a RIFormer student; only the affine mixers (and the
    classifier, when the class counts differ) keep their init. The student takes the head of the
    checkpoint (`adapt_head`).

    Args:
        student: a RIFormer (changed in place).
        checkpoint: a PoolFormer file, or the state dict of a teacher with timm's pretrained
            weights (timm names and head).

    Returns:
        The student's keys left at init.

    Example:
        >>> import timm
        >>> student = timm.create_model('riformer_mini')
        >>> left = init_from_teacher(student, timm.create_model('poolformer_mini').state_dict())
        >>> all('token_mixer.affine' in k for k in left)
        True
    """
    if isinstance(checkpoint, Mapping):
        sd, head_norm_first, checkpoint = dict(checkpoint), False, "with timm's weights"
    else:
        sd, head_norm_first = read_poolformer_state_dict(checkpoint)
    sd = adapt_head(student, head_norm_first, sd, f'teacher checkpoint {checkpoint}')
    expected = student.state_dict()
    allow = ['token_mixer.affine']
    if 'head.fc.weight' in sd and sd['head.fc.weight'].shape != expected.get('head.fc.weight', sd['head.fc.weight']).shape:
        sd = {k: v for k, v in sd.items() if not k.startswith('head.fc.')}
        allow.append('head.fc.')
    load_checked(student, sd, allow_missing=allow, what=f'teacher checkpoint {checkpoint}')
    return [k for k in expected if k not in sd]
