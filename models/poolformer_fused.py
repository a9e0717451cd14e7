"""A fused CPU inference path for timm's PoolFormer (v1) blocks: the frozen teacher's forward.

The block computes x + ls1 * (pool(norm1(x)) - norm1(x)); x + ls2 * fc2(gelu(fc1(norm2(x)))).
`fuse_poolformer(model)` swaps each such block for a `PoolFormerInferenceBlock` that holds the
very same child modules (so module names, the state dict and recorders' hooks on the children
are unchanged) and, for eval-mode fp32 CPU calls without autograd, runs it like the RIFormer
deploy form's fused path (`models/riformer.py`), in fp32 or bf16:

* fc1 + GELU and fc2 + residual add are single oneDNN convolutions with post-ops, with layer
  scale 2 folded into fc2's weights per call (a C x 4C product, negligible next to the conv);
* the pooling mixer writes its output once: the pool's result is turned into pool - y in place
  and added to the residual with layer scale 1 in one `addcmul`, instead of separate
  subtract, scale and add passes.

Same ops in the same order up to the folded scales: exact to float rounding (in bf16, to
bf16 rounding: PoolFormer-S12 teacher forward 0.105 s -> 0.082 s at batch 16 on AMX). A child that
something observes through hooks (a feature recorder on `norm1` or `token_mixer`) is still
called as a module, so the recorded tensor is the one the reference forward would produce.
"""
import contextlib
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.metaformer import MetaFormerBlock, Pooling, Scale

from .riformer import _ONEDNN_FUSION, _observed

__all__ = ['PoolFormerInferenceBlock', 'fuse_poolformer', 'fused_blocks', 'reference_forward', 'set_fused']


# oneDNN's fused bf16 convolutions need AVX-512 (BW, VL, DQ); on AVX2-only CPUs they raise, while
# plain bf16 convolutions still run (emulated), so a bf16 teacher there takes the reference forward.
_ONEDNN_BF16 = _ONEDNN_FUSION and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _fused_cpu_inference(x: torch.Tensor) -> bool:
    """Eager CPU inference in fp32 or bf16 (a bf16 teacher: oneDNN fuses the post-ops in bf16
    too, where the CPU has it); autograd, tracing, torch.compile and other devices take the
    reference forward."""
    return (
        _ONEDNN_FUSION and x.device.type == 'cpu'
        and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _ONEDNN_BF16))
        and x.dim() == 4 and not torch.is_grad_enabled() and torch.backends.mkldnn.enabled
        and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
    )


def _scale_vector(layer: nn.Module) -> Optional[torch.Tensor]:
    return layer.scale if isinstance(layer, Scale) else None


def _fusable(block: nn.Module) -> bool:
    mlp = getattr(block, 'mlp', None)
    return (
        isinstance(block, MetaFormerBlock) and isinstance(block.token_mixer, Pooling)
        and isinstance(block.res_scale1, nn.Identity) and isinstance(block.res_scale2, nn.Identity)
        and all(isinstance(block.get_submodule(n), (Scale, nn.Identity)) for n in ('layer_scale1', 'layer_scale2'))
        and isinstance(mlp.act, nn.GELU) and mlp.act.approximate == 'none'
        and isinstance(mlp.fc1, nn.Conv2d) and isinstance(mlp.fc2, nn.Conv2d)
        and mlp.fc1.bias is not None and mlp.fc2.bias is not None and isinstance(mlp.norm, nn.Identity)
    )


class PoolFormerInferenceBlock(nn.Module):
    """A PoolFormer (v1) block with a fused CPU inference path; built from a timm block, whose
    children it keeps. `fused = False` forces the reference forward."""

    def __init__(self, block: MetaFormerBlock):
        super().__init__()
        if not _fusable(block):
            raise ValueError('not a PoolFormer v1 block (pooling mixer, GELU MLP with biases, no res scale)')
        for name, child in block.named_children():
            self.add_module(name, child)
        self.fused = True

    def forward(self, x):
        if self.fused and not self.training and _fused_cpu_inference(x):
            return self._forward_fused(x)
        # timm's MetaFormerBlock.forward (res_scale is the identity in PoolFormer v1).
        x = x + self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x))))
        x = x + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))
        return x

    def _forward_fused(self, x):
        y = self.norm1(x)
        if _observed(self.token_mixer):
            mixed = self.token_mixer(y)
        else:
            pool = self.token_mixer.pool
            mixed = F.avg_pool2d(y, pool.kernel_size, pool.stride, pool.padding,
                                 count_include_pad=pool.count_include_pad).sub_(y)
        ls1 = _scale_vector(self.layer_scale1)
        x = x + mixed if ls1 is None else torch.addcmul(x, mixed, ls1.view(-1, 1, 1))

        fc1, fc2 = self.mlp.fc1, self.mlp.fc2
        w2, b2 = fc2.weight, fc2.bias
        ls2 = _scale_vector(self.layer_scale2)
        if ls2 is not None:
            w2, b2 = w2 * ls2.view(-1, 1, 1, 1), b2 * ls2
        one, zero = [1, 1], [0, 0]
        h = torch.ops.mkldnn._convolution_pointwise(
            self.norm2(x), fc1.weight, fc1.bias, zero, one, one, 1, 'gelu', [], 'none')
        return torch.ops.mkldnn._convolution_pointwise.binary(
            h, x, w2, b2, zero, one, one, 1, 'add', None, None, [], None)


def fuse_poolformer(model: nn.Module) -> int:
    """Swap every PoolFormer v1 block of `model` for a `PoolFormerInferenceBlock`, in place.
    Run it before registering hooks on the blocks themselves (a hook on a swapped block would
    stay on the old object); hooks on their children are kept.

    Args:
        model: a timm PoolFormer (v1), e.g. a teacher (`distill.teacher.prepare_teacher` calls this).

    Returns:
        How many blocks were swapped.

    Example:
        >>> import timm, models
        >>> models.fuse_poolformer(timm.create_model('poolformer_mini').eval())
        6
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _fusable(child):
                if child._forward_hooks or child._forward_pre_hooks:
                    raise RuntimeError(f'fuse_poolformer: block {name!r} already has hooks; fuse before recording')
                setattr(parent, name, PoolFormerInferenceBlock(child).train(child.training))
                count += 1
    return count


def set_fused(model: nn.Module, enable: bool = True) -> int:
    """Turn the fused CPU inference path of every fused block in `model` on or off: the blocks
    `fuse_poolformer` swapped in and RIFormer blocks (`RIFormer.set_fused` for a RIFormer).
    Off, they run the reference forward (for timing the reference, or checking against it).

    Args:
        model: any model; blocks without a fused path are left alone.
        enable: True (the default path) or False (reference forward).

    Returns:
        How many blocks were set.

    Example:
        >>> import timm, models
        >>> teacher = timm.create_model('poolformer_mini').eval()
        >>> models.fuse_poolformer(teacher), models.set_fused(teacher, False)
        (6, 6)
    """
    blocks = fused_blocks(model)
    for block in blocks:
        block.fused = enable
    return len(blocks)


def fused_blocks(model: nn.Module) -> list:
    """The blocks of `model` with a fused CPU inference path (`fuse_poolformer`'s, RIFormer's).

    Args:
        model: any model.

    Returns:
        The blocks, in module order; each has a `fused` flag.

    Example:
        >>> import timm, models
        >>> len(models.fused_blocks(timm.create_model('riformer_mini')))
        6
    """
    from .riformer import RIFormerBlock
    return [m for m in model.modules() if isinstance(m, (PoolFormerInferenceBlock, RIFormerBlock))]


@contextlib.contextmanager
def reference_forward(model: nn.Module):
    """Inside, every fused block of `model` runs its reference forward (e.g. for counting its
    operations): no oneDNN fusion, and RIFormer deploy blocks with their two GroupNorms as written
    (not the one-pass form); afterwards each is as it was.

    Args:
        model: any model; blocks without a fused path are left alone.

    Returns:
        A context manager that yields `model`.

    Example:
        >>> import timm, models
        >>> teacher = timm.create_model('poolformer_mini').eval()
        >>> _ = models.fuse_poolformer(teacher)
        >>> with models.reference_forward(teacher):
        ...     inside = [b.fused for b in models.fused_blocks(teacher)]
        >>> any(inside), all(b.fused for b in models.fused_blocks(teacher))
        (False, True)
    """
    blocks = fused_blocks(model)
    states = [(b.fused, getattr(b, 'norm_path', None)) for b in blocks]
    for block in blocks:
        block.fused = False
        if hasattr(block, 'norm_path'):
            block.norm_path = 'two-norms'
    try:
        yield model
    finally:
        for block, (fused, norm_path) in zip(blocks, states):
            block.fused = fused
            if norm_path is not None:
                block.norm_path = norm_path
