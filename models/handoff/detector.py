"""Detector checkpoints (ultralytics, yolo9, yolov5): read them without running pickled code,
write them atomically in the layout their own loaders take."""
import datetime
import os
import pickle
import tempfile
from pathlib import Path
from typing import Iterable

import torch
import torch.nn as nn

from ..errors import CheckpointError

# Classes a detector checkpoint may reconstruct: modules of these packages (layers, models) and
# two plain data classes timm's feature wrapper keeps.
MODULE_PREFIXES = ('torch.nn.modules.', 'ultralytics.nn.', 'yolov5.models.', 'yolo9.models.', 'models.', 'timm.')
DATA_CLASSES = ('timm.models._features.FeatureInfo', 'timm.layers.format.Format')


def _allowed(name: str, prefixes: Iterable[str]):
    """The class `name` ('package.module.Class') when it is an nn.Module of an allowed package
    (or one of DATA_CLASSES)."""
    import importlib
    module, _, attr = name.rpartition('.')
    if name not in DATA_CLASSES and not any(f'{module}.'.startswith(p) for p in prefixes):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    if not isinstance(obj, type):
        return None
    return obj if name in DATA_CLASSES or issubclass(obj, nn.Module) else None


def load_pickled(path, prefixes: Iterable[str] = MODULE_PREFIXES) -> dict:
    """A pickled detector checkpoint (`{'model': DetectionModel, ...}`) loaded with
    `torch.load(weights_only=True)`, allowing only nn.Module classes of the detector packages and
    ours to be rebuilt: no function from the file is ever called. Raises CheckpointError naming
    the first refused class."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such file')
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:
        raise CheckpointError(f'{path}: not a PyTorch checkpoint ({_first_line(e)})') from None
    allowed = [(cls, name) for name in needed if (cls := _allowed(name, prefixes)) is not None]
    refused = [name for name in needed if name not in {n for _, n in allowed}]
    if refused:
        raise CheckpointError(
            f'{path}: refused to unpickle {refused[0]} (only detector and torch layers load safely'
            + (f'; {len(refused) - 1} more' if len(refused) > 1 else '') + ')')
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(str(path), map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointError(f'{path}: not a loadable detector checkpoint ({_first_line(e)})') from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('ema') or ckpt.get('model'), nn.Module):
        raise CheckpointError(f'{path}: not a detector checkpoint (no model in it)')
    return ckpt


def detector_of(ckpt: dict) -> nn.Module:
    """The model a checkpoint holds (ultralytics and YOLOv9 keep the EMA model when training)."""
    return (ckpt.get('ema') or ckpt.get('model')).float()


def save_detector(model: nn.Module, path, extra: dict = None) -> Path:
    """Save `model` as `{'model': model, ...}` (float32, what ultralytics' and YOLOv9's loaders
    take) atomically: a crash mid-write leaves the previous file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {'model': model.float(), 'ema': None, 'optimizer': None, 'epoch': -1, 'train_args': {},
            'date': datetime.datetime.now().isoformat()}
    try:
        import ultralytics
        ckpt['version'] = ultralytics.__version__
    except ImportError:
        pass
    ckpt.update(extra or {})
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
