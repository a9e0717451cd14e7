"""Opening detector checkpoints without running code from them.

A pickled detector checkpoint (`last.pt`, `best.pt`, `best.deploy.pt`) can name any Python
callable, and ultralytics' loader unpickles it freely unless its opt-in safe mode is on
(`ULTRALYTICS_SAFE_LOAD`). Every route of this project that opens one calls `vet_checkpoint`
first, before any other loader sees the file: it reads the file with
`torch.load(weights_only=True)`, letting only nn.Module classes of torch, the detector packages,
timm and this project be rebuilt (`detector.load_pickled`), and registers exactly those classes
with torch's weights-only allow-list. ultralytics, run in its safe mode (`ultralytics_safe_mode`),
then loads the same file with `weights_only=True` as well and finds our layers allowed.
"""
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError
from .detector import allowed_classes, family as detector_family, load_pickled


def vet_checkpoint(path, family: Optional[str] = None) -> Path:
    """`path` after a full restricted load (nothing executed; CheckpointError with one line for a
    refused class, a damaged file, or with `family` ('ultralytics', 'yolo9', 'yolov5') a model
    of another kind); its classes are then allowed in every later
    `torch.load(weights_only=True)` of this process."""
    path = Path(path)
    ckpt = load_pickled(path)
    if family is not None:
        _check_family(path, ckpt.get('ema') or ckpt.get('model'), family)
    torch.serialization.add_safe_globals([cls for cls, _ in allowed_classes(path)])
    return path


def _check_family(path: Path, model, wanted: str):
    try:
        found = detector_family(model)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    if found != wanted:
        raise CheckpointError(f'{path}: a {found} detector; this command takes {wanted} checkpoints'
                              + (' (load it with models.handoff.yolov5.load_detection_model)' if found != 'ultralytics'
                                 else ''))


def ultralytics_safe_mode():
    """Switch on ultralytics' own restricted loading for this process: the flag its
    `ULTRALYTICS_SAFE_LOAD` variable sets at import, set on the imported modules (so that it also
    holds where ultralytics was imported before, and child processes are left as they were)."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as utils
    for module in (utils, tasks):
        module.SAFE_LOAD = True
