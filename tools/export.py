#!/usr/bin/env python
"""Export a deploy backbone: ONNX, TorchScript, mmpretrain's RIFormer layout, or a deploy file.

The command lives in distill/cli/export.py (installed as `riformer-export`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.export import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
