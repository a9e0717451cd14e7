"""Files the hand-off writes and reads: file modes, restricted unpickling of detector checkpoints,
and (where mmpretrain is installed) the exported checkpoint in mmpretrain's own RIFormer."""
import os
import stat

import pytest
import torch
import torch.nn.functional as F

import models
from helpers import deploy_checkpoint
from distill.cli import export
from models.handoff.detector import load_pickled, save_detector


@pytest.mark.parametrize('mask', [0o022, 0o077])
def test_written_files_respect_the_umask(mask, tmp_path):
    old = os.umask(mask)
    try:
        deploy_checkpoint(tmp_path / 'a.safetensors', arch='riformer_mini')
        save_detector(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)), tmp_path / 'd.pt')
    finally:
        os.umask(old)
    for name in ('a.safetensors', 'd.pt'):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask


class Payload:
    def __reduce__(self):
        return (os.system, ('echo pwned',))


def test_detector_loader_takes_detectors_only_and_refuses_anything_else(tmp_path):
    """A model that is no detector has no YAML to be rebuilt from: refused (the round trip of a
    real detector is in tests/test_detect_safety.py)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), models.RIFormerBlock(4))
    save_detector(net, tmp_path / 'ok.pt')
    with pytest.raises(models.CheckpointError, match='Sequential: not an ultralytics, yolo9 or yolov5 detector'):
        load_pickled(tmp_path / 'ok.pt')
    torch.save({'model': net, 'extra': Payload()}, tmp_path / 'bad.pt')
    with pytest.raises(models.CheckpointError, match='refused to unpickle posix.system'):
        load_pickled(tmp_path / 'bad.pt')
    (tmp_path / 'text.pt').write_text('not a checkpoint')
    with pytest.raises(models.CheckpointError, match='not a PyTorch checkpoint'):
        load_pickled(tmp_path / 'text.pt')


def test_exported_checkpoint_in_real_mmpretrain(tmp_path, capsys):
    pytest.importorskip('mmpretrain', reason='mmpretrain (with mmengine, mmcv-lite) not installed')
    from mmpretrain.models.backbones import RIFormer as MMRIFormer
    deploy = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=7)
    assert export.main([str(deploy), '--format', 'mmpretrain', '-o', str(tmp_path / 'mm.pth')]) == 0
    mm = MMRIFormer(arch='s12', deploy=True, out_indices=(0, 2, 4, 6))
    state = torch.load(tmp_path / 'mm.pth', weights_only=True)['state_dict']
    missing, unexpected = mm.load_state_dict({k[len('backbone.'):]: v for k, v in state.items()}, strict=True)
    assert not missing and not unexpected
    ours = models.load_deploy(deploy).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages = ours.forward_intermediates(x, intermediates_only=True)
        theirs = mm.eval()(x)
    assert len(theirs) == 4
    for a, b in zip(stages, theirs):     # mmpretrain's out norms: GroupNorm(1) written as (1, 0)
        assert models.relative_error(F.group_norm(a, 1, eps=1e-5), b) < 1e-5   # measured 1.5e-6
