"""Detector files and exports, for the detect command and distill/detect_exports.py: checkpoint
and dataset arguments vetted before ultralytics reads them (models/handoff/safe_load.py), the
ultralytics class a checkpoint loads as, and an export through ultralytics' own exporter.

ultralytics and torch load on first use, so a command that imports this module answers --help
at once.
"""
import os
from pathlib import Path

# Before ultralytics is imported: it reads this once, and would otherwise pip-install the
# package of any module name a checkpoint refers to but cannot import.
os.environ.setdefault('YOLO_AUTOINSTALL', 'False')

from distill.errors import UsageError  # noqa: E402  (models/errors.py's class, without importing torch)


def existing(path, what, suffixes=None) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f'{path}: no such {what}')
    if suffixes and path.suffix not in suffixes:
        raise UsageError(f'{path}: expected a {what} ({" or ".join(suffixes)}), got {path.suffix or "no suffix"}')
    return path.resolve()


def checkpoint(path) -> Path:
    """A detector checkpoint argument: there, a .pt, read without running code from it, and an
    ultralytics detector."""
    from models.handoff.safe_load import vet_checkpoint
    return vet_checkpoint(existing(path, 'checkpoint', ('.pt',)), family='ultralytics')


def dataset(path) -> Path:
    """A dataset YAML argument: there, a .yaml, and nothing in it that ultralytics would run or
    fetch (a download: entry)."""
    from models.handoff.safe_load import vet_dataset
    return vet_dataset(existing(path, 'dataset YAML', ('.yaml', '.yml')))


def detector_class(weights):
    from ultralytics import RTDETR, YOLO
    # A trained checkpoint loads through ultralytics' own loader (never unpickled here); only
    # RTDETR wires the RT-DETR validator/predictor, so reload as RTDETR when the head says so.
    from ultralytics.nn.tasks import RTDETRDetectionModel
    import models.handoff.yolo  # noqa: F401  (registers our layers before anything is unpickled)
    model = YOLO(str(weights))
    return RTDETR if isinstance(model.model, RTDETRDetectionModel) else YOLO


def export_detector(weights, settings: dict, log=print):
    """Export the trained detector checkpoint `weights` with ultralytics' exporter under
    `settings` (format, imgsz, and ultralytics' own: quantize, data ...); the exported path.
    The checkpoint is vetted and read in ultralytics' safe mode; int8 is made for the CPU's kind."""
    from models.handoff.safe_load import ultralytics_safe_mode
    ultralytics_safe_mode()
    weights = checkpoint(weights)
    model = detector_class(weights)(str(weights))
    kwargs = dict(settings)
    if kwargs.get('data'):          # int8 calibration data
        kwargs['data'] = str(dataset(kwargs['data']))
    if kwargs.get('format') == 'onnx':
        kwargs.setdefault('simplify', False)   # onnxslim is not a dependency; no auto-install
    if str(kwargs.get('quantize')) == '8' or str(kwargs.get('int8')).lower() == 'true':
        # int8 for the CPU's kind (7-bit where its kernels add into saturating 16-bit sums),
        # recorded in the export: models/quantize.py.
        from models.quantize import third_party_int8
        with third_party_int8(log=lambda line: log(f'int8: {line}')):
            return model.export(**kwargs)
    return model.export(**kwargs)
