"""Run recipe variants over several seeds and report how they compare.

    python tools/ablate.py [--config recipes/digits/ablation.yaml] [--out DIR] [--seeds 0 1 2]
                           [--epochs N] [--variants a,b] [--smoke] [--jobs 1] [--threads 1]

The config (YAML) declares the teacher, the seeds, common overrides, settings (e.g. full labels
and 10% labels) and the variants (name, base recipe, dotted overrides); `distill/ablation/`
plans, trains (one `distill/train.py` subprocess per run), evaluates (RIFormer students in
deploy form; top-1, agreement with the teacher, per-block CKA and normalised MSE) and reports.

Outputs in OUT: ablation.md (table), summary.csv (the table), runs.csv (one row per run),
ablation.png (top-1 with error bars, validation curves, CKA and NMSE per block) and every run's
TensorBoard logs under runs/. Finished runs are skipped, so an interrupted ablation resumes.
A run whose resolved recipe equals an earlier one (e.g. a label-free variant in a low-label
setting: without a CE term the label fraction changes nothing) reuses that run.
"""
import shlex
import sys
import time
from pathlib import Path

from distill.cli import Parser, one_line_errors

DEFAULT_CONFIG = 'recipes/digits/ablation.yaml'


def parse_args(argv):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', default=DEFAULT_CONFIG, help=f'ablation config (default {DEFAULT_CONFIG})')
    p.add_argument('--out', help="output folder (default: the config's output_dir; -smoke appended with --smoke)")
    p.add_argument('--seeds', nargs='+', type=int, help="seeds to run (default: the config's)")
    p.add_argument('--epochs', type=int, help='train.epochs of every run (default: each recipe\'s)')
    p.add_argument('--variants', help='comma-separated subset of the variants')
    p.add_argument('--smoke', action='store_true', help='tiny check: first seed, 1 epoch, first 2 variants')
    p.add_argument('--jobs', type=int, default=1, help='runs in parallel (default 1)')
    p.add_argument('--threads', type=int, default=1, help='torch threads per run (default 1)')
    p.add_argument('--keep-checkpoints', action='store_true', help='keep each finished run\'s checkpoints/')
    return p.parse_args(argv)


@one_line_errors     # a run folder's file that cannot be read (read_json) is one line too
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # After parsing: the ablation machinery imports torch and timm, which --help does not need.
    from distill.ablation import (
        AblateError, Evaluator, check_existing, execute, load_ablation_config, plan, report, train_teacher)
    from distill.ablation.runner import stop_trainers_on_signal
    try:
        for name in ('jobs', 'threads', 'epochs'):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise AblateError(f'--{name} must be at least 1, got {value}')
        if args.seeds and any(s < 0 for s in args.seeds):
            raise AblateError(f'--seeds must be non-negative, got {args.seeds}')
        config = load_ablation_config(args.config)
        only = [v for v in (args.variants or '').split(',') if v]
        declared = [v.name for v in config.variants]
        unknown = [v for v in only if v not in declared]
        if unknown:
            raise AblateError(f'--variants: unknown {unknown}; declared: {declared}')
        out = Path(args.out or (config.output_dir + ('-smoke' if args.smoke else '')))
        seeds = (args.seeds or config.seeds)[:1] if args.smoke else (args.seeds or config.seeds)
        epochs = 1 if args.smoke else args.epochs
        missing = [path for _, path in config.teacher.checkpoints() if not Path(path).is_file()]
        if missing and config.teacher.recipe is None:
            raise AblateError(f'teacher checkpoint {missing[0]} not found; train it first '
                              f'(python distill/train.py recipes/digits/teacher.yaml) or give teacher.recipe')
        runs = plan(config, out, seeds, epochs, only, args.smoke)
        check_existing(runs)
    except AblateError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    command = ' '.join(['python tools/ablate.py', *map(shlex.quote, argv)])
    real = sum(r.alias_of is None for r in runs)
    print(f'{len(runs)} runs ({real} to train or reuse from disk) into {out}/runs, {args.jobs} job(s) '
          f'x {args.threads} thread(s); this can take long: a line per finished run, with the time left '
          f'(the first when the first run ends: a digits run takes about 4.5 minutes at --jobs 2 on a '
          f'2-core CPU, recipes/digits/ablation.yaml about 1.5 hours in all)', flush=True)
    stop_trainers_on_signal()
    import torch
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    error = train_teacher(config.teacher, args.threads, jobs=args.jobs)
    if error:
        print(f'error: teacher training failed: {error}', file=sys.stderr)
        return 1
    execute(runs, Evaluator(config.teacher, config.erf), args.jobs, args.threads, args.keep_checkpoints,
            say=TimeLeft(real))
    report(out, runs, config, command)
    failed = sum(r.result.get('status') == 'failed' for r in runs)
    print(f'done in {time.perf_counter() - start:.0f}s: {out / "ablation.md"}, {out / "summary.csv"}, '
          f'{out / "runs.csv"}, {out / "ablation.png"}' + (f'; {failed} run(s) failed' if failed else ''))
    return 1 if failed else 0


class TimeLeft:
    """The runner's progress lines ('[i/N] LABEL: trained (...)') with the time left: the wall time
    so far per trained run, times the runs not finished yet (skipped finished runs cost nothing;
    runs that reuse another's result are listed after all the others)."""

    def __init__(self, real: int):
        self.real, self.done, self.trained, self.start = real, 0, 0, time.perf_counter()

    def __call__(self, line: str, *a, **k):
        if line.startswith('[') and ': same recipe as ' not in line:
            self.done += 1
            self.trained += ': trained (' in line or ': failed (' in line
            left = self.real - self.done
            if left and self.trained:
                seconds = (time.perf_counter() - self.start) / self.trained * left
                line += f'; about {seconds / 60:.0f} min left ({left} run{"s" if left > 1 else ""})'
        print(line, *a, **k)


if __name__ == '__main__':
    sys.exit(main())
