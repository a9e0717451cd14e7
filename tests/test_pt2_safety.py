"""Issue 27, item 2: a .pt2 program opens without unpickling anything from it, and a genuine one
written by `tools/export.py --format pt2e --int8` opens in a fresh process."""
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('torchao')
from helpers import deploy_checkpoint  # noqa: E402
from models.errors import CheckpointError  # noqa: E402
from models.quantize import load_pt2e  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def fresh_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope='module')
def program(tmp_path_factory):
    """A genuine int8 program of a random riformer_mini, written by the command."""
    from PIL import Image
    root = tmp_path_factory.mktemp('pt2')
    (root / 'images').mkdir()
    rng = np.random.default_rng(0)
    for i in range(72):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / 'images' / f'{i}.png')
    deploy = deploy_checkpoint(root / 'mini.deploy.safetensors', arch='riformer_mini')
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'export.py'), str(deploy), '--format', 'pt2e',
                             '--int8', str(root / 'images'), '--image-size', '32', '--calib-images', '8',
                             '-o', str(root / 'mini.pt2')], env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / 'mini.pt2'


class RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def with_opaque_constant(src: Path, dst: Path, payload) -> Path:
    """`src` with one more constant, an `opaque_obj_0` entry holding `payload`'s pickle (what
    torch.export.save writes for an opaque Python object)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as zout:
        prefix = zin.namelist()[0].split('/')[0]
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('data/constants/model_constants_config.json'):
                config = json.loads(data)
                config['config']['extra'] = {'path_name': 'opaque_obj_0', 'is_param': False, 'use_pickle': True,
                                             'tensor_meta': None}
                data = json.dumps(config).encode()
            zout.writestr(item.filename, data)
        zout.writestr(f'{prefix}/data/constants/opaque_obj_0', pickle.dumps(payload))
    return dst


def test_a_genuine_program_opens_in_a_fresh_process(program, tmp_path):
    """No torchao import before it (the program's int8 operators are registered by load_pt2e)."""
    result = fresh_python(f'import torch; from models.quantize import load_pt2e\n'
                          f'm = load_pt2e({str(program)!r}); print(tuple(m(torch.zeros(2, 3, 32, 32)).shape))',
                          cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith('(2, 192)'), result.stderr[-2000:]


def test_an_opaque_pickle_in_a_program_is_refused(program, tmp_path):
    marker = tmp_path / 'pwned'
    evil = with_opaque_constant(program, tmp_path / 'evil.pt2', RunsCommand(f'touch {marker}'))
    # Positive control: torch's own loader, weights-only flag forced, runs the pickle.
    fresh_python(f'import torch, torch.ao.quantization.fx._decomposed\ntry: torch.export.load({str(evil)!r})\n'
                 f'except Exception: pass', cwd=tmp_path)
    assert marker.exists(), 'the payload did not run under torch.export.load: the refusal below would prove nothing'
    marker.unlink()
    with pytest.raises(CheckpointError, match=r'holds pickled Python objects \(.*opaque_obj_0\)'):
        load_pt2e(evil)
    assert not marker.exists()


def test_a_constants_table_naming_a_pickle_is_refused(program, tmp_path):
    """The table alone (pointing at a pickled entry under another name) is enough to refuse."""
    evil = tmp_path / 'table.pt2'
    with zipfile.ZipFile(program) as zin, zipfile.ZipFile(evil, 'w', zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('model_constants_config.json'):
                data = json.dumps({'config': {'x': {'path_name': 'weights_like', 'is_param': False,
                                                    'use_pickle': True, 'tensor_meta': None}}}).encode()
            zout.writestr(item.filename, data)
    with pytest.raises(CheckpointError, match='holds pickled Python objects'):
        load_pt2e(evil)


def test_a_damaged_program_is_named_damaged(program, tmp_path):
    data = bytearray(program.read_bytes())
    with zipfile.ZipFile(program) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)      # a weight entry, stored
    name_length, extra_length = struct.unpack_from('<HH', data, info.header_offset + 26)   # its local header
    start = info.header_offset + 30 + name_length + extra_length + info.file_size // 2
    data[start] ^= 0xFF
    (tmp_path / 'bad.pt2').write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match='fails its CRC check'):
        load_pt2e(tmp_path / 'bad.pt2')
