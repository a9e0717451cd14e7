"""Issue 27, item 6 (a full disk): reparam and export that cannot write their output say so in
one line with exit 2 and leave no partial file (export used to leave a 0-byte .onnx)."""
import errno
import os

import pytest
import timm
import torch

import models
from distill.cli import export, reparam
from helpers import deploy_checkpoint, randomize

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def one_line(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
    return err


def partial_then_full(path, *args, **kwargs):
    """A writer that gets a few bytes out, then meets a full disk."""
    with open(path, 'wb') as f:
        f.write(b'partial')
    raise ENOSPC


def test_reparam_on_a_full_disk(tmp_path, capsys, monkeypatch):
    source = tmp_path / 'student.safetensors'
    models.save_model(source, randomize(timm.create_model('riformer_mini')))
    monkeypatch.setattr(models.checkpoint_io, 'save_file', lambda tensors, path, metadata: partial_then_full(path))
    err = one_line(capsys, reparam.main([str(source), '-o', str(tmp_path / 'out.safetensors')]))
    assert 'out.safetensors: could not be written (no space left on device)' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['student.safetensors']      # no output, no temporary file


def test_reparam_of_a_detector_on_a_full_disk(tmp_path, capsys, monkeypatch):
    pytest.importorskip('ultralytics')
    import models.handoff.yolo  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel
    from models.handoff.detector import save_detector
    net = DetectionModel({'nc': 2, 'backbone': [[-1, 1, 'Conv', [16, 3, 2]], [-1, 1, 'Conv', [32, 3, 2]]],
                          'head': [[-1, 1, 'RIFormerBlock', [32]], [[2], 1, 'Detect', ['nc']]]}, verbose=False)
    source = save_detector(net, tmp_path / 'det.pt')

    def full(obj, path, *args, **kwargs):
        raise RuntimeError('[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file '
                           'data/0: file write failed')
    monkeypatch.setattr(torch, 'save', full)
    err = one_line(capsys, reparam.main([str(source), '-o', str(tmp_path / 'out.pt')]))
    assert 'out.pt: could not be written' in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['det.pt']


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_export_on_a_full_disk_leaves_no_file(fmt, tmp_path, capsys, monkeypatch):
    deploy = deploy_checkpoint(tmp_path / 'mini.deploy.safetensors', arch='riformer_mini')
    if fmt == 'onnx':
        monkeypatch.setattr(torch.onnx, 'export', lambda model, args, path, **kwargs: partial_then_full(path))
    else:
        monkeypatch.setattr(torch.jit.ScriptModule, 'save', lambda self, path, **kwargs: partial_then_full(path))
    out = tmp_path / f'out.{fmt}'
    err = one_line(capsys, export.main([str(deploy), '--format', fmt, '-o', str(out), '--image-size', '32']))
    assert 'could not be written (no space left on device)' in err
    assert not out.exists()
