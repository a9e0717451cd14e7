"""Detector checkpoint files (ultralytics, yolo9, yolov5) as files: which classes a pickle names
(read without unpickling), which are allowed, how a file is written (atomically, in the layout
their own loaders take) and what a checkpoint holds. Reading one into a model is safe_load.py's."""
import datetime
import os
import tempfile
from pathlib import Path
from typing import Iterable, List, Tuple

import torch
import torch.nn as nn

from ..checkpoint_io import check_zip
from ..paths import one_line_write_failure
from ..errors import CheckpointError

# Classes a detector checkpoint may name (each becomes an inert stand-in, never the class): modules
# of these packages (layers, models) and two plain data classes timm's feature wrapper keeps.
MODULE_PREFIXES = ('torch.nn.modules.', 'ultralytics.nn.', 'yolov5.models.', 'yolo9.models.', 'models.', 'timm.')


# ultralytics' IterableSimpleNamespace: the `args` of the model in a checkpoint saved during
# training (last.pt / best.pt before strip_optimizer turns them into a dict); read as a stand-in,
# kept as a plain dict (`safe_load.rebuild_stored`).
NAMESPACE = 'ultralytics.utils.IterableSimpleNamespace'
DATA_CLASSES = ('timm.models._features.FeatureInfo', 'timm.layers.format.Format', NAMESPACE)


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


def allowed_classes(path, prefixes: Iterable[str] = MODULE_PREFIXES) -> List[Tuple[type, str]]:
    """[(class, 'module.Name')] for every global a pickled checkpoint names, read from the file's
    pickle without unpickling it; CheckpointError when one is not an allowed class (the first one
    named), the file is missing, or it is not a torch.save() archive."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: ' + ('a directory, not a checkpoint file' if path.is_dir() else 'no such file'))
    check_zip(path)
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:
        raise CheckpointError(f'{path}: not a PyTorch checkpoint ({_describe(e)})') from None
    allowed = [(cls, name) for name in needed if (cls := _allowed(name, prefixes)) is not None]
    refused = [name for name in needed if name not in {n for _, n in allowed}]
    if refused:
        raise CheckpointError(
            f'{path}: refused to unpickle {refused[0]} (only detector and torch layers load safely'
            + (f'; {len(refused) - 1} more' if len(refused) > 1 else '') + ')')
    return allowed


def detector_of(ckpt: dict) -> nn.Module:
    """The model a checkpoint holds (ultralytics and YOLOv9 keep the EMA model when training)."""
    return (ckpt.get('ema') or ckpt.get('model')).float()


def family(model: nn.Module) -> str:
    """'ultralytics', 'yolo9' or 'yolov5': the code base a detector model comes from."""
    root = type(model).__module__.split('.')[0]
    if root in ('ultralytics', 'yolo9', 'yolov5'):
        return root
    raise CheckpointError(f'{type(model).__module__}.{type(model).__name__}: not an ultralytics, yolo9 or yolov5 detector')


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
    with one_line_write_failure(path):      # a full disk: one line; the temporary file is removed below
        _write_atomically(ckpt, path)
    return path


def _write_atomically(ckpt: dict, path: Path):
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


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _describe(e: Exception) -> str:
    """What went wrong reading a file, in words (torch's own messages are a bare '(101)' for a text
    file, or a zip reader's internals for a truncated one)."""
    text = _first_line(e)
    if isinstance(e, EOFError) or 'central directory' in text or 'reading zip archive' in text:
        return 'the file is empty or truncated: copy or download it again'
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    if 'returned by torch.save' in text or isinstance(e, KeyError) or len(text) < 6:
        return 'not a file written by torch.save()'
    return text


def is_detector_checkpoint(path) -> bool:
    """Whether `path` is a pickled detector (names an ultralytics / yolo9 / yolov5 class), judged
    from the names in the file without unpickling it."""
    path = Path(path)
    if path.suffix != '.pt' or not path.is_file():
        return False
    try:
        names = pickled_globals(path)
    except Exception:
        return False
    return any(n.split('.')[0] in ('ultralytics', 'yolo9', 'yolov5') for n in names)


def pickled_globals(path) -> set:
    """Every global a torch.save() archive's pickle names, read without unpickling it (torch's
    `get_unsafe_globals_in_checkpoint` leaves out those already allowed in this process)."""
    import io
    import zipfile
    from torch import _weights_only_unpickler
    with zipfile.ZipFile(path) as archive:
        record = next(n for n in archive.namelist() if n.endswith('/data.pkl') or n == 'data.pkl')
        return set(_weights_only_unpickler.get_globals_in_pkl(io.BytesIO(archive.read(record))))
