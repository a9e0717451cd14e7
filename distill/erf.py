"""Effective receptive fields (Luo et al., 2016): how far from a unit the input still moves it.

For a block's output map, take the unit at its spatial centre, sum it over channels, and
differentiate with respect to the input image; the absolute gradient, summed over the input's
colour channels and averaged over images, is the ERF, normalised to sum 1. A token mixer that
pools widens it; a RIFormer block has no spatial operator, so only the stem and the
downsampling convolutions spread it, unless training taught those a wider prior. Two numbers
summarise a map: the RMS radius about its centroid, and the share of pixels that holds half of
the mass (small = concentrated).
"""
from dataclasses import dataclass
from typing import List

import torch
import torch.nn as nn

from .recorders import FeatureRecorder


@dataclass
class ERF:
    map: torch.Tensor        # [H, W], float64, sums to 1
    rms_radius: float        # pixels
    area50: float            # share of the image's pixels holding 50 % of the mass

    def to_dict(self):
        return {'rms_radius': self.rms_radius, 'area50': self.area50, 'map': self.map.tolist()}


def effective_receptive_field(model: nn.Module, images: torch.Tensor, block: str) -> ERF:
    """The ERF of the centre unit of `block`'s output over `images` [N, C, H, W] (eval mode:
    samples are independent, so one backward gives every image's gradient)."""
    model.eval()
    images = images.detach().clone().float().requires_grad_(True)
    with torch.enable_grad(), FeatureRecorder(model, [block], 'model') as rec:
        model(images)
        (out,) = rec.take()
        if out.dim() != 4:
            raise ValueError(f'{block}: expected a [N, C, H, W] map, got shape {list(out.shape)}')
        h, w = out.shape[-2:]
        out[:, :, h // 2, w // 2].sum().backward()
    grad = images.grad.detach().abs().sum(1).mean(0).double()
    return summarise(grad)


def summarise(grad: torch.Tensor) -> ERF:
    total = grad.sum()
    if total <= 0:
        raise ValueError('the gradient is zero everywhere: the unit does not depend on the input')
    m = grad / total
    ys = torch.arange(m.shape[0], dtype=m.dtype)[:, None]
    xs = torch.arange(m.shape[1], dtype=m.dtype)[None, :]
    cy, cx = (m * ys).sum(), (m * xs).sum()
    rms = float(((m * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum()).sqrt())
    ordered = m.flatten().sort(descending=True).values
    holding = int(torch.searchsorted(ordered.cumsum(0), torch.tensor(0.5, dtype=m.dtype))) + 1
    return ERF(m, rms, holding / m.numel())


def mean_map(maps: List[List[List[float]]]) -> torch.Tensor:
    """The mean of several runs' normalised ERF maps (stored as nested lists)."""
    return torch.tensor(maps, dtype=torch.float64).mean(0)
