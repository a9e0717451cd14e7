"""The bf16 deploy form (models.precision) and the int8 routes (models.quantize: PT2E + Inductor,
ONNX Runtime QDQ, OpenVINO NNCF) on riformer_mini at 32 px, and calibration data
(distill.calibration). Tolerances per route, against the fp32 deploy model:

* bf16: relative logit error < 3e-2 (8-bit mantissa); the fused bf16 path equals bf16's
  reference forward to bf16 rounding (< 2e-2);
* int8 (any route): relative error < 0.25 on a random-weight model calibrated on the test's own
  input distribution (trained models' accuracy is measured in docs/RESULTS.md);
* PT2E's oneDNN int8 kernels (eager and compiled) against its reference quantize/dequantize graph:
  1e-5. Each route quantizes for the CPU's kind (models/quantize.py: 7-bit activations where the
  kernels add products in pairs into saturating 16-bit sums, i.e. x86 without VNNI), so the
  kernels compute the graph's integers on every CPU and only fp32 rounding is left: measured
  9e-8 with VNNI and 8e-8 under oneDNN's AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2); a full 8-bit
  model there was 2.6e-2 off (docs/RESULTS.md). ONNX Runtime has no such check here: its fused
  kernels and the unfused QDQ graph (which sums in fp32) round a requantized value differently
  now and then, and on this random model one flip grows through the requantized convolutions to
  0-1.5e-2 (measured over 8 quantizer settings, VNNI), too close to saturation's 2.2e-2 (emulated
  AVX2) to tell apart; its route's choice is checked instead, and the detector's int8 export gets
  a kernel check (tests/test_detect_exports.py);
* OpenVINO fp32: < 1e-4, like the ONNX export.

The int8 and bf16 paths run on any x86 CPU (emulated without VNNI / AVX512-BF16); nothing here
asserts a speed."""
import warnings

import pytest
import timm
import torch

import models
from helpers import randomize, skip_openvino_under_onednn_cap
from models import quantize as q

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

SIZE = 32


@pytest.fixture(scope='module')
def deploy():
    torch.manual_seed(0)
    model = timm.create_model('riformer_mini', num_classes=7)
    with torch.no_grad():       # trained-like: mixers and layer scales away from their init
        for name, p in model.named_parameters():
            if 'token_mixer' in name or 'layer_scale' in name:
                p.add_(0.2 * torch.randn_like(p))
    return models.reparameterize(model.eval())


def images(n, seed):
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module')
def calib():
    return [images(8, s) for s in range(1, 4)]


def reference(model, x):
    with torch.no_grad():
        return model(x)


# ---- bf16 -------------------------------------------------------------------------------------

def test_bf16_form_is_close_and_takes_the_fused_path_where_onednn_has_it(deploy, monkeypatch):
    from models import riformer
    x = images(4, 0)
    expected = reference(deploy, x)
    model = models.to_bf16(models.reparameterize(deploy, inplace=False), warn=False)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    calls = []
    fused = riformer.RIFormerBlock._forward_deploy_fused
    monkeypatch.setattr(riformer.RIFormerBlock, '_forward_deploy_fused', lambda self, t: calls.append(t.dtype) or fused(self, t))
    with torch.inference_mode():
        got = model(x)                                   # fp32 images in: cast by the form
        with models.reference_forward(model):
            ref_bf16 = model(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert models.relative_error(expected, got.float()) < 3e-2
    assert models.relative_error(ref_bf16.float(), got.float()) < 2e-2
    # oneDNN fuses bf16 convolutions on AVX-512 CPUs; elsewhere the reference forward runs.
    assert bool(calls) == riformer._ONEDNN_BF16 and set(calls) <= {torch.bfloat16}


def test_load_deploy_dtype(deploy, tmp_path):
    path = tmp_path / 'mini.deploy.safetensors'
    models.save_model(path, deploy)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = models.load_deploy(path, dtype='bf16')
        feats = models.load_deploy(path, dtype='bf16', features_only=True, out_indices=(2, 3))
    x = images(2, 1)
    with torch.inference_mode():
        assert models.relative_error(reference(deploy, x), model(x).float()) < 3e-2
        assert [f.dtype for f in feats(x)] == [torch.bfloat16] * 2
    assert next(models.load_deploy(path).parameters()).dtype == torch.float32
    with pytest.raises(models.CheckpointError, match='dtype'):
        models.load_deploy(path, dtype='int4')


def test_bf16_note_names_emulation(monkeypatch, deploy):
    import models.cpu
    monkeypatch.setattr(models.cpu, 'cpu_flags', lambda path='/proc/cpuinfo': {'avx2', 'fma'})
    assert 'emulated' in models.bf16_note()
    with pytest.warns(UserWarning, match='emulated'):
        models.to_bf16(models.reparameterize(deploy, inplace=False))
    monkeypatch.setattr(models.cpu, 'cpu_flags', lambda path='/proc/cpuinfo': {'avx512f', 'avx512_bf16'})
    monkeypatch.setattr(models.cpu.platform, 'machine', lambda: 'x86_64')
    monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'AVX512')
    assert models.bf16_note() is None


# ---- int8: PT2E -------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def pt2e(deploy, calib):
    return q.quantize_pt2e(deploy, calib)


def test_pt2e_quantizes_convs_and_keeps_groupnorm_in_float(deploy, pt2e):
    x = images(4, 0)
    assert models.relative_error(reference(deploy, x), pt2e(x)) < 0.25
    assert pt2e(images(3, 9)).shape == (3, 7)                # dynamic batch
    int8, floating = q.describe_layers(pt2e)
    assert int8.get('conv2d') == 16 and int8.get('linear') == 1        # every conv and the head
    assert 'conv2d' not in floating
    # Both norms of each block stay in float, traced in their one-pass form (issue 29): one rsqrt
    # per norm, no group_norm (tests/test_deploy_norms.py checks the two-norms graph too).
    assert floating.get('rsqrt') == 12 and 'group_norm' not in floating
    # The fp32 model is untouched (its fused path too).
    assert all(b.fused for b in models.fused_blocks(deploy))


# PT2E's kernels against their reference graph: same integers on every CPU kind (module docstring).
KERNEL_TOL = 1e-5


def test_pt2e_oneDNN_int8_kernels_match_the_reference_graph(pt2e):
    x = images(4, 0)
    lowered = q.lower_int8(pt2e, x)
    targets = {str(n.target) for n in lowered.graph.nodes}
    assert any('qconv' in t for t in targets)                 # real int8 convolutions
    with torch.no_grad():
        assert models.relative_error(pt2e(x), lowered(x)) < KERNEL_TOL


def test_pt2e_compiled_by_inductor(deploy, pt2e):
    # The deploy route: Inductor with freezing (oneDNN int8 convolutions, VNNI where present).
    x = images(4, 0)
    got = q.compile_int8(pt2e)(x)
    assert models.relative_error(pt2e(x), got) < KERNEL_TOL
    assert models.relative_error(reference(deploy, x), got) < 0.25


# ---- int8: which CPU a model is made for ------------------------------------------------------

AVX2 = {'avx2', 'fma'}                                     # a CPU without int8 dot products
VNNI = {'avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni'}


def as_cpu(monkeypatch, flags, cap=None):
    """Make models.cpu read `flags` on an x86 machine, with oneDNN's ISA cap `cap`."""
    import models.cpu
    monkeypatch.setattr(models.cpu, 'cpu_flags', lambda path='/proc/cpuinfo': set(flags))
    monkeypatch.setattr(models.cpu.platform, 'machine', lambda: 'x86_64')
    for name in ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA', q.TARGET_ENV):
        monkeypatch.delenv(name, raising=False)
    if cap:
        monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', cap)


def test_int8_saturation_follows_the_flags_onednns_cap_and_the_machine():
    from models.cpu import int8_dot_products, int8_saturates
    x86 = dict(environ={}, machine='x86_64')
    assert int8_saturates('pt2e', AVX2, **x86) and int8_saturates('onnxruntime', AVX2, **x86)
    assert not int8_saturates('pt2e', VNNI, **x86) and int8_dot_products('openvino', VNNI, {}) == 'avx512_vnni'
    assert not int8_saturates('onnxruntime', {'avx2', 'amx_int8'}, **x86)
    # oneDNN's cap binds the PT2E route only (ONNX Runtime's MLAS reads CPUID and nothing else).
    for cap, saturates in (('AVX2', True), ('avx512_core', True), ('AVX2_VNNI', True), ('AVX512_CORE_VNNI', False),
                           ('AVX512_CORE_AMX', False), ('ALL', False)):
        assert int8_saturates('pt2e', VNNI, {'ONEDNN_MAX_CPU_ISA': cap}, 'x86_64') is saturates, cap
        assert not int8_saturates('onnxruntime', VNNI, {'ONEDNN_MAX_CPU_ISA': cap}, 'x86_64')
    assert int8_saturates('pt2e', VNNI, {'DNNL_MAX_CPU_ISA': 'AVX2'}, 'x86_64')
    assert not int8_saturates('pt2e', VNNI | {'avx_vnni'}, {'ONEDNN_MAX_CPU_ISA': 'AVX2_VNNI'}, 'x86_64')
    assert not int8_saturates('pt2e', set(), {}, 'aarch64')           # Arm accumulates in 32 bits
    with pytest.raises(ValueError, match='unknown int8 runtime'):
        int8_dot_products('tflite', VNNI, {})


def test_int8_target_is_the_cpus_kind_unless_named(monkeypatch):
    as_cpu(monkeypatch, AVX2)
    assert [q.int8_target(r) for r in q.ROUTES] == ['no-vnni'] * 3
    assert '7-bit' in q.int8_note() and 'saturating' in q.int8_note()
    as_cpu(monkeypatch, VNNI, cap='AVX2')
    assert [q.int8_target(r) for r in q.ROUTES] == ['no-vnni', 'vnni', 'vnni']
    assert 'ONEDNN_MAX_CPU_ISA=AVX2' in q.int8_note()
    monkeypatch.setenv(q.TARGET_ENV, 'vnni')
    assert q.int8_target('pt2e') == 'vnni' and q.int8_target('pt2e', 'no-vnni') == 'no-vnni'
    monkeypatch.setenv(q.TARGET_ENV, 'avx9')
    with pytest.raises(models.UsageError, match='int8 target') as e:
        q.int8_target('onnxruntime')
    assert '\n' not in str(e.value)


def activation_ranges(converted):
    qd = torch.ops.quantized_decomposed
    return {n.args[3:5] for n in converted.graph.nodes if n.target == qd.quantize_per_tensor.default}


def test_pt2e_quantizes_for_the_cpus_kind_and_warns_where_it_would_saturate(deploy, calib, monkeypatch):
    as_cpu(monkeypatch, AVX2)
    seven = q.quantize_pt2e(deploy, calib)
    assert activation_ranges(seven) == {(0, 127)} and q.pt2e_target(seven) == 'no-vnni'
    x = images(4, 0)
    with torch.no_grad():       # the 7-bit model's kernels equal its graph on this CPU too
        assert models.relative_error(seven(x), q.lower_int8(seven, x)(x)) < KERNEL_TOL
    as_cpu(monkeypatch, VNNI)
    full = q.quantize_pt2e(deploy, calib)
    assert activation_ranges(full) == {(0, 255)} and q.pt2e_target(full) == 'vnni'
    as_cpu(monkeypatch, AVX2)                      # the VNNI model taken to a CPU without
    with pytest.warns(q.Int8TargetWarning, match='saturating 16-bit sums'):
        q.compile_int8(full)
    with warnings.catch_warnings():
        warnings.simplefilter('error', q.Int8TargetWarning)
        q.compile_int8(seven)


def test_pt2e_program_saved_for_vnni_warns_on_load_without(deploy, calib, monkeypatch, tmp_path):
    as_cpu(monkeypatch, VNNI)
    full = q.quantize_pt2e(deploy, calib)
    path = tmp_path / 'mini.int8.pt2'
    torch.export.save(torch.export.export(full, (calib[0],)), str(path))
    with warnings.catch_warnings():
        warnings.simplefilter('error', q.Int8TargetWarning)
        assert q.pt2e_target(q.load_pt2e(path)) == 'vnni'
    as_cpu(monkeypatch, AVX2)
    with pytest.warns(q.Int8TargetWarning, match='mini.int8.pt2'):
        q.load_pt2e(path)


# ---- int8 and fp32: ONNX Runtime, OpenVINO ----------------------------------------------------

@pytest.fixture(scope='module')
def onnx_file(deploy, tmp_path_factory):
    pytest.importorskip('onnxruntime')
    return q.export_onnx(deploy, tmp_path_factory.mktemp('onnx') / 'mini.onnx', SIZE)


def test_onnxruntime_static_qdq_keeps_groupnorm_in_float(deploy, calib, onnx_file, tmp_path):
    import onnx
    out = q.quantize_onnx(onnx_file, tmp_path / 'mini.int8.onnx', calib)
    graph = onnx.load(str(out)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert convs and all(producer.get(n.input[0]) == 'DequantizeLinear' for n in convs)
    norms = [n for n in graph.node if n.op_type == 'InstanceNormalization']   # GroupNorm(1) in ONNX
    assert norms and not any(producer.get(n.input[0]) == 'DequantizeLinear' for n in norms)
    x = images(4, 0)
    run = q.ort_runner(q.ort_session(out, threads=1))
    assert models.relative_error(reference(deploy, x), run(x)) < 0.25
    assert run(images(3, 9)).shape == (3, 7)
    assert q.onnx_target(onnx.load(str(out))) == q.int8_target('onnxruntime')


def test_onnxruntime_quantizes_for_the_cpus_kind_records_it_and_warns(calib, onnx_file, tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper
    as_cpu(monkeypatch, AVX2)
    seven = onnx.load(str(q.quantize_onnx(onnx_file, tmp_path / 'seven.onnx', calib)))
    as_cpu(monkeypatch, VNNI, cap='AVX2')          # oneDNN's cap does not bind ONNX Runtime
    full = onnx.load(str(q.quantize_onnx(onnx_file, tmp_path / 'full.onnx', calib)))

    def widest(model):
        return max(int(abs(numpy_helper.to_array(i).astype('int16')).max()) for i in model.graph.initializer
                   if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2)
    assert widest(seven) <= 64 < widest(full) <= 128
    assert q.onnx_target(seven) == 'no-vnni' and q.onnx_target(full) == 'vnni'
    del full.metadata_props[:]                     # files without the record: read from the weights
    assert q.onnx_target(full) == 'vnni'
    as_cpu(monkeypatch, AVX2)
    with pytest.warns(q.Int8TargetWarning, match='full.onnx'):
        q.ort_session(tmp_path / 'full.onnx', threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error', q.Int8TargetWarning)
        q.ort_session(tmp_path / 'seven.onnx', threads=1)
        q.ort_session(onnx_file, threads=1)                   # fp32: nothing to say


def test_third_party_int8_exports_quantize_for_the_cpus_kind(calib, onnx_file, tmp_path, monkeypatch):
    # ultralytics' quantize=8 calls onnxruntime.quantization.quantize_static itself, like this.
    import onnx
    import onnxruntime.quantization as ortq
    as_cpu(monkeypatch, AVX2)
    lines = []
    with q.third_party_int8(log=lines.append):
        from onnxruntime.quantization import quantize_static
        quantize_static(str(onnx_file), str(tmp_path / 'theirs.onnx'), q._Reader(calib), per_channel=True)
    assert ortq.quantize_static is not quantize_static       # put back
    assert q.onnx_target(onnx.load(str(tmp_path / 'theirs.onnx'))) == 'no-vnni'
    assert lines == ['onnxruntime int8 for CPUs without VNNI (16-bit pair sums): 7-bit weights (reduce_range)']


def test_openvino_fp32_bf16_and_nncf_int8(deploy, calib, onnx_file, tmp_path):
    pytest.importorskip('openvino')
    skip_openvino_under_onednn_cap()
    x = images(4, 0)
    expected = reference(deploy, x)
    ov_model = q.to_openvino(onnx_file)
    assert models.relative_error(expected, q.openvino_runner(ov_model, 1, 'fp32')(x)) < 1e-4
    assert models.relative_error(expected, q.openvino_runner(ov_model, 1, 'bf16')(x)) < 3e-2
    pytest.importorskip('nncf')
    int8 = q.quantize_openvino(ov_model, calib)
    ops = {op.get_type_name() for op in int8.get_ops()}
    assert 'FakeQuantize' in ops
    assert models.relative_error(expected, q.openvino_runner(int8, 1, None)(x)) < 0.25
    path = q.save_openvino(int8, tmp_path / 'mini.int8.xml')
    assert path.exists() and path.with_suffix('.bin').exists()
    # The target travels in the IR; a VNNI model on a CPU without VNNI warns.
    import openvino as ov
    made_for = q.openvino_target(ov.Core().read_model(str(path)))
    assert made_for == q.int8_target('openvino')
    if made_for == 'vnni':
        with pytest.MonkeyPatch.context() as mp:
            as_cpu(mp, AVX2)
            with pytest.warns(q.Int8TargetWarning):
                q.openvino_runner(ov.Core().read_model(str(path)), 1, None)


# ---- calibration data -------------------------------------------------------------------------

def test_calibration_from_a_recipe_uses_training_images_with_the_eval_transform():
    from distill.calibration import calibration_batches
    batches = calibration_batches('recipes/digits/imitation.yaml', count=20, batch_size=8)
    assert [b.shape for b in batches] == [(8, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32)]
    again = calibration_batches('recipes/digits/imitation.yaml', count=20, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))   # no augmentation, fixed draw


def test_calibration_from_a_folder_and_bad_sources(tmp_path):
    from PIL import Image
    from distill.calibration import calibration_batches
    for i in range(5):
        (tmp_path / 'cls').mkdir(exist_ok=True)
        Image.new('RGB', (40, 30), (i * 40, 10, 200)).save(tmp_path / 'cls' / f'{i}.png')
    batches = calibration_batches(tmp_path, count=4, batch_size=3, image_size=24)
    assert [b.shape for b in batches] == [(3, 3, 24, 24), (1, 3, 24, 24)]
    with pytest.raises(models.UsageError, match='image size'):
        calibration_batches(tmp_path)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(models.UsageError, match='no image files'):
        calibration_batches(tmp_path / 'empty', image_size=8)
    with pytest.raises(models.UsageError, match='recipe'):
        calibration_batches(tmp_path / 'missing.txt', image_size=8)
