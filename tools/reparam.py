#!/usr/bin/env python
"""Fold a trained RIFormer into its deploy form, check it, and write the deploy checkpoint.

The command lives in distill/cli/reparam.py (installed as `riformer-reparam`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.reparam import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
