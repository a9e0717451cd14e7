#!/usr/bin/env python
"""Inference throughput and latency of RIFormer's forms next to PoolFormer and other backbones.

The command lives in distill/cli/benchmark.py (installed as `riformer-benchmark`); `--help` shows its usage."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli.benchmark import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
