"""Issue 27, item 3: no command writes over (or, when its check fails, deletes) a file it reads:
an output that is an input, a link to it or a hard link of it is refused with one line, exit 2,
before any work, and the input is left as it was."""
import hashlib
import os
from pathlib import Path

import pytest

from helpers import deploy_checkpoint
from distill.cli import export, reparam


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def deploy(tmp_path):
    return deploy_checkpoint(tmp_path / 'mini.deploy.safetensors', arch='riformer_mini')


@pytest.fixture
def trained(tmp_path):
    """A training-form checkpoint (what tools/reparam.py folds)."""
    import timm

    import models
    from helpers import randomize
    path = tmp_path / 'mini.safetensors'
    models.save_model(path, randomize(timm.create_model('riformer_mini', num_classes=0)))
    return path


def output_named(kind, source, tmp_path):
    if kind == 'same':
        return source
    out = tmp_path / f'{kind}-of-input{source.suffix}'
    (os.symlink if kind == 'symlink' else os.link)(source, out)
    return out


def refused(capsys, source, before, code):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    assert 'the output would overwrite the input' in err and 'pass another -o' in err
    assert digest(source) == before


@pytest.mark.parametrize('kind', ['same', 'symlink', 'hardlink'])
@pytest.mark.parametrize('fmt', ['onnx', 'torchscript', 'mmpretrain'])
def test_export_refuses_to_write_over_its_source(fmt, kind, deploy, tmp_path, capsys):
    before = digest(deploy)
    out = output_named(kind, deploy, tmp_path)
    refused(capsys, deploy, before, export.main([str(deploy), '--format', fmt, '-o', str(out)]))


def test_export_refuses_an_openvino_weights_file_that_is_the_source(deploy, tmp_path, capsys):
    """OpenVINO writes OUT.xml and OUT.bin: the .bin counts as an output too."""
    source = tmp_path / 'model.bin'
    source.write_bytes(deploy.read_bytes())
    before = digest(source)
    refused(capsys, source, before, export.main([str(source), '--format', 'openvino', '-o', str(tmp_path / 'model.xml')]))


@pytest.mark.parametrize('kind', ['same', 'symlink', 'hardlink'])
def test_reparam_refuses_to_write_over_its_checkpoint(kind, trained, tmp_path, capsys):
    before = digest(trained)
    out = output_named(kind, trained, tmp_path)
    refused(capsys, trained, before, reparam.main([str(trained), '-o', str(out)]))


def test_reparam_of_a_detector_refuses_a_link_to_its_input(tmp_path, capsys):
    pytest.importorskip('ultralytics')
    import models.handoff.yolo  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel
    from models.handoff.detector import save_detector
    net = DetectionModel({'nc': 2, 'backbone': [[-1, 1, 'Conv', [16, 3, 2]], [-1, 1, 'Conv', [32, 3, 2]]],
                          'head': [[-1, 1, 'RIFormerBlock', [32]], [[2], 1, 'Detect', ['nc']]]}, verbose=False)
    source = save_detector(net, tmp_path / 'det.pt')
    before = digest(source)
    out = output_named('symlink', source, tmp_path)
    refused(capsys, source, before, reparam.main([str(source), '-o', str(out)]))


@pytest.mark.parametrize('where', ['model.safetensors', 'best.safetensors', 'checkpoints/epoch_1/model.safetensors'])
def test_training_refuses_a_teacher_it_would_write_over(where, tmp_path, capsys):
    """A teacher (or starting weights) inside the files the run writes or prunes is refused at once."""
    from distill.cli import train
    out = tmp_path / 'run'
    teacher = out / where
    teacher.parent.mkdir(parents=True)
    teacher.write_bytes(b'teacher weights')
    recipe = Path(__file__).resolve().parents[1] / 'recipes' / 'digits' / 'imitation.yaml'
    try:
        code = train.main([str(recipe), f'teacher.checkpoint={teacher}', f'train.output_dir={out}', '--check'])
    except SystemExit as stop:          # a command that checks its recipe before importing torch exits
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    assert 'teacher.checkpoint=' in err and 'choose another train.output_dir' in err
    assert teacher.read_bytes() == b'teacher weights'
