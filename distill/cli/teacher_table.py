"""Train a teacher recipe at several seeds and thread counts and check it against declared numbers.

    python tools/teacher_table.py [--config recipes/clutter/teachers.yaml] [--arms a,b] [--jobs 1]
                                  [--table-only]

The config (YAML) declares the acceptance numbers and the arms (a recipe with overrides, its
seeds, and the seeds run again at more threads); distill/ablation/teachers.py trains the missing
runs (one `distill/train.py` subprocess each, one thread unless it is a thread check) and writes
OUT/teachers.md: every run's final and best top-1 and its gain over the last epochs, then per arm
the mean, s.d., thread gap and the verdict. Finished runs are read, not trained again. A teacher
takes about 10-15 minutes at one thread on a 2-core machine: each run says when it ends.
"""
import sys
from pathlib import Path

from distill.cli import Parser, one_line_errors

DEFAULT_CONFIG = 'recipes/clutter/teachers.yaml'


@one_line_errors     # a run folder's file that cannot be read (read_json) is one line too
def main(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--config', default=DEFAULT_CONFIG, help=f'teacher-table config (default {DEFAULT_CONFIG})')
    p.add_argument('--arms', help='comma-separated subset of the arms')
    p.add_argument('--jobs', type=int, default=1, help='runs in parallel (default 1)')
    p.add_argument('--table-only', action='store_true', help='write the table from finished runs; train nothing')
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from distill.ablation.config import AblateError
    from distill.ablation.teachers import load_config, plan, table, train_all
    try:
        if args.jobs < 1:
            raise AblateError(f'--jobs must be at least 1, got {args.jobs}')
        config = load_config(args.config)
        only = [a for a in (args.arms or '').split(',') if a]
        unknown = sorted(set(only) - {arm.name for arm in config.arms})
        if unknown:
            raise AblateError(f'--arms: unknown {unknown}; declared: {[arm.name for arm in config.arms]}')
    except AblateError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    runs = plan(config, only)
    if not args.table_only:
        from distill.ablation.runner import stop_trainers_on_signal
        stop_trainers_on_signal()
        todo = sum(not (r.dir / 'summary.json').is_file() for r in runs)
        print(f'{len(runs)} runs, {todo} to train, {args.jobs} at a time (about 10-15 minutes each at one thread '
              f'on a 2-core machine)', flush=True)
        train_all(runs, args.jobs)
    out = Path(config.output_dir) / 'teachers.md'
    out.parent.mkdir(parents=True, exist_ok=True)
    text = table(config, runs)
    out.write_text(text)
    print(text + f'\nwritten to {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
