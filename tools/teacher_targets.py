#!/usr/bin/env python
"""How much a cheaper teacher forward changes the targets: logits and every recorded feature of

The command lives in distill/cli/teacher_targets.py (installed as `riformer-teacher-targets`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.teacher_targets import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
