#!/usr/bin/env python
"""The GPU check: what a CPU cannot check, run on the first CUDA machine into one report (exit 3 without CUDA).

The command lives in distill/cli/gpu_check.py; `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.gpu_check import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
