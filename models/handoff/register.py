"""The layer names our modules have in detector model YAMLs, and putting them where parsers look.

ultralytics' `parse_model` looks names up in `ultralytics.nn.tasks`' globals, YOLOv5/YOLOv9's in
their `models/yolo.py` module. Nothing of theirs is edited: the classes are set as attributes.
`register_loaded()` runs whenever this package is imported, so unpickling a detector checkpoint
(which imports it to rebuild our modules) also registers the names for the rebuild that follows
(`yolo detect train model=last.pt` in a process that never imported us).
"""
import sys

from .backbone import DeployBackbone
from .layers import RIFormerNeckBlock

LAYERS = {'DeployBackbone': DeployBackbone, 'RIFormerBlock': RIFormerNeckBlock}

# Modules whose globals a detector parser evaluates layer names in.
PARSER_MODULES = ('ultralytics.nn.tasks', 'yolov5.models.yolo', 'yolo9.models.yolo')


def register_in(module):
    """Make our layer names resolvable in `module` (a parser's namespace); idempotent."""
    for name, cls in LAYERS.items():
        setattr(module, name, cls)
    return module


def register_loaded():
    """Register in every detector parser already imported in this process."""
    for name in PARSER_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            register_in(module)
