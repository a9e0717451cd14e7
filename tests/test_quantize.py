"""The bf16 deploy form (models.precision) and the int8 routes (models.quantize: PT2E + Inductor,
ONNX Runtime QDQ, OpenVINO NNCF) on riformer_mini at 32 px, and calibration data
(distill.calibration). Tolerances per route, against the fp32 deploy model:

* bf16: relative logit error < 3e-2 (8-bit mantissa); the fused bf16 path equals bf16's
  reference forward to bf16 rounding (< 2e-2);
* int8 (any route): relative error < 0.25 on a random-weight model calibrated on the test's own
  input distribution (trained models' accuracy is measured in docs/RESULTS.md); PT2E's eager
  oneDNN int8 kernels equal its reference quantize/dequantize graph to 1e-3;
* OpenVINO fp32: < 1e-4, like the ONNX export.

The int8 and bf16 paths run on any x86 CPU (emulated without VNNI / AVX512-BF16); nothing here
asserts a speed."""
import warnings

import pytest
import timm
import torch

import models
from helpers import randomize
from models import quantize as q

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
    assert floating.get('group_norm') == 12 and 'conv2d' not in floating   # 2 GroupNorms a block
    # The fp32 model is untouched (its fused path too).
    assert all(b.fused for b in models.fused_blocks(deploy))


def test_pt2e_oneDNN_int8_kernels_match_the_reference_graph(pt2e):
    x = images(4, 0)
    lowered = q.lower_int8(pt2e, x)
    targets = {str(n.target) for n in lowered.graph.nodes}
    assert any('qconv' in t for t in targets)                 # real int8 convolutions
    with torch.no_grad():
        assert models.relative_error(pt2e(x), lowered(x)) < 1e-3


def test_pt2e_compiled_by_inductor(deploy, pt2e):
    # The deploy route: Inductor with freezing (oneDNN int8 convolutions, VNNI where present).
    x = images(4, 0)
    got = q.compile_int8(pt2e)(x)
    assert models.relative_error(pt2e(x), got) < 1e-2
    assert models.relative_error(reference(deploy, x), got) < 0.25


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


def test_openvino_fp32_bf16_and_nncf_int8(deploy, calib, onnx_file, tmp_path):
    pytest.importorskip('openvino')
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
