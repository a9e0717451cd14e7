"""YOLOv5 / YOLOv9 code bases: build their DetectionModel around a deploy backbone
(`build_detection_model`, yolov5_build.py, whose docstring says how) and load a saved one back
without running anything from the file (`load_detection_model`).

The builder lives in yolov5_build.py so that the checkpoint reader (safe_load.py), which rebuilds
a stored yolov5 / yolo9 detector with it, sits between the two: this module imports the reader,
the reader imports the builder, and nothing imports back."""
import torch.nn as nn

from .detector_file import detector_of
from .safe_load import load_pickled
from .yolov5_build import Pick, build_detection_model

__all__ = ['Pick', 'build_detection_model', 'load_detection_model']


def load_detection_model(path, fuse: bool = True) -> nn.Module:
    """A YOLOv5 / YOLOv9 DetectionModel saved as `{'model': net}` (as their train.py saves it),
    in eval mode and float32, fused (Conv + BatchNorm) unless `fuse=False`. Nothing named in the
    file runs: it is read into inert data, its stored YAML is checked (their parser evals module
    names and string arguments) and the model is rebuilt by `build_detection_model`
    (`safe_load.load_pickled`); the package of the detector (`yolov5` / `yolo9`) must be importable."""
    model = detector_of(load_pickled(path)).eval()
    return model.fuse() if fuse and hasattr(model, 'fuse') else model
