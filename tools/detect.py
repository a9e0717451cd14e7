#!/usr/bin/env python
"""Train, validate, predict with and export ultralytics detectors on a deploy backbone.

The command lives in distill/cli/detect.py (installed as `riformer-detect`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.detect import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
