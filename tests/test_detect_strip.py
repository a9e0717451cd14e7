"""The end of a detector training (issue 27): ultralytics' `strip_optimizer` rewrites the run's
`last.pt` / `best.pt` after reading them with a plain `torch.load(weights_only=False)`. On our
route (tools/detect.py train, in `ultralytics_safe_mode`) it reads them through `load_pickled`
instead, and what it writes still loads."""
import os
import shutil
from pathlib import Path

os.environ.setdefault('YOLO_VERBOSE', 'False')

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import box_dataset, deploy_checkpoint  # noqa: E402

pytest.importorskip('ultralytics')
from distill.cli import detect  # noqa: E402
from models.handoff import safe_load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Spy:
    """Records what a wrapped function was called with, then calls it."""

    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.function(*args, **kwargs)

    def paths(self):
        return [Path(args[0]).name for args, _ in self.calls if args and isinstance(args[0], (str, Path))]


def unsafe_reads(torch_load: Spy, folder: Path):
    return [args[0] for args, kwargs in torch_load.calls
            if args and str(args[0]).startswith(str(folder)) and kwargs.get('weights_only') is False]


def test_strip_optimizer_reads_the_runs_checkpoints_through_our_reader(tmp_path, monkeypatch):
    backbone = deploy_checkpoint(tmp_path / 'riformer_s12.deploy.safetensors', seed=3)
    reader = Spy(safe_load.torch_load_checkpoint)
    monkeypatch.setattr(safe_load, 'torch_load_checkpoint', reader)      # what ultralytics_safe_mode installs
    torch_load = Spy(torch.load)
    monkeypatch.setattr(torch, 'load', torch_load)
    assert detect.main([
        'train', '--cfg', str(ROOT / 'recipes' / 'detect' / 'yolov8n-riformer_s12.yaml'), '--backbone', str(backbone),
        f'data={box_dataset(tmp_path / "data")}', 'epochs=1', 'imgsz=64', 'batch=2', 'workers=0', 'device=cpu',
        f'project={tmp_path / "runs"}', 'name=y8', 'exist_ok=True', 'plots=False']) == 0
    weights = tmp_path / 'runs' / 'y8' / 'weights'
    assert {'last.pt', 'best.pt'} <= set(reader.paths()), reader.paths()
    assert unsafe_reads(torch_load, weights) == []              # no plain unpickling of the run's files

    # what strip_optimizer wrote loads through our reader: the model stripped (fp16, no optimizer)
    for name in ('last.pt', 'best.pt'):
        ckpt = safe_load.load_pickled(weights / name)
        assert ckpt['optimizer'] is None and ckpt['epoch'] == -1 and ckpt['ema'] is None, name
        assert isinstance(ckpt['model'], torch.nn.Module) and sum(p.numel() for p in ckpt['model'].parameters()) > 0

    # Control: ultralytics' own reader in strip_optimizer, on a copy, is the plain unpickling the
    # spy above looks for (so its empty answer means something).
    from ultralytics.utils import patches, torch_utils
    monkeypatch.setattr(torch_utils, 'torch_load', patches.torch_load)
    shutil.copy(weights / 'last.pt', tmp_path / 'copy.pt')
    torch_utils.strip_optimizer(tmp_path / 'copy.pt')
    assert unsafe_reads(torch_load, tmp_path) == [tmp_path / 'copy.pt']
