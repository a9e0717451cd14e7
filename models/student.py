"""Students: a timm model built for distillation, optionally from a teacher's weights, with the
paper's identity mixer, or from a checkpoint of its own."""
from typing import Mapping, Optional, Union

import timm
import torch
import torch.nn as nn

from .checkpoint_io import load_checked, read_state_dict
from .riformer import ARCHS, RIFormer, RIFormerBlock
from .teachers import adapt_head, init_from_teacher


def create_student(arch: str, num_classes: int, drop_path: float = 0.0, mixer: str = 'affine',
                   teacher_weights: Union[str, Mapping, None] = None,
                   checkpoint: Optional[str] = None, layer_scale_init: Optional[float] = None) -> nn.Module:
    """A student in training mode, built in the trainer's order: timm model, teacher weights,
    mixer, own checkpoint.

    Args:
        arch: a timm model name (RIFormer names get the deploy path).
        num_classes: classifier width.
        drop_path: stochastic depth rate.
        mixer: 'affine' (RIFormer's learnable mixer) or 'identity' (`fix_identity_mixer`;
            a RIFormer only).
        teacher_weights: a PoolFormer checkpoint path or state dict to copy every weight but the
            affine mixers from (`init_from_teacher`).
        checkpoint: the student's own weights (any layout `read_state_dict` reads), loaded last.
        layer_scale_init: initial layer scale of every block (None: the architecture's, 1e-5 or
            1e-6 as in PoolFormer); RIFormer and timm's MetaFormer (PoolFormer) students alike.

    Returns:
        The model.

    Raises:
        ValueError: `mixer` is not affine / identity, or identity for a non-RIFormer.
        CheckpointError: `teacher_weights` or `checkpoint` does not fit the model.

    Example:
        >>> import models
        >>> student = models.create_student('riformer_mini', 10, mixer='identity')
        >>> student.stages[0].blocks[0].token_mixer.affine.weight.requires_grad
        False
    """
    if mixer not in ('affine', 'identity'):
        raise ValueError(f'mixer {mixer!r}: use affine or identity')
    extra = {}
    if layer_scale_init is not None:
        # RIFormer's argument is singular, timm's MetaFormer (PoolFormer) takes one per stage.
        extra = ({'layer_scale_init_value': layer_scale_init} if arch.split('.')[0] in ARCHS
                 else {'layer_scale_init_values': layer_scale_init})
    student = timm.create_model(arch, num_classes=num_classes, drop_path_rate=drop_path, **extra)
    if teacher_weights is not None:
        init_from_teacher(student, teacher_weights)
    if mixer == 'identity':
        if not isinstance(student, RIFormer):
            raise ValueError(f'the identity mixer needs a RIFormer student, not {arch}')
        fix_identity_mixer(student)
    if checkpoint:
        what = f'student checkpoint {checkpoint}'
        sd, head_norm_first = read_state_dict(checkpoint)
        load_checked(student, adapt_head(student, head_norm_first, sd, what), what=what)
    return student


@torch.no_grad()
def fix_identity_mixer(model: nn.Module) -> nn.Module:
    """Fix every RIFormer block's mixer to the identity and freeze it (the paper's "identity"
    student, Tables 1 and 7: the block is x + ls1 * norm1(x)).

    affine(y) - y with s = 2, t = 0 is exactly y: an identity mixer in RIFormer's own
    parameterisation, so the student saves, reparameterizes and deploys like any other.

    Args:
        model: a model holding RIFormer blocks (changed in place).

    Returns:
        `model`.

    Example:
        >>> import timm, models
        >>> m = models.fix_identity_mixer(timm.create_model('riformer_mini'))
        >>> float(m.stages[0].blocks[0].token_mixer.affine.weight[0])
        2.0
    """
    for block in model.modules():
        if isinstance(block, RIFormerBlock):
            block.token_mixer.affine.weight.fill_(2.)
            block.token_mixer.affine.bias.zero_()
            block.token_mixer.requires_grad_(False)
    return model
