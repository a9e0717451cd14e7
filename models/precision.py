"""The bf16 deploy form for CPUs: the folded model with bfloat16 weights, in channels_last.

    model = models.load_deploy('riformer_s12.deploy.safetensors', dtype='bf16')
    logits = model(images)            # fp32 or bf16 images in, bf16 logits out

On CPUs with AVX512-BF16 or AMX, oneDNN computes bf16 convolutions natively and fuses the
deploy blocks' GELU and residual add into them as in fp32 (`models/riformer.py`); there the
bf16 form is the fast one. Elsewhere (AVX2-only CPUs) bf16 is emulated: correct, but slower
than fp32, and `bf16_note()` says so. Accuracy: bf16 keeps 8 bits of mantissa, so logits
differ from fp32 by about 1e-2 relative; GroupNorm's statistics are computed in fp32 by
PyTorch's CPU kernel.
"""
import warnings
from typing import Optional

import torch
import torch.nn as nn

from .errors import CheckpointError

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}


def resolve_dtype(dtype) -> torch.dtype:
    """'fp32' / 'bf16' (or the torch dtypes) -> torch dtype; anything else is a CheckpointError."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]
    raise CheckpointError(f'dtype {dtype!r}: use one of {", ".join(DTYPES)} (int8 forms: models.quantize)')


def bf16_native() -> str:
    """The native bf16 instructions PyTorch uses on this CPU ('amx_bf16,avx512_bf16'), or ''."""
    from .cpu import cpu_bf16_support
    return cpu_bf16_support()


def bf16_note() -> Optional[str]:
    """Why the bf16 form would be slow on this CPU, or None where bf16 is native.

    Returns:
        None on CPUs with AVX512-BF16 / AMX that PyTorch uses, else a one-line note.

    Example:
        >>> import models
        >>> note = models.bf16_note()     # None on this project's development machine (avx512_bf16)
    """
    if bf16_native():
        return None
    return ('bf16 on this CPU is emulated (no AVX512-BF16/AMX, or PyTorch dispatches below AVX512): '
            'correct but slower than fp32; use the fp32 deploy form here')


def _cast_input(module, args):
    # The first argument (images) follows the weights' dtype, so callers can keep fp32 inputs.
    if args and torch.is_tensor(args[0]) and args[0].is_floating_point() and args[0].dtype != torch.bfloat16:
        return (args[0].to(torch.bfloat16),) + tuple(args[1:])
    return None


def to_bf16(model: nn.Module, channels_last: bool = True, warn: bool = True) -> nn.Module:
    """`model` (a deploy model, eval mode) with bf16 weights, in channels_last, in place; its
    inputs are cast to bf16 on the way in (a forward pre-hook on the top module only, so the
    blocks keep their fused path). Warns where bf16 would be emulated.

    Args:
        model: a deploy-form model (or any eval-mode CPU model).
        channels_last: put the weights in channels_last (what oneDNN's convolutions want).
        warn: warn when this CPU would emulate bf16.

    Returns:
        The same model.

    Example:
        >>> import timm, torch, models
        >>> m = models.to_bf16(models.reparameterize(timm.create_model('riformer_mini').eval()), warn=False)
        >>> m(torch.randn(1, 3, 32, 32)).dtype
        torch.bfloat16
    """
    note = bf16_note() if warn else None
    if note:
        warnings.warn(note, stacklevel=2)
    model = model.to(torch.bfloat16)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_cast_input)
    return model.eval()
