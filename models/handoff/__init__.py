"""Hand a deploy backbone to detectors.

    build_backbone('student.deploy.safetensors', out_indices=(1, 2, 3))   # stage outputs + feature_info
    DeployBackbone(source, out_indices)          # the same as one nn.Module for a detector's parser
    DeployBackbone('riformer_s12', [1, 2, 3])    # the architecture only (a rebuild from a detector checkpoint)

`source` is a deploy checkpoint (RIFormer from tools/reparam.py, or an EfficientViT / FasterNet
deploy file from tools/export.py) or the timm name of an efficient backbone (`efficientvit_m0`,
`fasternet_t0`, ...; randomly initialised unless `weights` names a local timm checkpoint).

Per detector family:
* ultralytics (YOLOv8/YOLO11-style, RT-DETR): `import models.handoff.yolo` registers
  `DeployBackbone` and `RIFormerBlock` (layers.py) as YAML module names (see recipes/detect/
  and tools/detect.py); importing this package registers them with every detector parser already
  imported, which is what unpickling a detector checkpoint does (register.py).
* YOLOv5 / YOLOv9 code bases: `models.handoff.yolov5` (the shim for their parsers is
  yolov5_build.py; yolov5.py adds `load_detection_model`).
* detector checkpoints, in layers that import only downwards: detector_file.py (what a pickle
  names, writing a checkpoint), yolo.py / yolov5_build.py (the builders), safe_load.py (reading
  one without running anything from it: `load_pickled`, `vet_checkpoint`, ultralytics' safe
  mode), detector.py (folding every RIFormerBlock of a whole detector, `tools/reparam.py DETECTOR.pt`).
* mmdet / mmpretrain: `models.handoff.mmpretrain` (checkpoint in mmpretrain's RIFormer layout).
"""
from .backbone import DeployBackbone, backbone_names, build_backbone, read_metadata
from .layers import RIFormerNeckBlock
from .register import LAYERS, register_in, register_loaded

__all__ = ['DeployBackbone', 'LAYERS', 'RIFormerNeckBlock', 'backbone_names', 'build_backbone', 'read_metadata',
           'register_in', 'register_loaded']

# A detector checkpoint being unpickled imports this package: register our layer names with the
# parsers already loaded, so the rebuild that follows (fine-tune, resume) finds them.
register_loaded()
