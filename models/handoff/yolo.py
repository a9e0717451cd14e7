"""Ultralytics (8.4) hand-off: importing this module registers `DeployBackbone` for model YAMLs.

ultralytics' `parse_model` looks module names up in `ultralytics.nn.tasks`' globals, so the class
is placed there (no ultralytics code is changed). In a YAML the backbone is one row returning a
list of maps, followed by `Index` rows that pick a map and declare its channels:

    - [-1, 1, DeployBackbone, ["'riformer_s12.deploy.safetensors'", [1, 2, 3]]]   # 0
    - [0, 1, Index, [128, 0]]   # P3/8
    - [0, 1, Index, [320, 1]]   # P4/16
    - [0, 1, Index, [512, 2]]   # P5/32

Pitfalls handled here (REFERENCE section 4): string arguments go through `ast.literal_eval`, so
a path must be quoted ("'path'"; `prepare_cfg` does it); an undeclared or wrong channel count
breaks the head later with a shape error (`prepare_cfg` checks it against the backbone); and
ultralytics rebuilds the model from the YAML stored in a checkpoint when it fine-tunes or
resumes, so `prepare_cfg` records the checkpoint's absolute path. Its BatchNorm reset (eps 1e-3)
cannot touch the backbone: deploy forms hold no BatchNorm.
"""
import copy
from pathlib import Path
from typing import Optional

import yaml

from ..errors import CheckpointError
from ..riformer import ARCHS
from ..loader import clean_source
from .backbone import DeployBackbone, backbone_names

MODULE_NAME = 'DeployBackbone'


def register():
    """Make `DeployBackbone` a name ultralytics model YAMLs can use (idempotent)."""
    import ultralytics.nn.tasks as tasks
    setattr(tasks, MODULE_NAME, DeployBackbone)
    return tasks


register()


def load_cfg(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: no such model YAML')
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f'{path}: not valid YAML ({str(e).splitlines()[0]})') from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get('backbone'), list) or not isinstance(cfg.get('head'), list):
        raise CheckpointError(f'{path}: not an ultralytics model YAML (needs backbone: and head: lists)')
    return cfg


def is_rtdetr(cfg: dict) -> bool:
    return any(row[2] == 'RTDETRDecoder' for row in cfg['head'])


def prepare_cfg(cfg: dict, backbone: Optional[str] = None, base_dir: Optional[Path] = None) -> dict:
    """A copy of `cfg` with every DeployBackbone source resolved and quoted, and the channel counts
    of the `Index` rows that read it checked. `backbone` replaces the source of every such row;
    relative paths are taken from the current directory (or `base_dir`)."""
    cfg = copy.deepcopy(cfg)
    rows = cfg['backbone'] + cfg['head']
    found = False
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4 and row[2] == MODULE_NAME):
            continue
        found = True
        args = list(row[3])
        if not args and backbone is None:
            raise CheckpointError(f'row {i}: DeployBackbone needs a source (checkpoint path or name)')
        source = clean_source(backbone if backbone is not None else args[0])
        if source not in backbone_names() and source not in ARCHS:   # names pass through
            path = Path(source).expanduser()
            if not path.is_absolute():
                path = (base_dir or Path.cwd()) / path
            source = str(path.resolve())
        args = [repr(source), *args[1:]] if args else [repr(source)]
        row[3] = args
        module = DeployBackbone(*args)
        _check_index_rows(rows, i, module)
    if not found:
        raise CheckpointError(f'the model YAML has no {MODULE_NAME} row')
    return cfg


def _check_index_rows(rows, index, module):
    for j, row in enumerate(rows):
        source = row[0] + j if isinstance(row[0], int) and row[0] < 0 else row[0]
        if row[2] != 'Index' or source != index:
            continue
        if len(row[3]) != 2:
            raise CheckpointError(f'row {j}: Index needs [channels, index], got {row[3]}')
        channels, which = row[3]
        if not -len(module.channels) <= which < len(module.channels):
            raise CheckpointError(f'row {j}: Index {which} out of range; the backbone gives {len(module.channels)} maps')
        if channels != module.channels[which]:
            raise CheckpointError(
                f'row {j}: Index declares {channels} channels for output {which}, the backbone gives '
                f'{module.channels[which]} (all: {module.channels}, strides {module.strides})')


def write_cfg(cfg: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
