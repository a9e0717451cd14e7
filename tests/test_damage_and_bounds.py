"""Issue 27, items 6 and 7 (the parts done): a torch.save() archive whose zip CRC fails is named
damaged instead of loading as other weights, and balance's counts are bounded, each in one line
with exit 2."""
import struct
import zipfile

import pytest
import timm
import torch

from distill.cli import balance, reparam
from helpers import randomize

ROOT = __import__('pathlib').Path(__file__).resolve().parents[1]


def flip_in_largest_member(path):
    """Flip one byte in the middle of the archive's largest member (a tensor's bytes)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    name_length, extra_length = struct.unpack_from('<HH', data, info.header_offset + 26)   # its local header
    data[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def one_line(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
    return err


def test_a_state_dict_whose_crc_fails_is_not_folded(tmp_path, capsys):
    path = tmp_path / 'student.pth'
    model = randomize(timm.create_model('riformer_mini'))
    torch.save(model.state_dict(), path)
    flip_in_largest_member(path)
    loaded = torch.load(path, weights_only=True)       # positive control: torch loads it, other weights
    assert any(not torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    err = one_line(capsys, reparam.main([str(path), '-o', str(tmp_path / 'out.safetensors')]))
    assert 'damaged: its member' in err and 'fails its CRC check' in err
    assert not (tmp_path / 'out.safetensors').exists()


def test_a_detector_whose_crc_fails_is_not_folded(tmp_path, capsys):
    pytest.importorskip('ultralytics')
    import models.handoff.yolo  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel
    from models.handoff.detector import save_detector
    net = DetectionModel({'nc': 2, 'backbone': [[-1, 1, 'Conv', [16, 3, 2]], [-1, 1, 'Conv', [32, 3, 2]]],
                          'head': [[-1, 1, 'RIFormerBlock', [32]], [[2], 1, 'Detect', ['nc']]]}, verbose=False)
    path = save_detector(net, tmp_path / 'det.pt')
    flip_in_largest_member(path)
    torch.load(path, weights_only=False)                # positive control: loads without a word
    err = one_line(capsys, reparam.main([str(path), '-o', str(tmp_path / 'out.pt')]))
    assert 'fails its CRC check' in err and not (tmp_path / 'out.pt').exists()


@pytest.mark.parametrize('args, words', [
    (['--batch', '0'], '--batch: \'0\': give an integer from 1 to 4096'),
    (['--processes', '0'], 'give an integer from 1 to 65536'),
    (['--processes', '-3'], 'give an integer from 1 to 65536'),
    (['--processes', '1e21'], "'1e21' is not an integer"),
    (['--classes', '0'], 'give an integer from 1 to 100000'),
])
def test_balance_counts_are_bounded(args, words, capsys):
    with pytest.raises(SystemExit) as stop:
        balance.main([str(ROOT / 'recipes' / 'digits' / 'imitation.yaml'), *args])
    err = one_line(capsys, stop.value.code)
    assert words in err, err
