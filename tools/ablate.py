#!/usr/bin/env python
"""Run recipe variants over several seeds and report how they compare (with confidence intervals).

The command lives in distill/cli/ablate.py (installed as `riformer-ablate`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.ablate import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
