"""Deploy RIFormer -> a checkpoint for mmpretrain's own RIFormer (deploy=True), e.g. inside mmdet.

mmpretrain's deploy block is `x + ls1 * norm_reparam(x)`, `x + ls2 * mlp(norm2(x))` (only the
affine is folded). Our deploy form folded more, so it is written back *un-folded*, which is exact:

    norm_reparam <- our norm1 (already holds affine and layer scale 1);  layer_scale_1 <- 1
    norm2        <- weight 1, bias 0 (its affine is already inside mlp.fc1); layer_scale_2 <- 1
    mlp.fc1/fc2  <- ours (fc1 holds norm2's affine, fc2 holds layer scale 2)

mmpretrain (and so mmdet with `out_indices=(0, 2, 4, 6)`) also applies an output norm
`backbone.norm{i}` (GroupNorm, one group) to every returned stage. Those norms are not part of
our backbone: they are written as weight 1, bias 0, so mmdet's features are exactly our stage
outputs normalised per sample (GroupNorm(1) without affine); mmdet then trains them with the
detector. Exception: for a checkpoint with the original head (`head_norm_first`), `norm6` is
that head's norm and `head.fc` the classifier, which makes mmpretrain's classifier exact too;
timm-style heads (pool, then LayerNorm) have no mmpretrain equivalent and are left out.
"""
from pathlib import Path
from typing import Dict

import torch

from ..checkpoint_io import read_checkpoint
from ..errors import CheckpointError


def to_mmpretrain_deploy(state_dict: Dict[str, torch.Tensor], num_stages: int,
                         head_norm_first: bool) -> Dict[str, torch.Tensor]:
    """Our deploy-form tensors (timm names) -> mmpretrain RIFormer deploy names."""
    out = {}
    dims = {}
    for key, value in state_dict.items():
        parts = key.split('.')
        if key.startswith('stem.conv.'):
            out[f'backbone.patch_embed.proj.{parts[-1]}'] = value
        elif parts[0] == 'stages' and parts[2] == 'downsample':
            out[f'backbone.network.{2 * int(parts[1]) - 1}.proj.{parts[-1]}'] = value
        elif parts[0] == 'stages' and parts[2] == 'blocks':
            stage, block, rest = int(parts[1]), parts[3], '.'.join(parts[4:])
            prefix = f'backbone.network.{2 * stage}.{block}.'
            if rest.startswith('norm1.'):
                out[prefix + 'norm_reparam.' + parts[-1]] = value
                if parts[-1] == 'weight':
                    dim = value.numel()
                    dims[stage] = dim
                    out[prefix + 'layer_scale_1'] = torch.ones(dim, dtype=value.dtype)
                    out[prefix + 'layer_scale_2'] = torch.ones(dim, dtype=value.dtype)
                    out[prefix + 'norm2.weight'] = torch.ones(dim, dtype=value.dtype)
                    out[prefix + 'norm2.bias'] = torch.zeros(dim, dtype=value.dtype)
            elif rest.startswith('mlp.fc1.') or rest.startswith('mlp.fc2.'):
                out[prefix + rest] = value
            else:
                raise CheckpointError(f'{key}: not a deploy-form parameter')
        elif key.startswith('head.'):
            continue
        else:
            raise CheckpointError(f'{key}: no mmpretrain equivalent')
    for stage in range(num_stages):
        dim = dims[stage]
        out[f'backbone.norm{2 * stage}.weight'] = torch.ones(dim)
        out[f'backbone.norm{2 * stage}.bias'] = torch.zeros(dim)
    last = 2 * (num_stages - 1)
    if head_norm_first and 'head.fc.weight' in state_dict:
        out[f'backbone.norm{last}.weight'] = state_dict['head.norm.weight']
        out[f'backbone.norm{last}.bias'] = state_dict['head.norm.bias']
        out['head.fc.weight'] = state_dict['head.fc.weight']
        out['head.fc.bias'] = state_dict['head.fc.bias']
    return out


def export_mmpretrain(source, out) -> str:
    """Write `source` (our deploy checkpoint) as an mmpretrain checkpoint `{'state_dict': ...,
    'meta': ...}` at `out` (torch.save of plain tensors). Returns a one-line summary."""
    ckpt = read_checkpoint(source)
    if ckpt.config.form != 'deploy':
        raise CheckpointError(f'{source}: is a {ckpt.config.form}-form checkpoint; export needs the deploy form')
    num_stages = len(ckpt.config.depths)
    state_dict = to_mmpretrain_deploy(ckpt.state_dict, num_stages, ckpt.config.head_norm_first)
    arch = ckpt.config.arch.replace('riformer_', '')
    meta = {'arch': arch, 'deploy': True, 'out_indices': [2 * i for i in range(num_stages)],
            'source': str(Path(source).name), 'classifier': 'head.fc.weight' in state_dict}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({'meta': meta, 'state_dict': state_dict}, out)
    return (f'mmpretrain RIFormer arch={arch!r} deploy=True, {len(state_dict)} tensors; '
            f'classifier {"included (original head)" if meta["classifier"] else "left out (timm head has no mmpretrain equivalent)"}; '
            f'load in mmdet with init_cfg=dict(type="Pretrained", checkpoint=..., prefix="backbone.")')
