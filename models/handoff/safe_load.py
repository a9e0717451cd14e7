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

import torch

from .detector import allowed_classes, load_pickled


def vet_checkpoint(path) -> Path:
    """`path` after a full restricted load (nothing executed; CheckpointError with one line for a
    refused class or a damaged file); its classes are then allowed in every later
    `torch.load(weights_only=True)` of this process."""
    path = Path(path)
    load_pickled(path)
    torch.serialization.add_safe_globals([cls for cls, _ in allowed_classes(path)])
    return path


def ultralytics_safe_mode():
    """Switch on ultralytics' own restricted loading for this process: the flag its
    `ULTRALYTICS_SAFE_LOAD` variable sets at import, set on the imported modules (so that it also
    holds where ultralytics was imported before, and child processes are left as they were)."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as utils
    for module in (utils, tasks):
        module.SAFE_LOAD = True
