"""One entry point for every deploy backbone: a checkpoint path or an efficient backbone name."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..checkpoint_io import ModelConfig, read_checkpoint, read_metadata
from ..efficient import EFFICIENT_NAMES, FORMAT as EFFICIENT_FORMAT, as_features, stored_config
from ..errors import CheckpointError
from ..loader import clean_source, load_model
from ..riformer import ARCHS, arch_name


def backbone_names() -> List[str]:
    return list(EFFICIENT_NAMES)


def build_backbone(source, out_indices: Optional[Sequence[int]] = None, weights: Optional[str] = None) -> nn.Module:
    """Deploy backbone as a timm FeatureListNet (a list of stage outputs, `feature_info`), eval mode."""
    return load_model(source, deploy=True, features_only=True, out_indices=out_indices, weights=weights)


def _riformer_arch(source, out_indices, weights) -> Tuple[nn.Module, object]:
    """A deploy RIFormer of a named (or custom, as a dict) architecture: weights from a deploy
    file when given, else freshly initialised (a rebuild from a detector checkpoint, which then
    loads the trained weights)."""
    if isinstance(source, dict):
        config = ModelConfig(depths=tuple(source['depths']), dims=tuple(source['dims']), num_classes=0,
                             in_chans=int(source.get('in_chans', 3)),
                             mlp_ratio=float(source.get('mlp_ratio', 4.)), form='deploy')
    else:
        depths, dims, _ = ARCHS[source]
        config = ModelConfig(depths=depths, dims=dims, num_classes=0, form='deploy')
    if weights is None:
        return as_features(config.build().eval(), out_indices), config
    body = build_backbone(weights, out_indices)
    ckpt_config = read_checkpoint(weights).config
    if (ckpt_config.depths, ckpt_config.dims) != (config.depths, config.dims):
        raise CheckpointError(
            f'{weights}: is {ckpt_config.arch} (depths {list(ckpt_config.depths)}, dims {list(ckpt_config.dims)}), '
            f'the model YAML names {source}')
    return body, ckpt_config


def _arch_record(config) -> object:
    """How a YAML names a RIFormer architecture: its registered name, or its shape as a dict."""
    name = arch_name(config.depths, config.dims)
    if name is not None and config.mlp_ratio == 4. and config.in_chans == 3:
        return name
    return {'depths': list(config.depths), 'dims': list(config.dims), 'mlp_ratio': config.mlp_ratio,
            'in_chans': config.in_chans}


class DeployBackbone(nn.Module):
    """A deploy backbone as one module: image -> list of stage outputs (`out_indices`).

    Detector parsers build it from YAML arguments `[source, out_indices, weights]`:

    * `source` a RIFormer architecture (`riformer_s12`, or a dict of depths/dims for a custom
      one) or an efficient backbone name, with `weights` a deploy file (for a name of an
      efficient backbone also a local timm checkpoint). Without `weights` the architecture is
      built with fresh weights: what a rebuild from a detector checkpoint needs (fine-tune,
      resume), since the checkpoint's weights are loaded into it afterwards.
    * `source` a deploy file: architecture and weights from the file.

    `arch` and `out_indices` record the architecture for a checkpoint's YAML (`portable_args`),
    so that a rebuild never needs the deploy file. It holds no BatchNorm, so detector code that
    resets BN settings cannot alter it.
    """

    def __init__(self, source, out_indices: Optional[Sequence[int]] = None, weights: Optional[str] = None):
        super().__init__()
        source = source if isinstance(source, dict) else clean_source(source)
        weights = clean_source(weights) if weights is not None else None
        self.source = source if weights is None else weights
        if isinstance(source, dict) or source in ARCHS:
            self.body, config = _riformer_arch(source, out_indices, weights)
            self.arch = _arch_record(config)
        elif source in EFFICIENT_NAMES and weights is not None and _is_efficient_deploy(weights):
            self.body, self.arch = build_backbone(weights, out_indices), _file_arch(weights)
            if self.arch != source:
                raise CheckpointError(f'{weights}: is a {self.arch} deploy file, the model YAML names {source}')
        else:
            self.body = build_backbone(source, out_indices, weights)
            self.arch = source if source in EFFICIENT_NAMES else _file_arch(source)
        self.out_indices = [int(i) for i in self.body.feature_info.out_indices]
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def portable_args(self) -> list:
        """YAML arguments that rebuild this architecture without any file."""
        return [self.arch, list(self.out_indices)]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.body(x)


def _is_efficient_deploy(path) -> bool:
    return read_metadata(path).get('format') == EFFICIENT_FORMAT


def _file_arch(path) -> object:
    metadata = read_metadata(path)
    if metadata.get('format') == EFFICIENT_FORMAT:
        return stored_config(path, metadata)[0]
    return _arch_record(read_checkpoint(path).config)
