#!/usr/bin/env python
"""ultralytics' `yolo` command with checkpoints read safely (installed as `riformer-yolo`).

usage: riformer-yolo TASK MODE key=value ...     (the arguments of `yolo`; `yolo help` lists them)

    riformer-yolo detect predict model=runs/detect/exp/weights/best.pt source=images/
    riformer-yolo detect train model=runs/detect/exp/weights/last.pt data=data.yaml epochs=10

The same arguments as `yolo`. Before ultralytics starts, the `model=` checkpoint (also written
`model = x.pt`) is read without running anything from it: its pickle into plain data and inert
stand-ins of layer classes, its stored model YAML checked, the detector rebuilt from it
(models/handoff/safe_load.py; one `error:` line otherwise). ultralytics then runs in its safe
mode (what `ULTRALYTICS_SAFE_LOAD=1` switches on) and opens every `.pt` through the same reader;
a `model=` URL or exported model (ONNX, OpenVINO, TorchScript, ...) is refused (download it, then
pass the file; pass the `.pt` an export came from), and so is a `data=` YAML with a
`download:` entry (ultralytics runs it when images are missing): nothing it names runs or is fetched.
"""
import os
import sys
from pathlib import Path

from . import one_line_errors


def arguments(argv, key: str):
    """Every `key=` value, also written `key = value` or `key= value` (ultralytics merges those)."""
    from ultralytics.cfg import merge_equals_args
    try:
        merged = merge_equals_args(list(argv))
    except SyntaxError as e:
        from models import UsageError
        raise UsageError(f'{e}') from None
    return [arg.partition('=')[2] for arg in merged if arg.partition('=')[0].strip() == key]


MODEL_SUFFIXES = ('.pt', '.yaml', '.yml')


def vet_model(value: str):
    """A `model=` that riformer-yolo hands to ultralytics: a local `.pt` checkpoint (read by our
    reader), a model YAML, or a bare name (ultralytics' own assets). An exported model (ONNX,
    OpenVINO, TorchScript, TensorRT, ... : a file or folder of another suffix) would go to
    ultralytics' backend for that runtime, which reads it with nothing of ours in front: refused,
    as a URL is, before anything is opened."""
    from models import UsageError
    from models.handoff.safe_load import URL_PREFIXES
    if value.lower().startswith(URL_PREFIXES):
        raise UsageError(f'model={value}: riformer-yolo opens local checkpoints only; download the file, '
                         f'then pass its path')
    path = Path(value)
    if path.suffix.lower() not in MODEL_SUFFIXES and (path.suffix or path.exists() or path.is_symlink()):
        raise UsageError(f'model={value}: riformer-yolo opens .pt checkpoints and model YAMLs only; run an '
                         f'exported model (ONNX, OpenVINO, TorchScript, ...) with its own runtime, or pass the '
                         f'.pt it was exported from')


@one_line_errors
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (['-h'], ['--help']):
        print(__doc__)
        return 0
    os.environ.setdefault('YOLO_AUTOINSTALL', 'False')
    from models.handoff.safe_load import ultralytics_safe_mode, vet_checkpoint, vet_dataset, vet_model_yaml
    ultralytics_safe_mode()
    import models.handoff.yolo  # noqa: F401  (our layer names, for model YAMLs and rebuilds)
    for value in arguments(argv, 'data'):
        vet_dataset(value)
    for value in arguments(argv, 'model'):
        vet_model(value)
        if value.endswith('.pt') and Path(value).is_file():
            vet_checkpoint(value)
        elif value.lower().endswith(('.yaml', '.yml')) and (Path(value).exists() or Path(value).is_symlink()):
            vet_model_yaml(value)     # a local file; a bare name is one of ultralytics' own assets
    from ultralytics.cfg import entrypoint
    entrypoint(' '.join(['yolo', *argv]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
