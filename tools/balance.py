#!/usr/bin/env python
"""The loss balance of a recipe at its real shapes, without its data or downloaded weights.

The command lives in distill/cli/balance.py (installed as `riformer-balance`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.balance import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
