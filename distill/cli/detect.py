#!/usr/bin/env python
"""Train, validate, predict with and export ultralytics detectors on a deploy backbone.

    python tools/detect.py train   --cfg recipes/detect/yolov8-riformer_s12.yaml --backbone riformer_s12.deploy.safetensors --data data.yaml
    python tools/detect.py train   --weights runs/detect/exp/weights/last.pt --data other.yaml   # fine-tune
    python tools/detect.py train   --resume runs/detect/exp/weights/last.pt
    python tools/detect.py val     --weights runs/detect/exp/weights/best.pt --data data.yaml
    python tools/detect.py predict --weights runs/detect/exp/weights/best.pt --source images/
    python tools/detect.py export  --weights runs/detect/exp/weights/best.pt --format onnx

A fresh run builds the detector once from the model YAML (deploy weights read from the file,
resolved to an absolute path) and starts training from that, saved as RUN/init.pt with the
prepared YAML as RUN/model.yaml: the YAML stored in every checkpoint names the backbone's
architecture only, so fine-tuning and resuming never need the deploy file (the `yolo` command
takes the checkpoints too: unpickling one imports this package, which registers its layers).
Auto-install of unknown packages is off unless YOLO_AUTOINSTALL is set. Extra `key=value`
arguments go to ultralytics unchanged (values parsed as YAML scalars).

No code from a checkpoint runs: every .pt is read with `torch.load(weights_only=True)` and an
allow-list of layer classes before ultralytics sees it, and ultralytics runs in its safe mode
(models/handoff/safe_load.py).
"""
import os
import sys
from pathlib import Path

import yaml

# Before ultralytics is imported: it reads this once, and would otherwise pip-install the
# package of any module name a checkpoint refers to but cannot import.
os.environ.setdefault('YOLO_AUTOINSTALL', 'False')

from models import UsageError  # noqa: E402

from . import Parser, one_line_errors  # noqa: E402


def parse_overrides(items):
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise UsageError(f'{item!r}: extra arguments must be key=value (ultralytics settings)')
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            out[key] = value
    return out


def existing(path, what, suffixes=None) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f'{path}: no such {what}')
    if suffixes and path.suffix not in suffixes:
        raise UsageError(f'{path}: expected a {what} ({" or ".join(suffixes)}), got {path.suffix or "no suffix"}')
    return path.resolve()


def checkpoint(path) -> Path:
    """A detector checkpoint argument: there, a .pt, and read without running code from it."""
    from models.handoff.safe_load import vet_checkpoint
    return vet_checkpoint(existing(path, 'checkpoint', ('.pt',)))


def detector_class(weights):
    from ultralytics import RTDETR, YOLO
    # A trained checkpoint loads through ultralytics' own loader (never unpickled here); only
    # RTDETR wires the RT-DETR validator/predictor, so reload as RTDETR when the head says so.
    from ultralytics.nn.tasks import RTDETRDetectionModel
    import models.handoff.yolo  # noqa: F401  (registers our layers before anything is unpickled)
    model = YOLO(str(weights))
    return RTDETR if isinstance(model.model, RTDETRDetectionModel) else YOLO


def dataset_classes(path):
    """The class count of an ultralytics dataset YAML (None when it does not say)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise UsageError(f'{path}: not a dataset YAML') from None
    if not isinstance(data, dict):
        raise UsageError(f'{path}: not a dataset YAML')
    names = data.get('names')
    return int(data['nc']) if 'nc' in data else (len(names) if isinstance(names, (list, dict)) else None)


def run_dir(project, name, exist_ok) -> Path:
    """The run folder ultralytics would choose (`exp`, `exp2`, ...), decided here so the prepared
    YAML and init.pt go inside it."""
    from ultralytics.utils.files import increment_path
    return Path(increment_path(Path(project).resolve() / name, exist_ok=exist_ok))


def cmd_train(args, extra):
    from models.handoff import yolo as handoff
    common = dict(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers)
    if args.device:
        common['device'] = args.device
    if args.resume:
        weights = checkpoint(args.resume)
        model = detector_class(weights)(str(weights))
        return model.train(resume=True, **extra)
    if sum(bool(a) for a in (args.cfg, args.weights)) != 1 or not args.data:
        raise UsageError('train needs --data and one of --cfg (a model YAML, fresh detector) or '
                              '--weights (a trained .pt, fine-tune); or --resume last.pt')
    data = existing(args.data, 'dataset YAML', ('.yaml', '.yml'))
    if args.weights:
        weights = checkpoint(args.weights)
        start = detector_class(weights)(str(weights))
    else:
        cfg = handoff.prepare_cfg(handoff.load_cfg(args.cfg), args.backbone)
        folder = run_dir(args.project, args.name, args.exist_ok)
        init = checkpoint(handoff.init_checkpoint(cfg, folder, nc=dataset_classes(data)))
        print(f'model YAML: {folder / "model.yaml"}\nstart checkpoint: {init}')
        start = handoff.detector_class(cfg)(str(init))
        args.name, args.exist_ok = folder.name, True
    return start.train(data=str(data), project=str(Path(args.project).resolve()), name=args.name,
                       exist_ok=args.exist_ok, **common, **extra)


def cmd_val(args, extra):
    weights = checkpoint(args.weights)
    model = detector_class(weights)(str(weights))
    kwargs = dict(imgsz=args.imgsz, batch=args.batch, workers=args.workers, **extra)
    if args.data:
        kwargs['data'] = str(existing(args.data, 'dataset YAML', ('.yaml', '.yml')))
    if args.device:
        kwargs['device'] = args.device
    metrics = model.val(**kwargs)
    print(f'mAP50-95 {metrics.box.map:.4f}  mAP50 {metrics.box.map50:.4f}')
    return metrics


def cmd_predict(args, extra):
    weights = checkpoint(args.weights)
    source = existing(args.source, 'image source')
    model = detector_class(weights)(str(weights))
    kwargs = dict(imgsz=args.imgsz, conf=args.conf, **extra)
    if args.device:
        kwargs['device'] = args.device
    results = model.predict(str(source), **kwargs)
    for r in results:
        print(f'{Path(r.path).name}: {len(r.boxes)} boxes')
    return results


def cmd_export(args, extra):
    weights = checkpoint(args.weights)
    model = detector_class(weights)(str(weights))
    kwargs = dict(format=args.format, imgsz=args.imgsz, **extra)
    if args.format == 'onnx':
        kwargs.setdefault('simplify', False)   # onnxslim is not a dependency; no auto-install
    out = model.export(**kwargs)
    print(f'exported: {out}')
    return out


def build_parser():
    parser = Parser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        p.add_argument('--imgsz', type=int, default=640)
        p.add_argument('--device', help="'cpu', '0', ... (default: ultralytics' choice)")
        return p

    p = add('train', cmd_train, 'train a detector from a model YAML, or fine-tune a trained one')
    p.add_argument('--cfg', help='model YAML with a DeployBackbone row (recipes/detect/)')
    p.add_argument('--weights', help='fine-tune a trained detector checkpoint (.pt) instead of --cfg')
    p.add_argument('--backbone', help='deploy checkpoint or backbone name; replaces the YAML source')
    p.add_argument('--data', help='ultralytics dataset YAML')
    p.add_argument('--resume', help='resume an interrupted run from its last.pt')
    p.add_argument('--epochs', type=int, default=100)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--workers', type=int, default=8)
    p.add_argument('--project', default='runs/detect')
    p.add_argument('--name', default='exp')
    p.add_argument('--exist-ok', action='store_true')
    p = add('val', cmd_val, 'validate a trained detector')
    p.add_argument('--weights', required=True)
    p.add_argument('--data')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--workers', type=int, default=8)
    p = add('predict', cmd_predict, 'run a trained detector on images')
    p.add_argument('--weights', required=True)
    p.add_argument('--source', required=True)
    p.add_argument('--conf', type=float, default=0.25)
    p = add('export', cmd_export, 'export a trained detector (ultralytics exporter)')
    p.add_argument('--weights', required=True)
    p.add_argument('--format', default='onnx', help='onnx, torchscript, ... (ultralytics formats)')
    return parser


@one_line_errors
def main(argv=None):
    from models.handoff.safe_load import ultralytics_safe_mode
    ultralytics_safe_mode()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    args.func(args, parse_overrides(rest))
    return 0


if __name__ == '__main__':
    sys.exit(main())
