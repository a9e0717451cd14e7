"""How close a student is to its teacher, measured on a validation set.

`collect` runs a model over a loader and keeps its logits and the outputs of named blocks
(through `FeatureRecorder`, the same hooks the imitation losses use); `compare` turns two such
collections into prediction agreement and, per block, two feature similarities:

* linear CKA (Kornblith et al. 2019): invariant to rotations and isotropic scaling of the
  features, so it asks "do they encode the same thing", not "are they the same numbers";
* normalised MSE, sum (s - t)^2 / sum t^2: what L'_in actually optimises (0 = identical,
  1 = as far as predicting zeros).
"""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from .metrics import accuracy, agreement
from .recorders import FeatureRecorder


@dataclass
class Collected:
    logits: torch.Tensor                    # [N, classes]
    targets: torch.Tensor                   # [N]
    features: Dict[str, torch.Tensor] = field(default_factory=dict)   # block -> [N, C*H*W]


@torch.no_grad()
def collect(model: nn.Module, loader, blocks: Sequence[str], owner: str = 'model') -> Collected:
    """Logits, targets and flattened block outputs of `model` over `loader` (eval mode, CPU)."""
    model.eval()
    logits, targets, feats = [], [], {b: [] for b in blocks}
    with FeatureRecorder(model, blocks, owner) as rec:
        for images, labels in loader:
            logits.append(model(images).float())
            targets.append(labels)
            for name, out in zip(rec.names, rec.take()):
                feats[name].append(out.float().flatten(1))
    return Collected(torch.cat(logits), torch.cat(targets), {b: torch.cat(v) for b, v in feats.items()})


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature sets [N, D1], [N, D2] over the same N samples.

    Computed from the N x N Gram matrices (cheaper than D x D for wide feature maps) in float64:
    CKA = <Kx, Ky> / (|Kx| |Ky|) with Kx = Xc Xc^T and Xc the column-centred features.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f'CKA needs the same samples: {x.shape[0]} vs {y.shape[0]}')
    x = x.double().flatten(1)
    y = y.double().flatten(1)
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    kx, ky = x @ x.T, y @ y.T
    denom = kx.norm() * ky.norm()
    return float((kx * ky).sum() / denom) if denom > 0 else float('nan')


def normalised_mse(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """sum (s - t)^2 / sum t^2 (the features must have the same shape)."""
    if student.shape != teacher.shape:
        raise ValueError(f'normalised MSE needs equal shapes: {list(student.shape)} vs {list(teacher.shape)}')
    s, t = student.double(), teacher.double()
    return float((s - t).pow(2).sum() / t.pow(2).sum().clamp_min(1e-30))


def compare(student: Collected, teacher: Collected) -> Dict[str, object]:
    """Student top-1, teacher top-1, top-1 agreement (%) and per-block CKA / normalised MSE."""
    if not torch.equal(student.targets, teacher.targets):
        raise ValueError('student and teacher were collected over different data')
    blocks: List[str] = [b for b in student.features if b in teacher.features]
    return {
        'top1': accuracy(student.logits, student.targets),
        'teacher_top1': accuracy(teacher.logits, teacher.targets),
        'agreement': agreement(student.logits, teacher.logits),
        'cka': {b: linear_cka(student.features[b], teacher.features[b]) for b in blocks},
        'nmse': {b: normalised_mse(student.features[b], teacher.features[b]) for b in blocks},
        'n': int(student.targets.numel()),
    }
