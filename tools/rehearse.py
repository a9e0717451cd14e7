#!/usr/bin/env python
"""Rehearse a paper recipe on an ImageNet-shaped folder: step time, memory, checkpoints, kill and exact resume.

The command lives in distill/cli/rehearse.py; `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.rehearse import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
