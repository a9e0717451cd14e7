"""Both GroupNorms of a RIFormer deploy block from one statistics pass over its input.

The deploy block is `y = x + GN1'(x); out = y + fc2(gelu(fc1(GN2(y))))`, with GN1' the norm that
holds the folded affine mixer and layer scale 1 (weight w, bias beta) and GN2 without affine (its
affine is folded into fc1). Per sample, GN1' is a per-channel affine map of x, so y is one too:

    y = a * x + b,   a = 1 + w / s,   b = beta - w * mu / s      (mu, s: x's mean and std over C, H, W)

Its channel means are `a * m_c + b` and its channel variances `a^2 * v_c` (m_c, v_c: x's channel
means and variances), so y's statistics follow from x's, combined over channels exactly
(mean of the variances plus variance of the means), and GN2(y) = g * x + d per sample and channel.
One reduction over x (per-channel mean and variance in float32, by the two-pass algorithm: no
E[x^2] - E[x]^2) gives both norms; one pointwise pass writes y (for the residual) and GN2(y) (for
fc1, or its int8 quantization).

`one_pass_norms` is written with standard ops: `torch.compile` (Inductor) and `torch.export`
(PT2E int8) trace it into reduction loops over x and one pointwise loop that writes both outputs.
Eager PyTorch has no op that writes both (var_mean plus two addcmul is slower than ATen's
GroupNorm), so the eager deploy path runs the same math compiled by Inductor, once per input shape,
dtype and layout (`eager_norms`), as two kernels: the statistics and the four (N, C) coefficients,
then the pointwise pass (left to itself, Inductor recomputes the coefficients for every element,
which made the 320- and 512-channel stages slower than ATen's two GroupNorms). Where Inductor
cannot compile, the blocks keep the two GroupNorms.
"""
import warnings
from typing import Callable, Dict, Optional, Tuple

import torch

__all__ = ['NORM_PATHS', 'apply_coefficients', 'check_norm_path', 'channel_moments', 'combine_channels',
           'coefficients', 'eager_norms', 'one_pass_norms']

# 'auto': one pass where torch.compile or torch.export traces the block (Inductor's GroupNorm
# kernels are the slow part of the compiled and PT2E int8 forms), the two GroupNorms in eager
# PyTorch (ATen's GroupNorm is about as fast as the one-pass kernels on the CPUs measured, which
# would have to be compiled at the first call); 'one-pass' everywhere; 'two-norms' nowhere.
NORM_PATHS = ('auto', 'one-pass', 'two-norms')


def check_norm_path(path: str) -> str:
    if path not in NORM_PATHS:
        raise ValueError(f'unknown deploy norm path {path!r}; use one of {", ".join(NORM_PATHS)}')
    return path


def channel_moments(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample and channel: mean and (biased) variance over H, W, in float32, by two passes
    (the mean, then the mean squared deviation from it). (N, C) each."""
    xf = x.float()
    mean = xf.mean((2, 3), keepdim=True)
    return mean.flatten(1), (xf - mean).square().mean((2, 3))


def combine_channels(mean: torch.Tensor, var: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance over C, H, W from the channels' (equal-sized groups): the mean of the
    means, and the mean of the variances plus the variance of the means. (N, 1) each."""
    mu = mean.mean(1, keepdim=True)
    return mu, (var + (mean - mu) ** 2).mean(1, keepdim=True)


def coefficients(mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 eps1: float, eps2: float):
    """From x's channel moments (N, C): (a, b) with y = a * x + b = x + GN1'(x), and (g, d) with
    GN2(y) = g * x + d. Each (N, C), float32."""
    w, beta = weight.float(), bias.float()
    mu, var_x = combine_channels(mean, var)
    r1 = torch.rsqrt(var_x + eps1)
    a = 1 + w * r1
    b = beta - w * (mu * r1)
    mu_y, var_y = combine_channels(a * mean + b, a * a * var)
    r2 = torch.rsqrt(var_y + eps2)
    return a, b, a * r2, (b - mu_y) * r2


def one_pass_norms(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps1: float = 1e-5,
                   eps2: float = 1e-5) -> Tuple[torch.Tensor, torch.Tensor]:
    """`(x + GN1'(x), GN2(x + GN1'(x)))` for an NCHW map x, GN1' = GroupNorm(1) with `weight` and
    `bias`, GN2 = GroupNorm(1) without affine; statistics in float32, outputs in x's dtype.

    Args:
        x: the block input (N, C, H, W), fp32 or bf16, any memory format.
        weight, bias: GN1's affine (C,).
        eps1, eps2: the two norms' eps.

    Returns:
        (y, z): the residual stream after the first branch and the second norm's output.

    Example:
        >>> import torch, torch.nn.functional as F
        >>> x, w, b = torch.randn(2, 8, 5, 5), torch.randn(8), torch.randn(8)
        >>> y, z = one_pass_norms(x, w, b)
        >>> torch.allclose(z, F.group_norm(x + F.group_norm(x, 1, w, b), 1), atol=1e-5)
        True
    """
    return apply_coefficients(x, _stacked_coefficients(x, weight, bias, eps1, eps2))


def _stacked_coefficients(x, weight, bias, eps1: float, eps2: float) -> torch.Tensor:
    """(a, b, g, d) of `coefficients` stacked into one (4, N, C) float32 tensor."""
    return torch.stack(coefficients(*channel_moments(x), weight, bias, eps1, eps2))


def apply_coefficients(x: torch.Tensor, coeffs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The pointwise pass: (a * x + b, g * x + d) in x's dtype, from (4, N, C) coefficients."""
    n, c = x.shape[:2]
    a, b, g, d = (t.view(n, c, 1, 1) for t in coeffs.unbind(0))
    xf = x.float()
    return (xf * a + b).to(x.dtype), (xf * g + d).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# The eager path: one_pass_norms compiled by Inductor per input shape, dtype and layout

_KERNELS: Dict[tuple, Optional[Callable]] = {}
_FAILED = []


def _key(x: torch.Tensor, weight: torch.Tensor, eps1: float, eps2: float) -> tuple:
    return tuple(x.shape), tuple(x.stride()), x.dtype, weight.dtype, float(eps1), float(eps2)


def _inductor(fn: Callable, example: list) -> Callable:
    # An aten graph of fixed shapes handed to Inductor directly: no Dynamo guards per call and no
    # recompile limit; the cache key above plays the guards' part.
    from torch.fx.experimental.proxy_tensor import make_fx
    return torch._inductor.compile(make_fx(fn)(*example), example)


def _compile(x: torch.Tensor, weight: torch.Tensor, eps1: float, eps2: float) -> Callable:
    """The two kernels for inputs like `x`: statistics and coefficients, then the pointwise pass."""
    with torch.inference_mode(False), torch.no_grad():
        example = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype).normal_()
        w, b = torch.ones_like(weight, device='cpu'), torch.zeros_like(weight, device='cpu')
        stats = _inductor(lambda t, w, b: _stacked_coefficients(t, w, b, eps1, eps2), [example, w, b])
        apply = _inductor(apply_coefficients, [example, stats(example, w, b)])
    return lambda t, w, b: apply(t, stats(t, w, b))


def eager_norms(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps1: float, eps2: float):
    """`one_pass_norms(x, weight, bias, eps1, eps2)` run by Inductor's kernels (compiled at the
    first call with this shape, dtype and layout), or None where Inductor could not compile
    (then the caller runs the two GroupNorms; warned once)."""
    key = _key(x, weight, eps1, eps2)
    kernel = _KERNELS.get(key, False)
    if kernel is False:
        try:
            kernel = _compile(x, weight, eps1, eps2)
        except Exception as e:          # no C++ compiler, an Inductor limitation: keep ATen's norms
            kernel = None
            if not _FAILED:
                _FAILED.append(e)
                warnings.warn(f'one-pass deploy norms unavailable ({type(e).__name__}: {str(e)[:120]}); '
                              'the deploy blocks run their two GroupNorms', RuntimeWarning, stacklevel=3)
        _KERNELS[key] = kernel
    if kernel is None:
        return None
    y, z = kernel(x, weight, bias)
    return y, z
