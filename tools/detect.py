#!/usr/bin/env python
"""Train, validate, predict with and export ultralytics detectors on a deploy backbone.

    python tools/detect.py train   --cfg recipes/detect/yolov8-riformer_s12.yaml --backbone S12.deploy.safetensors --data data.yaml
    python tools/detect.py train   --resume runs/detect/exp/weights/last.pt
    python tools/detect.py val     --weights runs/detect/exp/weights/best.pt --data data.yaml
    python tools/detect.py predict --weights runs/detect/exp/weights/best.pt --source images/
    python tools/detect.py export  --weights runs/detect/exp/weights/best.pt --format onnx

The `yolo` command cannot register modules, so this launcher imports `models.handoff.yolo`
(which registers DeployBackbone) before ultralytics builds or unpickles a model. It also writes
the model YAML with the backbone source resolved to an absolute, quoted path (ultralytics
rebuilds from that YAML when it fine-tunes or resumes) and turns ultralytics' auto-install of
unknown packages off unless YOLO_AUTOINSTALL is set. Extra `key=value` arguments go to
ultralytics unchanged (values parsed as YAML scalars).
"""
import argparse
import os
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Before ultralytics is imported: it reads this once, and would otherwise pip-install the
# package of any module name a checkpoint refers to but cannot import.
os.environ.setdefault('YOLO_AUTOINSTALL', 'False')

from models import CheckpointError  # noqa: E402


def parse_overrides(items):
    out = {}
    for item in items:
        key, sep, value = item.partition('=')
        if not sep or not key.isidentifier():
            raise CheckpointError(f'{item!r}: extra arguments must be key=value (ultralytics settings)')
        try:
            out[key] = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            out[key] = value
    return out


def existing(path, what, suffixes=None) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f'{path}: no such {what}')
    if suffixes and path.suffix not in suffixes:
        raise CheckpointError(f'{path}: expected a {what} ({" or ".join(suffixes)}), got {path.suffix or "no suffix"}')
    return path.resolve()


def detector_class(cfg=None, weights=None):
    from ultralytics import RTDETR, YOLO
    from models.handoff import yolo as handoff
    if cfg is not None:
        return RTDETR if handoff.is_rtdetr(cfg) else YOLO
    # A trained checkpoint loads through ultralytics' own loader (never unpickled here); only
    # RTDETR wires the RT-DETR validator/predictor, so reload as RTDETR when the head says so.
    from ultralytics.nn.tasks import RTDETRDetectionModel
    model = YOLO(str(weights))
    return RTDETR if isinstance(model.model, RTDETRDetectionModel) else YOLO


def cmd_train(args, extra):
    from models.handoff import yolo as handoff
    common = dict(epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, workers=args.workers)
    if args.device:
        common['device'] = args.device
    if args.resume:
        weights = existing(args.resume, 'checkpoint', ('.pt',))
        model = detector_class(weights=weights)(str(weights))
        return model.train(resume=True, **extra)
    if not args.cfg or not args.data:
        raise CheckpointError('train needs --cfg and --data (or --resume last.pt)')
    data = existing(args.data, 'dataset YAML', ('.yaml', '.yml'))
    cfg = handoff.prepare_cfg(handoff.load_cfg(args.cfg), args.backbone)
    project = Path(args.project).resolve()
    path = handoff.write_cfg(cfg, project / f'{args.name}.yaml')
    print(f'model YAML: {path}')
    model = detector_class(cfg)(str(path))
    return model.train(data=str(data), project=str(project), name=args.name, exist_ok=args.exist_ok,
                       **common, **extra)


def cmd_val(args, extra):
    weights = existing(args.weights, 'checkpoint', ('.pt',))
    model = detector_class(weights=weights)(str(weights))
    kwargs = dict(imgsz=args.imgsz, batch=args.batch, workers=args.workers, **extra)
    if args.data:
        kwargs['data'] = str(existing(args.data, 'dataset YAML', ('.yaml', '.yml')))
    if args.device:
        kwargs['device'] = args.device
    metrics = model.val(**kwargs)
    print(f'mAP50-95 {metrics.box.map:.4f}  mAP50 {metrics.box.map50:.4f}')
    return metrics


def cmd_predict(args, extra):
    weights = existing(args.weights, 'checkpoint', ('.pt',))
    source = existing(args.source, 'image source')
    model = detector_class(weights=weights)(str(weights))
    kwargs = dict(imgsz=args.imgsz, conf=args.conf, **extra)
    if args.device:
        kwargs['device'] = args.device
    results = model.predict(str(source), **kwargs)
    for r in results:
        print(f'{Path(r.path).name}: {len(r.boxes)} boxes')
    return results


def cmd_export(args, extra):
    weights = existing(args.weights, 'checkpoint', ('.pt',))
    model = detector_class(weights=weights)(str(weights))
    kwargs = dict(format=args.format, imgsz=args.imgsz, **extra)
    if args.format == 'onnx':
        kwargs.setdefault('simplify', False)   # onnxslim is not a dependency; no auto-install
    out = model.export(**kwargs)
    print(f'exported: {out}')
    return out


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        p.add_argument('--imgsz', type=int, default=640)
        p.add_argument('--device', help="'cpu', '0', ... (default: ultralytics' choice)")
        return p

    p = add('train', cmd_train, 'train a detector from a model YAML')
    p.add_argument('--cfg', help='model YAML with a DeployBackbone row (recipes/detect/)')
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


def main(argv=None):
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        extra = parse_overrides(rest)
        args.func(args, extra)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
