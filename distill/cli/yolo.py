#!/usr/bin/env python
"""ultralytics' `yolo` command with checkpoints read safely (installed as `riformer-yolo`).

usage: riformer-yolo TASK MODE key=value ...     (the arguments of `yolo`; `yolo help` lists them)

    riformer-yolo detect predict model=runs/detect/exp/weights/best.pt source=images/
    riformer-yolo detect train model=runs/detect/exp/weights/last.pt data=data.yaml epochs=10

The same arguments as `yolo`. Before ultralytics starts, the `model=` checkpoint is read with
`torch.load(weights_only=True)` and an allow-list of layer classes (refused with one `error:`
line if it names anything else), this project's layers are registered, and ultralytics runs in
its safe mode (what `ULTRALYTICS_SAFE_LOAD=1` switches on), so no code from the file runs.
"""
import os
import sys
from pathlib import Path

from . import one_line_errors


@one_line_errors
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (['-h'], ['--help']):
        print(__doc__)
        return 0
    os.environ.setdefault('YOLO_AUTOINSTALL', 'False')
    from models.handoff.safe_load import ultralytics_safe_mode, vet_checkpoint
    ultralytics_safe_mode()
    for arg in argv:
        key, _, value = arg.partition('=')
        if key == 'model' and value.endswith('.pt') and Path(value).is_file():
            vet_checkpoint(value)
    import models.handoff.yolo  # noqa: F401  (our layer names, for model YAMLs and rebuilds)
    from ultralytics.cfg import entrypoint
    entrypoint(' '.join(['yolo', *argv]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
