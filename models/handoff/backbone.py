"""One entry point for every deploy backbone: a checkpoint path or an efficient backbone name."""
from pathlib import Path
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from ..checkpoint import load_deploy, read_tensors
from ..efficient import EFFICIENT_NAMES, FORMAT as EFFICIENT_FORMAT, as_features, create_deploy, load_efficient_deploy
from ..errors import CheckpointError
from ..riformer import ARCHS


def backbone_names() -> List[str]:
    return list(EFFICIENT_NAMES)


def read_metadata(path) -> dict:
    """The safetensors metadata of a checkpoint (empty for torch files)."""
    from safetensors import SafetensorError, safe_open
    path = Path(path)
    if path.suffix != '.safetensors':
        return {}
    try:
        with safe_open(str(path), framework='pt') as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}    # read_tensors gives the one-line error


def _as_source(source) -> str:
    # YAML parsers hand strings over verbatim or quoted ("'path'"): accept both.
    text = str(source).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
        text = text[1:-1]
    return text


def build_backbone(source, out_indices: Optional[Sequence[int]] = None, weights: Optional[str] = None) -> nn.Module:
    """Deploy backbone as a timm FeatureListNet (a list of stage outputs, `feature_info`), eval mode."""
    source = _as_source(source)
    if source in EFFICIENT_NAMES:
        return as_features(create_deploy(source, weights=weights), out_indices)
    if source in ARCHS:
        raise CheckpointError(
            f'{source}: a RIFormer needs its deploy checkpoint (write one with tools/reparam.py), not a name')
    if weights is not None:
        raise CheckpointError(f'weights= is only for timm backbone names ({", ".join(EFFICIENT_NAMES)})')
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(
            f'{source}: no such file, and not a backbone name (names: {", ".join(EFFICIENT_NAMES)}; '
            f'RIFormer: a deploy checkpoint path)')
    metadata = read_metadata(path)
    if metadata.get('format') == EFFICIENT_FORMAT:
        tensors, metadata = read_tensors(path)
        return load_efficient_deploy(path, metadata, tensors, features_only=True, out_indices=out_indices)
    return load_deploy(path, features_only=True, out_indices=out_indices)


class DeployBackbone(nn.Module):
    """A deploy backbone as one module: image -> list of stage outputs (`out_indices`).

    Detector parsers build it from YAML arguments: `source` (checkpoint path or name),
    `out_indices`, `weights` (local timm weights for a name). `channels` and `strides` describe
    the outputs. It holds no BatchNorm, so detector code that resets BN settings cannot alter it.
    """

    def __init__(self, source, out_indices: Optional[Sequence[int]] = None, weights: Optional[str] = None):
        super().__init__()
        self.source = _as_source(source)
        self.body = build_backbone(source, out_indices, weights)
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.body(x)
