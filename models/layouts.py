"""Checkpoint layouts people already have, mapped onto timm's PoolFormer names.

Three layouts exist in the wild (the key names of timm's PoolFormer, the sail-sg PoolFormer
repository and mmpretrain's RIFormer):

* ``timm``: `stem.conv`, `stages.{i}.downsample.conv`, `stages.{i}.blocks.{j}.*`, `head.norm`,
  `head.fc` -- timm PoolFormer and our RIFormer.
* ``sail``: the original PoolFormer repository: `patch_embed.proj`, blocks at `network.{2i}.{j}`,
  downsampling at `network.{2i-1}.proj`, raw `layer_scale_1` vectors, `norm`, `head`.
* ``mmpretrain``: the sail layout under `backbone.`, the final norm at `backbone.norm6`, the
  classifier at `head.fc`; deploy checkpoints carry `norm_reparam` instead of `norm1` +
  `token_mixer`.

The sail and mmpretrain heads normalise the map before pooling; `Converted.head_norm_first`
says so, and the model must be built with that head to reproduce the logits.
Each source key is matched by one explicit pattern and table lookup; anything unmatched is an
error, so a foreign checkpoint never loads half-way.
"""
import re
from dataclasses import dataclass, field
from typing import Dict, List

import torch

from .errors import CheckpointError

# Per-block parameter names of the sail / mmpretrain layouts -> timm names.
_NETWORK_BLOCK_KEYS = {
    'norm1.weight': 'norm1.weight',
    'norm1.bias': 'norm1.bias',
    'norm_reparam.weight': 'norm1.weight',
    'norm_reparam.bias': 'norm1.bias',
    'token_mixer.affine.weight': 'token_mixer.affine.weight',
    'token_mixer.affine.bias': 'token_mixer.affine.bias',
    'norm2.weight': 'norm2.weight',
    'norm2.bias': 'norm2.bias',
    'mlp.fc1.weight': 'mlp.fc1.weight',
    'mlp.fc1.bias': 'mlp.fc1.bias',
    'mlp.fc2.weight': 'mlp.fc2.weight',
    'mlp.fc2.bias': 'mlp.fc2.bias',
    'layer_scale_1': 'layer_scale1.scale',
    'layer_scale_2': 'layer_scale2.scale',
}
_NETWORK_BLOCK = re.compile(r'network\.(\d+)\.(\d+)\.(.+)')
_NETWORK_DOWNSAMPLE = re.compile(r'network\.(\d+)\.proj\.(weight|bias)')
_OUT_NORM = re.compile(r'norm(\d+)\.(weight|bias)')
_PARAM = re.compile(r'(weight|bias)')

# Wrappers that training frameworks put around a state dict, tried in this order.
_WRAPPER_KEYS = ('state_dict', 'model', 'module', 'state_dict_ema', 'model_ema')


@dataclass
class Converted:
    state_dict: Dict[str, torch.Tensor]
    source: str                      # 'timm', 'sail' or 'mmpretrain'
    head_norm_first: bool            # the head normalises the map before pooling
    ignored: List[str] = field(default_factory=list)   # foreign keys with no place in the model


def unwrap(obj) -> Dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint object (plain, or under a trainer's wrapper key)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f'holds a {type(obj).__name__}, not a state dict')
    for key in _WRAPPER_KEYS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f'holds no tensors (top-level keys: {_preview(obj)})')
    if all(k.startswith('module.') for k in tensors):   # saved from a DDP-wrapped model
        tensors = {k[len('module.'):]: v for k, v in tensors.items()}
    return tensors


def detect_source(state_dict) -> str:
    keys = state_dict.keys()
    if any(k.startswith('backbone.network.') for k in keys):
        return 'mmpretrain'
    if any(k.startswith('network.') for k in keys):
        return 'sail'
    if any(k.startswith('stages.') for k in keys):
        return 'timm'
    raise CheckpointError(
        f'is not a PoolFormer/RIFormer state dict (keys look like: {_preview(state_dict)})')


def to_timm_names(state_dict) -> Converted:
    """A PoolFormer / RIFormer state dict of any known layout (timm, sail, mmpretrain) in timm names.

    Args:
        state_dict: the tensors (a plain dict; `unwrap` a trainer's wrapper first).

    Returns:
        `Converted`: the renamed state dict, the layout it came from, whether its head is
        norm-first, and the foreign keys with no place in the model.

    Raises:
        CheckpointError: unknown keys, or a layout this module does not know.

    Example:
        >>> import timm
        >>> to_timm_names(timm.create_model('riformer_mini').state_dict()).source
        'timm'
    """
    source = detect_source(state_dict)
    if source == 'timm':
        return Converted(dict(state_dict), 'timm', head_norm_first=False)
    prefix = 'backbone.' if source == 'mmpretrain' else ''
    out, ignored = {}, []
    out_norms = set()
    for key, value in state_dict.items():
        target = None
        if key.startswith(prefix):
            target = _map_backbone_key(key[len(prefix):])
            if target == 'out_norm':
                out_norms.add(int(_OUT_NORM.fullmatch(key[len(prefix):]).group(1)))
                continue
        if target is None:
            target = _map_head_key(key, source)
        if target is None:
            ignored.append(key)
            continue
        if target in out:
            raise CheckpointError(f'maps two keys onto {target} (second: {key})')
        out[target] = value
    if source == 'mmpretrain' and out_norms:
        last_norm = max(out_norms)
        # Only the output norm after the last stage feeds the classifier; mmdet's per-level
        # norms (norm0, norm2, norm4) normalise detection features and have no place here.
        for p in ('weight', 'bias'):
            out[f'head.norm.{p}'] = state_dict[f'backbone.norm{last_norm}.{p}']
        ignored += [f'backbone.norm{i}.*' for i in sorted(out_norms - {last_norm})]
    return Converted(out, source, head_norm_first=True, ignored=ignored)


def _map_backbone_key(key):
    if key.startswith('patch_embed.proj.'):
        return 'stem.conv.' + key[len('patch_embed.proj.'):]
    m = _NETWORK_BLOCK.fullmatch(key)
    if m and m.group(3) in _NETWORK_BLOCK_KEYS:
        index, block, rest = int(m.group(1)), m.group(2), m.group(3)
        if index % 2:
            raise CheckpointError(f'{key}: blocks sit at even network indices in this layout')
        return f'stages.{index // 2}.blocks.{block}.{_NETWORK_BLOCK_KEYS[rest]}'
    m = _NETWORK_DOWNSAMPLE.fullmatch(key)
    if m:
        index = int(m.group(1))
        if index % 2 == 0:
            raise CheckpointError(f'{key}: downsampling sits at odd network indices in this layout')
        return f'stages.{(index + 1) // 2}.downsample.conv.{m.group(2)}'
    if _OUT_NORM.fullmatch(key):
        return 'out_norm'
    m = re.fullmatch(r'norm\.(weight|bias)', key)   # sail: the final norm
    if m:
        return f'head.norm.{m.group(1)}'
    if key.startswith('network.'):
        raise CheckpointError(f'{key}: unknown parameter in a PoolFormer-style network block')
    return None


def _map_head_key(key, source):
    if source == 'sail':
        m = re.fullmatch(r'head\.(weight|bias)', key)
        return f'head.fc.{m.group(1)}' if m else None
    m = re.fullmatch(r'head\.fc\.(weight|bias)', key)
    return key if m else None


def to_mmpretrain_names(state_dict) -> Dict[str, torch.Tensor]:
    """timm names -> mmpretrain RIFormer names (classification layout: `backbone.norm{last}`).

    Inverse of `to_timm_names` for training and plain-deploy forms; the fully folded deploy
    form has no mmpretrain equivalent (mmpretrain keeps layer scales and norm2's affine).

    Args:
        state_dict: a RIFormer state dict in timm names (training or plain form).

    Returns:
        The same tensors under mmpretrain's names.

    Raises:
        CheckpointError: a key with no mmpretrain equivalent (e.g. a fully folded deploy form).

    Example:
        >>> import timm
        >>> names = to_mmpretrain_names(timm.create_model('riformer_mini').state_dict())
        >>> 'backbone.patch_embed.proj.weight' in names
        True"""
    reverse = {v: k for k, v in _NETWORK_BLOCK_KEYS.items() if not k.startswith('norm_reparam')}
    plain = not any('token_mixer.affine' in k for k in state_dict)
    if plain:
        reverse.update({'norm1.weight': 'norm_reparam.weight', 'norm1.bias': 'norm_reparam.bias'})
    num_stages = 1 + max(int(k.split('.')[1]) for k in state_dict if k.startswith('stages.'))
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r'stages\.(\d+)\.blocks\.(\d+)\.(.+)', key)
        if m:
            out[f'backbone.network.{2 * int(m.group(1))}.{m.group(2)}.{reverse[m.group(3)]}'] = value
            continue
        m = re.fullmatch(r'stages\.(\d+)\.downsample\.conv\.(weight|bias)', key)
        if m:
            out[f'backbone.network.{2 * int(m.group(1)) - 1}.proj.{m.group(2)}'] = value
        elif key.startswith('stem.conv.'):
            out['backbone.patch_embed.proj.' + key[len('stem.conv.'):]] = value
        elif key.startswith('head.norm.'):
            out[f'backbone.norm{2 * (num_stages - 1)}.' + key[len('head.norm.'):]] = value
        elif key.startswith('head.fc.'):
            out[key] = value
        else:
            raise CheckpointError(f'{key}: no mmpretrain equivalent')
    return out


def _preview(mapping, n=4):
    keys = list(mapping.keys())
    more = f', ... ({len(keys)} keys)' if len(keys) > n else ''
    return ', '.join(str(k) for k in keys[:n]) + more
