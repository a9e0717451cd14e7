"""YOLOv5 / YOLOv9 code bases: build their DetectionModel around a deploy backbone, no file edited.

Their `parse_model` evaluates module names in `models/yolo.py` and derives every layer's input
channels from a fixed list of known classes; a foreign module is assumed to keep its input
channels, and there is no `Index` module, so a backbone returning several maps cannot be named
in their YAML directly. The shim lets their own parser build everything else: the backbone rows
are handed to it as stand-ins (a `nn.Identity` and strided 1x1-channel `Conv`s with exactly the
backbone's channels and strides), so their channel bookkeeping, stride computation, anchor check
and Detect bias init run unchanged; the stand-ins are then swapped for `DeployBackbone` and
`Pick` modules. Our YAML rows are the same as for ultralytics:

    - [-1, 1, DeployBackbone, [riformer_s12, [1, 2, 3], "'riformer_s12.deploy.safetensors'"]]   # 0
    - [0, 1, Index, [128, 0]]                                              # 1..3, consecutive

Usage (`yolo_module`: 'yolov5.models.yolo' for the `yolov5` package, 'yolo9.models.yolo' for
`yolo9`, or 'models.yolo' inside a checkout; see docs/DETECTORS.md about the `models` clash):

    model = build_detection_model('yolov5-riformer_s12.yaml', 'yolov5.models.yolo', nc=80)

RIFormerBlock rows in the neck (`[-1, 1, RIFormerBlock, [C]]`, see layers.py) go to their parser
unchanged: the shim puts the name into their `models/yolo.py` namespace. A YAML without a
DeployBackbone row (their own backbone, RIFormerBlocks in the neck) is built by their parser alone.

The result is their DetectionModel: their loss and NMS work on it. Saved as `{'model': net}`,
`yolov5.load_detection_model` reads it back (inert read, checked YAML, rebuild, then `fuse()`); yolov5 7.0.14's
own `attempt_load` / `DetectMultiBackend` (and so their detect.py / val.py) fail to import next
to the `models` package of this project and current huggingface_hub. Their train.py rebuilds
the model from `model.yaml` with their parser, which cannot express the DeployBackbone: train
with the returned model from Python instead.
"""
import contextlib
import copy
import importlib
import logging
from pathlib import Path
from typing import Optional, Union

import torch.nn as nn
import yaml

from ..errors import CheckpointError, HandoffError
from .backbone import DeployBackbone
from .layers import collect_width_errors
from .register import register_in
from .yaml_guard import check_model_yaml


class Pick(nn.Module):
    """One map out of the backbone's list (ultralytics' `Index`; YOLOv5/v9 have none)."""

    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[self.index]


def _load(cfg) -> dict:
    if isinstance(cfg, dict):
        return copy.deepcopy(cfg)
    path = Path(cfg)
    if not path.is_file():
        raise HandoffError(f'{path}: no such model YAML')
    return yaml.safe_load(path.read_text())


def build_detection_model(cfg: Union[str, Path, dict], yolo_module: str = 'yolov5.models.yolo',
                          nc: Optional[int] = None, backbone: Optional[str] = None) -> nn.Module:
    try:
        yolo = importlib.import_module(yolo_module)
    except ImportError as e:
        raise HandoffError(f'cannot import {yolo_module} ({e}); install yolov5 / yolo9 or pass the checkout module') from None
    register_in(yolo)       # RIFormerBlock (and DeployBackbone) as names their parser evaluates
    cfg = _load(cfg)
    try:                    # their parser evals module names, string arguments and the activation
        check_model_yaml(cfg, yolo_module.split('.')[0], yolo)
    except CheckpointError as e:
        raise HandoffError(f'model YAML: {str(e).replace("the stored model YAML", "it")}') from None
    if nc is not None:
        cfg['nc'] = nc      # recorded, as their parser does: a rebuild from model.yaml makes the same head
    rows = cfg['backbone']
    if any(row[2] == 'DeployBackbone' for row in rows[1:] + cfg['head']):
        raise HandoffError('DeployBackbone must be the first backbone row')
    if not rows or rows[0][2] != 'DeployBackbone':
        with collect_width_errors():                    # every wrong RIFormerBlock width at once
            return yolo.DetectionModel(cfg, ch=3, nc=nc)     # their backbone: their parser alone
    args = list(rows[0][3])
    if backbone is not None:
        args = [backbone, *args[1:2]]      # replaces the source and its weights
    module = DeployBackbone(*args)
    picks = []
    for j, row in enumerate(rows[1:], start=1):
        if row[2] != 'Index' or row[0] != 0:
            break
        channels, index = row[3]
        if channels != module.channels[index]:
            raise HandoffError(
                f'row {j}: Index declares {channels} channels, the backbone gives {module.channels[index]}')
        picks.append(index)
    if not picks:
        raise HandoffError('DeployBackbone must be followed by [0, 1, Index, [channels, i]] rows')
    if cfg.get('width_multiple', 1.0) != 1.0:
        raise HandoffError('width_multiple must be 1.0 (stand-in widths would be rescaled); write head widths out')

    # Stand-ins with the same channels and strides, chained so that each sees the previous one.
    stand_ins, stride = [[-1, 1, 'nn.Identity', []]], 1
    for index in picks:
        step = module.strides[index] // stride
        if step < 1 or module.strides[index] % stride:
            raise HandoffError('Index rows must follow increasing backbone strides')
        stand_ins.append([-1, 1, 'Conv', [module.channels[index], step, step, 0]])   # k = s, no pad
        stride = module.strides[index]
    surrogate = copy.deepcopy(cfg)
    surrogate['backbone'] = stand_ins + rows[1 + len(picks):]
    with _quiet(getattr(yolo, 'LOGGER', None)), collect_width_errors():   # its table and summary: the stand-ins'
        model = yolo.DetectionModel(surrogate, ch=3, nc=nc)

    # Swap the stand-ins for the real modules (same indices; Picks read row 0's list).
    module.i, module.f, module.type = 0, -1, 'DeployBackbone'
    module.np = sum(p.numel() for p in module.parameters())
    model.model[0] = module
    for j, index in enumerate(picks, start=1):
        pick = Pick(index)
        pick.i, pick.f, pick.type, pick.np = j, 0, 'Pick', 0
        model.model[j] = pick
    model.save = sorted(set(model.save) | {0})
    model.yaml = cfg     # the real description (their parser cannot rebuild it; see above)
    model.info()         # their summary line, of the real model
    return model


@contextlib.contextmanager
def _quiet(logger: Optional[logging.Logger]):
    if logger is None:
        yield
        return
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
