"""No code from a detector checkpoint runs, on any route that opens one: a checkpoint whose
pickle calls os.system is refused with one `error:` line before any loader unpickles it, and
damaged files get a message in words."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip('ultralytics')
from models.errors import CheckpointError  # noqa: E402
from models.handoff.detector import load_pickled  # noqa: E402
from models.handoff.safe_load import vet_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class RunsCommand:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pt'
    torch.save({'model': RunsCommand(f'touch {marker}'), 'epoch': 3}, path)
    return path, marker


def test_the_payload_is_live(evil):
    """The test checkpoint really runs its command under a plain unpickling (else the tests below
    prove nothing)."""
    path, marker = evil
    torch.load(path, weights_only=False)      # deliberately unsafe: proves the payload runs (only here)
    assert marker.exists()


def run_tool(*args, cwd):
    env = {**os.environ, 'YOLO_AUTOINSTALL': 'False', 'YOLO_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
    env.pop('ULTRALYTICS_SAFE_LOAD', None)       # as a user has it: ultralytics' safe mode off
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('route', [
    ['detect.py', 'predict', '--weights', '{evil}', '--source', '{dir}'],
    ['detect.py', 'val', '--weights', '{evil}'],
    ['detect.py', 'export', '--weights', '{evil}', '--format', 'onnx'],
    ['detect.py', 'train', '--weights', '{evil}', '--data', '{dir}/data.yaml'],
    ['detect.py', 'train', '--resume', '{evil}'],
    ['reparam.py', '{evil}'],
    ['export.py', '{evil}', '--format', 'onnx'],
], ids=lambda r: ' '.join(r[:2]))
def test_code_executing_checkpoint_is_refused_on_every_route(route, evil, tmp_path):
    path, marker = evil
    (tmp_path / 'data.yaml').write_text('path: .\ntrain: images\nval: images\nnames: {0: box}\n')
    args = [a.format(evil=path, dir=tmp_path) for a in route]
    result = run_tool(str(ROOT / 'tools' / args[0]), *args[1:], cwd=tmp_path)
    assert not marker.exists(), 'the checkpoint ran its command'
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-1000:]
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and 'Traceback' not in result.stderr, result.stderr
    assert 'posix.system' in err[0] or 'refused' in err[0], err[0]


def test_riformer_yolo_command_refuses_it(evil, tmp_path):
    """The `yolo` CLI with this project's safe loading (riformer-yolo) takes model=... the same way."""
    path, marker = evil
    result = run_tool('-m', 'distill.cli.yolo', 'detect', 'predict', f'model={path}', f'source={tmp_path}',
                      cwd=ROOT)
    assert not marker.exists()
    assert result.returncode == 2 and result.stderr.startswith('error: ') and 'refused' in result.stderr


def test_library_loaders_refuse_it(evil):
    path, marker = evil
    with pytest.raises(CheckpointError, match='refused to unpickle posix.system'):
        vet_checkpoint(path)
    yolov5 = pytest.importorskip('models.handoff.yolov5')
    with pytest.raises(CheckpointError, match='refused'):
        yolov5.load_detection_model(path)
    assert not marker.exists()


def test_nested_payload_inside_a_real_module_is_refused(tmp_path):
    """The command hidden in an attribute of an allowed layer class is refused as well."""
    marker = tmp_path / 'pwned'
    layer = torch.nn.Conv2d(1, 1, 1)
    layer.note = RunsCommand(f'touch {marker}')
    torch.save({'model': torch.nn.Sequential(layer)}, tmp_path / 'nested.pt')
    with pytest.raises(CheckpointError, match='posix.system'):
        load_pickled(tmp_path / 'nested.pt')
    assert not marker.exists()


@pytest.mark.parametrize('content, words', [
    (b'', 'not a file written by torch.save()'),
    (b'hello, not a checkpoint\n', 'not a file written by torch.save()'),
    ('truncated', 'empty or truncated'),
])
def test_damaged_files_are_named_in_words(content, words, tmp_path):
    path = tmp_path / 'bad.pt'
    if content == 'truncated':
        torch.save({'model': torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))}, tmp_path / 'good.pt')
        content = (tmp_path / 'good.pt').read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        vet_checkpoint(path)
    assert words in str(e.value) and '(101)' not in str(e.value)
