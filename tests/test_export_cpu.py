"""tools/export.py's CPU deploy formats: OpenVINO IR (fp32: within 1e-4 of PyTorch, like ONNX),
bf16 TorchScript (within 3e-2), and int8 files calibrated on a recipe's images (ONNX Runtime QDQ,
OpenVINO NNCF, torchao PT2E program; within 0.25 relative error of fp32 PyTorch on held-out
images, same-prediction share printed). riformer_mini on the digits recipe (32 px)."""
import pytest
import timm
import torch

import models
from distill.cli import export
from helpers import randomize

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

RECIPE = 'recipes/digits/imitation.yaml'


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    model = timm.create_model('riformer_mini', num_classes=10)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'token_mixer' in name or 'layer_scale' in name:
                p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    path = tmp_path_factory.mktemp('ckpt') / 'mini.deploy.safetensors'
    models.save_model(path, models.reparameterize(model.eval()))
    return path


def run(capsys, *args):
    code = export.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def refused_under_onednn_cap(code, err) -> bool:
    """Under oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA), which OpenVINO does not follow (its int8
    kernels crashed the process under it), the OpenVINO routes answer with one line instead."""
    from models.cpu import onednn_isa_cap
    if not onednn_isa_cap():
        return False
    # The last line: torch may log a note of its own on stderr first (no CUDA runtime found).
    assert code != 0 and 'Traceback' not in err, err
    assert err.strip().splitlines()[-1].startswith('error: OpenVINO does not follow ONEDNN_MAX_CPU_ISA'), err
    return True


def checked_error(out):
    return float(out.split('max relative error ')[1].split(',')[0].split()[0])


def test_openvino_fp32_matches_pytorch(mini, tmp_path, capsys):
    pytest.importorskip('openvino')
    import openvino as ov
    code, out, err = run(capsys, mini, '--format', 'openvino', '--image-size', '32', '-o', tmp_path / 'm.xml')
    if refused_under_onednn_cap(code, err):
        return
    assert code == 0, err
    assert checked_error(out) < 1e-4 and 'same prediction on 100.0 %' in out
    assert (tmp_path / 'm.bin').exists()
    # The IR keeps dynamic batch and spatial size.
    shape = ov.Core().read_model(str(tmp_path / 'm.xml')).inputs[0].get_partial_shape()
    assert shape[0].is_dynamic and shape[2].is_dynamic


def test_bf16_torchscript(mini, tmp_path, capsys):
    code, out, err = run(capsys, mini, '--format', 'torchscript', '--dtype', 'bf16', '--image-size', '32')
    assert code == 0, err
    path = mini.with_name('mini.bf16.torchscript.pt')
    assert path.exists() and 'classifier bf16' in out and checked_error(out) < 3e-2
    loaded = torch.jit.load(str(path))
    assert loaded(torch.randn(2, 3, 40, 40)).dtype == torch.bfloat16


@pytest.mark.parametrize('fmt,needs', [('onnx', 'onnxruntime'), ('openvino', 'nncf'), ('pt2e', 'torchao')])
def test_int8_exports_calibrated_on_a_recipe(mini, tmp_path, capsys, fmt, needs):
    pytest.importorskip(needs)
    code, out, err = run(capsys, mini, '--format', fmt, '--int8', RECIPE, '--calib-images', '64')
    if fmt == 'openvino' and refused_under_onednn_cap(code, err):
        return
    assert code == 0, err
    suffix = {'onnx': '.int8.onnx', 'openvino': '.int8.xml', 'pt2e': '.int8.pt2'}[fmt]
    assert mini.with_name('mini' + suffix).exists()
    assert 'held-out images of recipes/digits/imitation.yaml' in out and checked_error(out) < 0.25
    assert 'GroupNorm stays fp32' in out and 'same prediction on' in out
    if fmt == 'pt2e':       # reopened safely, and compiled or run as saved
        from models import quantize
        program = quantize.load_pt2e(mini.with_name('mini.int8.pt2'))
        assert program(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_pt2e_loader_refuses_what_it_cannot_read_safely(tmp_path):
    from models import quantize
    bad = tmp_path / 'bad.pt2'
    bad.write_bytes(b'not a zip')
    with pytest.raises(models.CheckpointError, match=r'not a \.pt2 program \(not a zip archive'):
        quantize.load_pt2e(bad)
    with pytest.raises(models.CheckpointError, match='no such file'):
        quantize.load_pt2e(tmp_path / 'missing.pt2')


def test_precision_arguments_give_one_line_errors(mini, tmp_path, capsys):
    for args, message in [
        ((mini, '--format', 'torchscript', '--int8', RECIPE), '--int8 is for --format onnx'),
        ((mini, '--format', 'pt2e'), 'give --int8 DATA'),
        ((mini, '--format', 'onnx', '--dtype', 'bf16'), '--dtype bf16 is for --format torchscript'),
        ((mini, '--format', 'onnx', '--int8', tmp_path / 'nothing'), 'must be a recipe'),
        ((mini, '--format', 'onnx', '--int8', tmp_path), 'needs the image size'),
    ]:
        code, out, err = run(capsys, *args)
        assert code == 2 and err.startswith('error: ') and message in err and err.count('\n') == 1, (args, err)
