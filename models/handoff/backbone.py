"""One entry point for every deploy backbone: a checkpoint path or an efficient backbone name."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn

from ..checkpoint import read_metadata  # noqa: F401  (part of the hand-off API)
from ..efficient import EFFICIENT_NAMES
from ..loader import clean_source, load_model


def backbone_names() -> List[str]:
    return list(EFFICIENT_NAMES)


def build_backbone(source, out_indices: Optional[Sequence[int]] = None, weights: Optional[str] = None) -> nn.Module:
    """Deploy backbone as a timm FeatureListNet (a list of stage outputs, `feature_info`), eval mode."""
    return load_model(source, deploy=True, features_only=True, out_indices=out_indices, weights=weights)


class DeployBackbone(nn.Module):
    """A deploy backbone as one module: image -> list of stage outputs (`out_indices`).

    Detector parsers build it from YAML arguments: `source` (checkpoint path or name),
    `out_indices`, `weights` (local timm weights for a name). `channels` and `strides` describe
    the outputs. It holds no BatchNorm, so detector code that resets BN settings cannot alter it.
    """

    def __init__(self, source, out_indices: Optional[Sequence[int]] = None, weights: Optional[str] = None):
        super().__init__()
        self.source = clean_source(source)
        self.body = build_backbone(source, out_indices, weights)
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.body(x)
