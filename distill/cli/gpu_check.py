#!/usr/bin/env python
"""The GPU check: on the first machine with a CUDA device, run what the CPU-only project could
not (the imitation step in bf16 autocast with the fused teacher, 1-process DDP over NCCL,
torch.compile, the trainer's kill and exact resume, the input pipeline, the paper's throughput
comparison) and write one report; under 10 minutes on one H100.

    python tools/gpu_check.py --out runs/gpu_check          # -> runs/gpu_check/gpu_check.{json,md}
    python tools/gpu_check.py --only environment,ddp_nccl   # some checks only

Exit codes: 0 every check that ran passed; 1 a check failed (its row says why, the others still
ran); 2 bad arguments; 3 no CUDA device: nothing was checked and no report written (one line).
The checks and the report format: distill/gpu_check.py and docs/RESULTS.md.
"""
import sys
from pathlib import Path

from distill.cli import Parser

CHECK_NAMES = ('environment', 'imitation_step', 'ddp_nccl', 'compile', 'rehearsal', 'input_pipeline', 'throughput')


def check_list(text: str):
    import argparse
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in CHECK_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f'{text!r}: choose from {", ".join(CHECK_NAMES)}')
    return names


def build_parser() -> Parser:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', type=Path, default=Path('runs/gpu_check'),
                   help='the report folder (default runs/gpu_check): gpu_check.json, gpu_check.md, one log per check')
    p.add_argument('--only', type=check_list, default=None, help=f'comma-separated checks: {", ".join(CHECK_NAMES)}')
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        print(f'error: --out {args.out} is a file; give a folder', file=sys.stderr)
        return 2
    from distill import gpu_check
    if not gpu_check.cuda_available():
        print('skipped: no CUDA device here (torch.cuda.is_available() is False); nothing checked, no report written '
              f'(exit code {gpu_check.EXIT_NO_CUDA})', file=sys.stderr)
        return gpu_check.EXIT_NO_CUDA
    report = gpu_check.run_all(args.out, args.only)
    print(f'report: {args.out / "gpu_check.md"} and {args.out / "gpu_check.json"} ({report["seconds"]} s)')
    failed = [row['name'] for row in report['checks'] if row['status'] == 'failed']
    if failed:
        print(f'failed: {", ".join(failed)} (see their rows and logs)', file=sys.stderr)
        return gpu_check.EXIT_FAILED
    return gpu_check.EXIT_OK


if __name__ == '__main__':
    sys.exit(main())
