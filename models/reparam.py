"""Model-level reparameterization and the equivalence check that guards every deploy file."""
from typing import Dict

import torch
import torch.nn as nn

from .riformer import RIFormerBlock

# The folds each target form applies, in the words written into deploy metadata.
FOLDS = {
    'plain': ['affine->norm1'],
    'deploy': ['affine->norm1', 'layer_scale1->norm1', 'norm2->mlp.fc1', 'layer_scale2->mlp.fc2'],
}


def reparameterize(model: nn.Module, form: str = 'deploy') -> nn.Module:
    """Fold every RIFormer block of `model` (in place) into `form` and return the model.
    Repeating the call, or calling it on a model already in that form, changes nothing."""
    blocks = [m for m in model.modules() if isinstance(m, RIFormerBlock)]
    if not blocks:
        raise ValueError(f'{type(model).__name__} has no RIFormer blocks to reparameterize')
    for block in blocks:
        block.reparameterize(form)
    return model


def relative_error(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """max |a - b| / max |a|: an error relative to the output's scale (elementwise relative
    error is meaningless where outputs cross zero). NaN anywhere gives NaN."""
    reference, candidate = reference.detach().double(), candidate.detach().double()
    diff = (reference - candidate).abs().max()
    scale = reference.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return float(diff / scale)


@torch.no_grad()
def compare_forms(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> Dict[str, float]:
    """Relative error of `candidate` against `reference` for the logits (when the models have a
    classifier) and for every stage output."""
    ref_final, ref_stages = reference.forward_intermediates(x)
    cand_final, cand_stages = candidate.forward_intermediates(x)
    errors = {f'stage{i}': relative_error(a, b) for i, (a, b) in enumerate(zip(ref_stages, cand_stages))}
    if reference.num_classes > 0:
        errors['logits'] = relative_error(reference.forward_head(ref_final), candidate.forward_head(cand_final))
    return errors
