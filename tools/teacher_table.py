#!/usr/bin/env python
"""Train a teacher recipe at several seeds and thread counts and check it against declared numbers.

The command lives in distill/cli/teacher_table.py (installed as `riformer-teacher-table`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.teacher_table import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
