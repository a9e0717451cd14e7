#!/usr/bin/env python
"""Write an ImageNet-shaped folder of JPEGs: rehearsal data, never accuracy data.

The command lives in distill/cli/imagenet_shaped.py; `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.imagenet_shaped import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
