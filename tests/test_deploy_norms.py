"""One statistics pass for both GroupNorms of a deploy block (models/deploy_norms.py): the same
function as the two GroupNorms, to float rounding, on every registered architecture with
non-trivial weights, in fp32 and bf16, eager, compiled by Inductor and quantized by PT2E."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import models
from helpers import randomize
from models import deploy_norms, riformer

ARCHS = list(models.ARCHS)


def two_norms_f64(x, weight, bias, eps=1e-5):
    """The definition, in float64: y = x + GN1(x), z = GN2(y)."""
    x = x.double()
    y = x + F.group_norm(x, 1, weight.double(), bias.double(), eps)
    return y, F.group_norm(y, 1, None, None, eps)


def rel(a, b):
    return models.relative_error(a.double(), b.double())


def block_input(n, c, h, seed, offset=0.):
    # Channels with their own means and scales (offset adds a large common mean): the case where
    # E[x^2] - E[x]^2 in float32 loses the variance.
    g = torch.Generator().manual_seed(seed)
    means = offset + 3 * torch.randn(1, c, 1, 1, generator=g)
    scales = torch.rand(1, c, 1, 1, generator=g) * 2 + 0.05
    return means + scales * torch.randn(n, c, h, h, generator=g)


@pytest.mark.parametrize('c,h,offset', [(32, 8, 0.), (64, 14, 0.), (320, 7, 0.), (96, 5, 300.)])
def test_one_pass_norms_are_the_two_group_norms_to_float_rounding(c, h, offset):
    g = torch.Generator().manual_seed(c)
    weight, bias = 1 + 0.5 * torch.randn(c, generator=g), 0.5 * torch.randn(c, generator=g)
    x = block_input(3, c, h, seed=c, offset=offset)
    y_ref, z_ref = two_norms_f64(x, weight, bias)
    for layout in (torch.contiguous_format, torch.channels_last):
        y, z = deploy_norms.one_pass_norms(x.contiguous(memory_format=layout), weight, bias)
        assert y.dtype == z.dtype == torch.float32
        assert rel(y_ref, y) < 1e-6 and rel(z_ref, z) < 1e-5, (layout, rel(y_ref, y), rel(z_ref, z))
        assert y.is_contiguous(memory_format=layout) and z.is_contiguous(memory_format=layout)


def test_one_pass_norms_in_bf16_round_once():
    # bf16 in and out, statistics in float32: each output is the float64 result rounded to bf16
    # (relative rounding 2^-8), at least as close as ATen's two bf16 GroupNorms.
    c = 64
    g = torch.Generator().manual_seed(1)
    weight, bias = (1 + 0.5 * torch.randn(c, generator=g)).bfloat16(), (0.5 * torch.randn(c, generator=g)).bfloat16()
    x = block_input(2, c, 14, seed=2).bfloat16()
    y_ref, z_ref = two_norms_f64(x, weight, bias)
    y, z = deploy_norms.one_pass_norms(x, weight, bias)
    assert y.dtype == z.dtype == torch.bfloat16
    y_aten = F.group_norm(x, 1, weight, bias, 1e-5).add_(x)
    z_aten = F.group_norm(y_aten, 1, None, None, 1e-5)
    assert rel(y_ref, y) < 2 ** -8 and rel(z_ref, z) < 2 ** -8
    assert rel(z_ref, z) <= rel(z_ref, z_aten) * 1.5


def reference_and_deploy(arch, seed=0):
    model = randomize(timm.create_model(arch, num_classes=10), seed=seed).eval()
    deploy = models.reparameterize(model, inplace=False)
    reference = copy.deepcopy(deploy).set_fused(False).set_norm_path('two-norms')
    return reference, deploy


def stage_errors(reference, candidate, x):
    with torch.inference_mode():
        return models.compare_forms(reference, candidate, x)


@pytest.mark.parametrize('arch', ARCHS)
def test_every_arch_one_pass_is_the_reference_forward_in_fp32(arch):
    reference, deploy = reference_and_deploy(arch)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    paths = {
        'eager one-pass kernels': copy.deepcopy(deploy).set_norm_path('one-pass'),
        'one-pass in standard ops': copy.deepcopy(deploy).set_norm_path('one-pass').set_fused(False),
        'default (auto) eager': deploy,
    }
    for name, candidate in paths.items():
        errors = stage_errors(reference, candidate, x)
        assert max(errors.values()) < 1e-5, (name, errors)


@pytest.mark.skipif(not riformer._ONEDNN_BF16, reason='oneDNN fuses bf16 only on AVX-512 CPUs')
@pytest.mark.parametrize('arch', ARCHS)
def test_every_arch_one_pass_is_the_reference_forward_in_bf16(arch):
    reference, deploy = reference_and_deploy(arch)
    x = (torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 + 0.5).bfloat16()
    reference = models.to_bf16(reference, warn=False)
    one_pass = models.to_bf16(copy.deepcopy(deploy).set_norm_path('one-pass'), warn=False)
    fp32 = copy.deepcopy(deploy).set_norm_path('two-norms')
    with torch.inference_mode():
        want, got, exact = reference(x), one_pass(x), fp32(x.float())
    # bf16 rounding, compounded over the depth, like the reference's own distance from fp32.
    assert rel(want, got) < 3e-2
    assert rel(exact, got) < 1.5 * rel(exact, want) + 1e-2


def test_the_eager_one_pass_path_runs_inductor_kernels_and_the_default_does_not(monkeypatch):
    reference, deploy = reference_and_deploy('riformer_mini')
    calls = []
    real = deploy_norms.eager_norms
    monkeypatch.setattr(riformer, 'eager_norms', lambda *a: calls.append(a[0].shape) or real(*a))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        deploy(x)
        assert calls == []                                     # 'auto': ATen's GroupNorms in eager
        deploy.set_norm_path('one-pass')(x)
    assert len(calls) == sum(models.ARCHS['riformer_mini'][0])


def test_a_hooked_norm_is_called_and_records_the_reference_value():
    reference, deploy = reference_and_deploy('riformer_mini')
    deploy.set_norm_path('one-pass')
    seen = {}
    name = 'stages.2.blocks.1'
    for model, key in ((deploy, 'one-pass'), (reference, 'reference')):
        norm2 = model.get_submodule(name).norm2
        norm2.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o.clone()))
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        for fused in (True, False):
            seen.clear()
            deploy.set_fused(fused)
            assert models.relative_error(reference(x), deploy(x)) < 1e-5
            assert rel(seen['reference'], seen['one-pass']) < 1e-5


def test_compiled_form_traces_one_pass_and_no_group_norm():
    from torch._inductor.utils import run_and_get_code
    reference, deploy = reference_and_deploy('riformer_mini', seed=2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    compiled = torch.compile(deploy.set_fused(False))
    with torch.no_grad():
        got, code = run_and_get_code(compiled, x)
        want = reference(x)
    source = '\n'.join(code)
    assert 'group_norm' not in source and 'rsqrt' in source
    assert models.relative_error(want, got) < 1e-5


def test_pt2e_int8_keeps_the_statistics_in_float_without_group_norm():
    from models import quantize as q
    pytest.importorskip('torchao')
    _, deploy = reference_and_deploy('riformer_mini', seed=4)
    g = torch.Generator().manual_seed(5)
    calib = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)]
    x = torch.randn(3, 3, 32, 32, generator=g)
    int8 = {path: q.quantize_pt2e(copy.deepcopy(deploy).set_norm_path(path), calib) for path in ('auto', 'two-norms')}
    quantized, floating = q.describe_layers(int8['auto'])
    assert 'group_norm' not in floating and 'group_norm' in q.describe_layers(int8['two-norms'])[1]
    assert 'mul' not in quantized                              # no product of statistics in int8
    assert quantized.get('conv2d', 0) == q.describe_layers(int8['two-norms'])[0]['conv2d']
    with torch.no_grad():
        want = deploy(x)
        assert models.relative_error(want, int8['auto'](x)) < 0.25
        # Same quantization points: the two int8 graphs differ only by float rounding and its flips.
        assert models.relative_error(int8['two-norms'](x), int8['auto'](x)) < 0.1


def test_reference_forward_runs_the_two_norms_and_restores_the_path():
    _, deploy = reference_and_deploy('riformer_mini')
    deploy.set_norm_path('one-pass')
    blocks = [b for b in deploy.modules() if isinstance(b, models.RIFormerBlock)]
    with models.reference_forward(deploy):
        assert {(b.fused, b.norm_path) for b in blocks} == {(False, 'two-norms')}
    assert {(b.fused, b.norm_path) for b in blocks} == {(True, 'one-pass')}


def test_an_unknown_norm_path_is_one_line():
    _, deploy = reference_and_deploy('riformer_mini')
    with pytest.raises(ValueError) as err:
        deploy.set_norm_path('fused')
    assert str(err.value) == "unknown deploy norm path 'fused'; use one of auto, one-pass, two-norms"
