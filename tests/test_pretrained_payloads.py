"""timm's pretrained files are read by our reader, not by timm (issue 27): a `.pth` whose pickle
runs code, handed over as `pretrained_cfg_overlay=dict(file=...)` (the efficient backbones'
`--weights`, a teacher) or found in the torch hub / Hugging Face cache (`tools/reparam.py
--pretrained`, `teacher.pretrained`), runs nothing and is one line naming the file and the fix.
Nothing is downloaded: every route is given a file, or finds one in a cache under tmp_path."""
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import timm
import torch

from models.efficient import create_training
from models.errors import CheckpointError
from models.teachers import create_teacher

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}


class TouchesMarker:
    """Unpickling this creates a file (what a malicious checkpoint does, harmlessly)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


def write_payload(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': {'stem.conv.weight': torch.zeros(1)}, 'hook': TouchesMarker(marker)}, path)
    return path


@pytest.fixture
def evil(tmp_path):
    return write_payload(tmp_path / 'weights.pth', tmp_path / 'pwned'), tmp_path / 'pwned'


def test_the_payload_is_live(evil):
    """Positive control, in a fresh process: plain unpickling of the file runs its code (else the
    tests below prove nothing)."""
    path, marker = evil
    code = f'import torch; torch.load({str(path)!r}, weights_only=False)'   # deliberately unsafe, only here
    subprocess.run([sys.executable, '-c', code], check=True, capture_output=True, env={**os.environ, **OFFLINE})
    assert marker.exists()


def assert_refused_in_one_line(message: str, path: Path, marker: Path):
    assert len(message.splitlines()) == 1, message
    assert str(path) in message and 'will not be unpickled' in message and 'safetensors' in message, message
    assert 'weights_only=False' not in message, message    # no advice to run the file's code
    assert not marker.exists()


def test_efficient_weights_file_runs_nothing(evil):
    """`tools/export.py efficientvit_m0 --weights FILE` and `load_model(name, weights=FILE)`: the
    route of `pretrained_cfg_overlay=dict(file=...)`."""
    path, marker = evil
    with pytest.raises(CheckpointError) as e:
        create_training('efficientvit_m0', weights=str(path))
    assert_refused_in_one_line(str(e.value), path, marker)


def test_efficient_weights_file_through_the_export_command(evil, tmp_path):
    path, marker = evil
    result = subprocess.run([sys.executable, f'{ROOT}/tools/export.py', 'efficientvit_m0', '--weights', str(path),
                             '--format', 'deploy', '-o', str(tmp_path / 'm0.safetensors')],
                            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **OFFLINE}, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    assert_refused_in_one_line(lines[0], path, marker)
    assert not (tmp_path / 'm0.safetensors').exists()


def test_a_teachers_overlay_file_runs_nothing(evil):
    path, marker = evil
    with pytest.raises(CheckpointError) as e:
        create_teacher('poolformer_mini', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert_refused_in_one_line(str(e.value), path, marker)


def test_a_teacher_from_the_hugging_face_cache_runs_nothing(tmp_path, monkeypatch):
    """`teacher.pretrained=true` reads the cached download (here a `pytorch_model.bin` payload in
    a Hugging Face cache under tmp_path, the layout hf_hub_download reads offline)."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    snapshot = tmp_path / 'hub' / 'models--timm--poolformer_s12.sail_in1k'
    (snapshot / 'refs').mkdir(parents=True)
    (snapshot / 'refs' / 'main').write_text('0' * 40)
    path = write_payload(snapshot / 'snapshots' / ('0' * 40) / 'pytorch_model.bin', tmp_path / 'pwned')
    with pytest.raises(CheckpointError) as e:
        create_teacher('poolformer_s12.sail_in1k', pretrained=True)
    assert_refused_in_one_line(str(e.value), path, tmp_path / 'pwned')


def test_reparam_pretrained_from_the_torch_hub_cache_runs_nothing(tmp_path):
    """`tools/reparam.py --pretrained riformer_s12` with a payload where torch.hub keeps the
    official file: one `error:` line, exit 2, no marker (the genuine file's route is
    tests/test_pretrained.py::test_reparam_tool_official_and_random_weights)."""
    url = timm.get_pretrained_cfg('riformer_s12.mmpretrain_in1k').url
    path = write_payload(tmp_path / 'torch' / 'hub' / 'checkpoints' / Path(urlparse(url).path).name,
                         tmp_path / 'pwned')
    env = {**os.environ, **OFFLINE, 'TORCH_HOME': str(tmp_path / 'torch')}
    result = subprocess.run([sys.executable, f'{ROOT}/tools/reparam.py', '--pretrained', 'riformer_s12'],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), result.stderr
    assert_refused_in_one_line(lines[0], path, tmp_path / 'pwned')


def test_a_genuine_weights_file_still_loads(tmp_path):
    """Control: the same route loads a plain state dict, with timm's head handling intact."""
    reference = timm.create_model('efficientvit_m0', num_classes=1000).eval()
    torch.save(reference.state_dict(), tmp_path / 'm0.pth')
    model = create_training('efficientvit_m0', num_classes=1000, weights=str(tmp_path / 'm0.pth'))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert 'state_dict' not in model.pretrained_cfg       # no second copy of the tensors kept
