#!/usr/bin/env python
"""Train, validate, predict with and export ultralytics detectors on a deploy backbone.

    python tools/detect.py train   --cfg recipes/detect/yolov8s-riformer_s12.yaml --backbone riformer_s12.deploy.safetensors --data data.yaml
    python tools/detect.py train   --weights runs/detect/exp/weights/last.pt --data other.yaml   # fine-tune
    python tools/detect.py train   --resume runs/detect/exp/weights/last.pt
    python tools/detect.py val     --weights runs/detect/exp/weights/best.pt --data data.yaml
    python tools/detect.py predict --weights runs/detect/exp/weights/best.pt --source images/
    python tools/detect.py export  --weights runs/detect/exp/weights/best.pt --format onnx
    python tools/detect.py info    --cfg recipes/detect/yolov8s-riformer_s12.yaml --backbone riformer_s12.deploy.safetensors

A fresh run builds the detector once from the model YAML (deploy weights read from the file,
resolved to an absolute path) and starts training from that, saved as RUN/init.pt with the
prepared YAML as RUN/model.yaml: the YAML stored in every checkpoint names the backbone's
architecture only, so fine-tuning and resuming never need the deploy file (the `yolo` command
takes the checkpoints too: unpickling one imports this package, which registers its layers).
Auto-install of unknown packages is off unless YOLO_AUTOINSTALL is set. A model YAML with
`scales:` is built at the scale its file name asks for (yolov8s-NAME.yaml reads yolov8-NAME.yaml
at scale s, as ultralytics), or --scale, else its first; the prepared YAML keeps it. Extra
`key=value` arguments go to ultralytics unchanged (values parsed as YAML scalars), except those
that name one of the launcher's options (imgsz=64 is --imgsz 64, model= is --cfg or --weights).

No code from a checkpoint runs: every .pt is read into plain data and inert stand-ins of layer
classes, its stored model YAML checked and the detector rebuilt from it before the command
starts, and ultralytics runs in its safe mode, opening .pt files through the same reader
(models/handoff/safe_load.py).
"""
import argparse
import difflib
import sys
from pathlib import Path

import yaml

# First: it sets YOLO_AUTOINSTALL before anything imports ultralytics.
from distill.detection import checkpoint, dataset, detector_class, existing, export_detector
from distill.errors import UsageError  # (models/errors.py's class, without importing torch)

from . import Parser, one_line_errors


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


# Settings this launcher has options for, under ultralytics' names: `imgsz=64` is taken as `--imgsz 64`.
SHARED = ('imgsz', 'device', 'epochs', 'batch', 'workers', 'data', 'project', 'name', 'exist_ok', 'source',
          'conf', 'format', 'resume')
# Defaults of those options, filled in after the merge (argparse's default would hide whether an option was given).
DEFAULTS = {'imgsz': 640, 'epochs': 100, 'batch': 16, 'workers': 8, 'project': 'runs/detect', 'name': 'exp',
            'exist_ok': False, 'conf': 0.25, 'format': 'onnx'}


def merge_settings(args, extra: dict, parser) -> dict:
    """Take ultralytics-style `key=value` settings that name one of the command's options as that
    option (`model=` as --cfg or --weights; one line if an option is given both ways with
    different values, or `key` is not a setting ultralytics has); fill in the defaults; return
    the settings left for ultralytics."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    options = {a.dest: a for a in parser._actions if a.option_strings}
    rest = {}
    for key, value in extra.items():
        dest = _model_option(args, value) if key == 'model' else key
        if dest in options and (key == 'model' or key in SHARED):   # not cfg=: ultralytics' defaults file
            _set_option(args, options[dest], key, value)
        elif key in DEFAULT_CFG_DICT:
            rest[key] = value
        else:
            names = list(DEFAULT_CFG_DICT) + [o.lstrip('-') for a in options.values() for o in a.option_strings]
            close = difflib.get_close_matches(key, names, 3)
            raise UsageError(f'{key}={value}: not an ultralytics setting'
                             + (f' (close: {", ".join(close)})' if close else ''))
    for key, value in DEFAULTS.items():
        if getattr(args, key, False) is None:
            setattr(args, key, value)
    return rest


def _model_option(args, value) -> str:
    """The option ultralytics' `model=` stands for: the weights, or in train a YAML's --cfg."""
    return 'cfg' if args.command == 'train' and str(value).endswith(('.yaml', '.yml')) else 'weights'


def _set_option(args, action, key, value):
    if key == 'resume' and not isinstance(value, str):
        raise UsageError(f'resume={value}: give the checkpoint to resume: --resume runs/detect/exp/weights/last.pt')
    if action.nargs == 0:                       # a flag (--exist-ok)
        value = bool(value)
    elif value is not None:
        try:
            value = (action.type or str)(str(value))
        except (TypeError, ValueError):
            raise UsageError(f'{key}={value}: {action.option_strings[0]} takes {action.type.__name__} values') from None
    given = getattr(args, action.dest)
    if given is not None and given != value:
        raise UsageError(f'{key} given twice: {action.option_strings[0]} {given} and {key}={value}')
    setattr(args, action.dest, value)


def need(args, *names):
    """One line naming the options this command needs and did not get."""
    missing = [n for n in names if not getattr(args, n)]
    if missing:
        raise UsageError(f'{args.command} needs ' + ' and '.join(f'--{n}' for n in missing))


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
    if args.scale and not args.cfg:
        raise UsageError('--scale picks the scale of a model YAML (--cfg); a checkpoint keeps its own')
    if args.resume:
        weights = checkpoint(args.resume)
        model = detector_class(weights)(str(weights))
        return model.train(resume=True, **extra)
    if sum(bool(a) for a in (args.cfg, args.weights)) != 1 or not args.data:
        raise UsageError('train needs --data and one of --cfg (a model YAML, fresh detector) or '
                              '--weights (a trained .pt, fine-tune); or --resume last.pt')
    data = dataset(args.data)
    if args.weights:
        weights = checkpoint(args.weights)
        start = detector_class(weights)(str(weights))
    else:
        cfg = handoff.load_cfg(args.cfg)
        scale, origin = handoff.choose_scale(cfg, args.scale)
        cfg = handoff.prepare_cfg(cfg, args.backbone, scale=scale)
        if scale:
            print(f'model scale: {scale} ({origin})')
        folder = run_dir(args.project, args.name, args.exist_ok)
        init = checkpoint(handoff.init_checkpoint(cfg, folder, nc=dataset_classes(data)))
        print(f'model YAML: {folder / "model.yaml"}\nstart checkpoint: {init}')
        start = handoff.detector_class(cfg)(str(init))
        args.name, args.exist_ok = folder.name, True
    return start.train(data=str(data), project=str(Path(args.project).resolve()), name=args.name,
                       exist_ok=args.exist_ok, **common, **extra)


def cmd_val(args, extra):
    need(args, 'weights')
    weights = checkpoint(args.weights)
    model = detector_class(weights)(str(weights))
    kwargs = dict(imgsz=args.imgsz, batch=args.batch, workers=args.workers, **extra)
    if args.data:
        kwargs['data'] = str(dataset(args.data))
    if args.device:
        kwargs['device'] = args.device
    metrics = model.val(**kwargs)
    print(f'mAP50-95 {metrics.box.map:.4f}  mAP50 {metrics.box.map50:.4f}')
    return metrics


def cmd_predict(args, extra):
    need(args, 'weights', 'source')
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
    need(args, 'weights')
    out = export_detector(args.weights, dict(format=args.format, imgsz=args.imgsz, **extra))
    print(f'exported: {out}')
    return out


def cmd_info(args, extra):
    """Parameters and GFLOPs of the detector a model YAML builds: ultralytics' summary (its thop
    count) next to torch's FlopCounterMode over the reference forward (what it computes)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import models
    from models.handoff import yolo as handoff
    need(args, 'cfg', 'backbone')
    cfg = handoff.load_cfg(args.cfg)
    scale, origin = handoff.choose_scale(cfg, args.scale)
    net = handoff.build_detector(handoff.prepare_cfg(cfg, args.backbone, scale=scale)).eval()
    if args.folded:
        models.reparameterize(net)
    _, params, _, summary = net.info(verbose=True, imgsz=args.imgsz)
    with models.reference_forward(net), FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, args.imgsz, args.imgsz))
    name = Path(args.cfg).stem + (f' (scale {scale})' if scale else '') + (' folded' if args.folded else '')
    print(f'{name}: {params:,} parameters, {summary:.1f} GFLOPs in the ultralytics summary, '
          f'{counter.get_total_flops() / 1e9:.1f} GFLOPs by FlopCounterMode at {args.imgsz}x{args.imgsz}')


def build_parser():
    examples = __doc__.split('\n\n')[1]       # the docstring's command lines
    parser = Parser(description=__doc__.split('\n\n')[0], epilog='examples:\n' + examples,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    def add(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text + '. Options that ultralytics also has '
                           'may be given its way too (imgsz=64); other key=value arguments go to ultralytics.')
        p.set_defaults(func=func)
        p.add_argument('--imgsz', type=int, help='image size (default 640)')
        p.add_argument('--device', help="'cpu', '0', ... (default: ultralytics' choice)")
        return p

    p = add('train', cmd_train, 'train a detector from a model YAML, or fine-tune a trained one')
    p.add_argument('--cfg', help='model YAML with a DeployBackbone row (recipes/detect/); yolov8s-NAME.yaml '
                                 'reads yolov8-NAME.yaml at scale s, as ultralytics')
    p.add_argument('--scale', help='the scale of a model YAML with scales: (n, s, m, l, x; default: from the '
                                   'file name, else the first)')
    p.add_argument('--weights', help='fine-tune a trained detector checkpoint (.pt) instead of --cfg')
    p.add_argument('--backbone', help='deploy checkpoint or backbone name; replaces the YAML source')
    p.add_argument('--data', help='ultralytics dataset YAML')
    p.add_argument('--resume', help='resume an interrupted run from its last.pt')
    p.add_argument('--epochs', type=int, help='default 100')
    p.add_argument('--batch', type=int, help='default 16')
    p.add_argument('--workers', type=int, help='default 8')
    p.add_argument('--project', help='default runs/detect')
    p.add_argument('--name', help='default exp')
    p.add_argument('--exist-ok', action='store_true', default=None)
    p = add('val', cmd_val, 'validate a trained detector')
    p.add_argument('--weights')
    p.add_argument('--data')
    p.add_argument('--batch', type=int, help='default 16')
    p.add_argument('--workers', type=int, help='default 8')
    p = add('predict', cmd_predict, 'run a trained detector on images')
    p.add_argument('--weights')
    p.add_argument('--source')
    p.add_argument('--conf', type=float, help='default 0.25')
    p = add('export', cmd_export, 'export a trained detector (ultralytics exporter)')
    p.add_argument('--weights')
    p.add_argument('--format', help='onnx (default), torchscript, ... (ultralytics formats)')
    p = add('info', cmd_info, "a model YAML's parameters and GFLOPs (summary and FlopCounterMode)")
    p.add_argument('--cfg', help='model YAML with a DeployBackbone row')
    p.add_argument('--scale', help='as for train')
    p.add_argument('--backbone', help='deploy checkpoint (random weights do: tools/reparam.py --random riformer_s12)')
    p.add_argument('--folded', action='store_true', help='count after folding the RIFormerBlocks (tools/reparam.py)')
    return parser


@one_line_errors
def main(argv=None):
    parser = build_parser()
    # parsed first: --help and argument errors do not wait for torch and ultralytics (seconds);
    # parsing reads no file, so nothing is opened before the safe mode below
    args, rest = parser.parse_known_args(argv)
    from models.handoff.safe_load import ultralytics_safe_mode
    ultralytics_safe_mode()
    extra = merge_settings(args, parse_overrides(rest), _subparser(parser, args.command))
    args.func(args, extra)
    return 0


def _subparser(parser, command):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


if __name__ == '__main__':
    sys.exit(main())
