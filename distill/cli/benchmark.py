#!/usr/bin/env python
"""Inference throughput and latency of RIFormer's forms next to PoolFormer and other backbones.

    python tools/benchmark.py --archs s12,s24 --batch-sizes 16 --img-size 224 --reps 9
    python tools/benchmark.py --archs s12,efficientvit_m0,fasternet_t0 --channels-last
    python tools/benchmark.py --smoke --markdown runs/bench.md --csv runs/bench.csv

All rows are timed in one process, interleaved, as median and IQR over repetitions; the cases,
timer and report live in `distill/benchmark/` (its docstring says how to add rows).
"""
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from distill.cli import Parser, int_list, one_line_errors, positive_int

# torch and distill.benchmark (which imports it) are imported after the arguments are parsed:
# --help and argument errors in a fraction of a second instead of the seconds torch takes.
DTYPES = ('fp32', 'bf16', 'fp16')      # the keys of distill.benchmark.DTYPES (a test checks)


def build_parser() -> Parser:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--archs', default=None,
                   help='comma-separated: s12,s24,... (RIFormer vs PoolFormer inference rows), '
                        'train_s12,train_mini,... (a plain vs a module-imitation training step), '
                        'efficientvit_m0, fasternet_t0, wildcards or family names (default s12; mini with --smoke)')
    p.add_argument('--forms', default=None,
                   help='only these forms, e.g. timm,plain,deploy (default: all)')
    p.add_argument('--batch-sizes', '-b', type=int_list, default=None, help='comma-separated (default 16)')
    p.add_argument('--img-size', '--res', type=positive_int, default=None, help='resolution (default 224)')
    p.add_argument('--threads', type=positive_int, default=None,
                   help='torch / ONNX Runtime intra-op threads (default: torch default)')
    p.add_argument('--channels-last', action='store_true', help='models and inputs in channels_last')
    p.add_argument('--compile', action='store_true', help='torch.compile every torch row (warm-up compiles)')
    p.add_argument('--teacher-precision', default='auto', choices=['fp32', 'bf16', 'auto'],
                   help="training rows: the 'imitation-step' teacher (default auto: bf16 where native)")
    p.add_argument('--train-layout', default='channels_last', choices=['channels_last', 'nchw'],
                   help="training rows: student and teacher layout (default channels_last, as the trainer)")
    p.add_argument('--system-malloc', action='store_true',
                   help="keep glibc malloc's defaults (by default freed host memory is kept, as the trainer's "
                        'train.keep_host_memory does; distill/host_memory.py)')
    p.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    p.add_argument('--dtype', default='fp32', choices=DTYPES, help='fp32 (default), bf16 or fp16')
    p.add_argument('--reps', type=positive_int, default=None, help='timed repetitions per row (default 7)')
    p.add_argument('--warmup', type=int, default=None, help='untimed calls per row first (default 2)')
    p.add_argument('--min-time', type=float, default=None,
                   help='seconds one measurement lasts at least (default 0.2; 0 = one call)')
    p.add_argument('--smoke', action='store_true',
                   help='tiny run for tests: mini models, batch 2, 32px, 1 repetition, 1 warm-up')
    p.add_argument('--accuracy', type=Path, metavar='RECIPE',
                   help='deploy rows: each route\'s top-1 and agreement with fp32 on this recipe\'s validation '
                        'split (calibrated on 256 images of its training split), from --student / --teacher')
    p.add_argument('--student', type=Path, action='append', default=[],
                   help='with --accuracy: a trained RIFormer deploy checkpoint (repeat for several; the table '
                        'shows their mean)')
    p.add_argument('--teacher', type=Path, help='with --accuracy: the trained PoolFormer for the PoolFormer rows')
    p.add_argument('--profile', action='store_true',
                   help='deploy rows run in PyTorch: time per operator category (group norm, one-pass norms, convs, '
                        'layout copies ...); deploy_SIZE has RIFormer rows for both deploy-block norm paths '
                        '(fp32:one-pass, bf16:one-pass, compiled:two-norms, int8:two-norms)')
    p.add_argument('--markdown', type=Path, help='also write the table as markdown here')
    p.add_argument('--csv', type=Path, help='also write all numbers as CSV here')
    return p


def settings_from_args(args):
    """The benchmark's Settings from the parsed arguments."""
    import torch
    from distill.benchmark import Settings
    return Settings(img_size=args.img_size or (32 if args.smoke else 224), device=args.device, dtype=args.dtype,
                    channels_last=args.channels_last, compile=args.compile,
                    teacher_precision=args.teacher_precision, train_layout=args.train_layout,
                    threads=args.threads or torch.get_num_threads(),
                    num_classes=10 if args.smoke else 1000).check()


@one_line_errors      # bad arguments, and a bad recipe or checkpoint of --accuracy: one line, before any row
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_from_args(args)
    command = 'python tools/benchmark.py ' + ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    env = introduce(plan, args)
    from distill import benchmark
    rows = benchmark.run_benchmark(plan.cases, plan.settings, plan.batch_sizes, plan.reps, plan.warmup, plan.min_time,
                                   profile=args.profile, log=Progress(len(plan.batch_sizes)))
    env['load at end'] = benchmark.load_average()
    if plan.trained:
        deploy_accuracy(rows, args, plan.trained, plan.settings.threads)
    print_tables(rows, args, env)
    write_files(rows, args, env, command, plan.settings)
    return 0


def plan_from_args(args) -> SimpleNamespace:
    """What to time and how (settings, cases, batch sizes, repetitions, the trained models of
    --accuracy), every argument checked and every input read first: BenchmarkError otherwise."""
    from distill import benchmark
    from distill.benchmark import BenchmarkError
    settings = settings_from_args(args)
    archs = args.archs if args.archs is not None else ('mini' if args.smoke else 's12')   # '' is refused
    cases = benchmark.select_forms(benchmark.resolve_archs(archs), args.forms)
    if args.warmup is not None and args.warmup < 0:
        raise BenchmarkError('--warmup must be >= 0')
    if args.min_time is not None and args.min_time < 0:
        raise BenchmarkError('--min-time must be >= 0')
    if (args.student or args.teacher) and not args.accuracy:
        raise BenchmarkError('--student / --teacher need --accuracy RECIPE')
    if args.accuracy and not (args.student or args.teacher):
        raise BenchmarkError('--accuracy needs --student and/or --teacher checkpoints')
    for path in [args.accuracy, args.teacher, *args.student]:
        if path is not None and not path.is_file():
            raise BenchmarkError(f'{path}: no such file')
    for path in (args.markdown, args.csv):
        if path is not None and not path.parent.is_dir():
            raise BenchmarkError(f'{path}: folder {path.parent} does not exist')
    return SimpleNamespace(
        settings=settings, cases=cases, batch_sizes=args.batch_sizes or ([2] if args.smoke else [16]),
        reps=args.reps or (1 if args.smoke else 7),
        warmup=args.warmup if args.warmup is not None else (1 if args.smoke else 2),
        min_time=args.min_time if args.min_time is not None else (0. if args.smoke else 0.2),
        trained=accuracy_inputs(args))


def introduce(plan, args) -> dict:
    """Set the threads and the allocator, print the machine, its load and the plan; the
    environment the report records."""
    import torch
    from distill import benchmark, host_memory
    settings = plan.settings
    torch.set_num_threads(settings.threads)
    if not args.system_malloc:
        host_memory.keep_freed_memory()
    env = benchmark.environment(settings)
    env['host malloc'] = host_memory.describe()
    if any(c.group.startswith('deploy-') for c in plan.cases) and settings.device == 'cpu':
        from models.quantize import int8_note
        env['cpu int8'] = int8_note()
    print('machine: ' + ', '.join(f'{k} {v}' for k, v in env.items()))
    env['load at start'] = benchmark.load_average()
    print(f'load average at start: {env["load at start"]}')
    if os.cpu_count() and os.getloadavg()[0] > 0.5 * os.cpu_count():
        print('warning: the machine is busy; absolute numbers will be low (the interleaving keeps ratios fairer)')
    long = '' if args.smoke else ('; this can take long (on a 2-core CPU, --archs s12,train_s12 at batch 16 took '
                                  'about 24 minutes)')
    print(f'plan: {len(plan.cases)} rows x {len(plan.batch_sizes)} batch size(s) {plan.batch_sizes}, warm-up '
          f'{plan.warmup} and {plan.reps} timed repetitions each, interleaved{long}; each repetition prints the '
          f'time left', flush=True)
    return env


def print_tables(rows, args, env):
    """The results table; the deploy, operator, accuracy and training-phase tables where rows
    have them."""
    from distill import benchmark
    from distill.benchmark import deploy
    print()
    print(benchmark.format_table(rows))
    deploy_table = deploy.format_deploy_table(rows)
    if deploy_table:
        print('\ndeploy routes (paired ratios: median (IQR) of per-repetition ratios; accuracy from --accuracy):\n'
              + deploy_table)
        ops = deploy.format_ops(rows)
        if ops:
            print('\nPyTorch deploy rows, self CPU ms per call by operator category (torch.profiler):\n' + ops)
        accuracy = deploy.format_accuracy(getattr(args, 'accuracy_results', {}))
        if accuracy:
            print(f'\naccuracy per checkpoint on {args.accuracy}\'s validation split:\n' + accuracy)
    breakdown = benchmark.format_breakdown(rows)
    if breakdown:
        print('\ntraining step by phase, median (IQR) ms:\n' + breakdown)
    print(f'\nload average at end: {env["load at end"]}')


def write_files(rows, args, env, command: str, settings):
    """--markdown and --csv."""
    from distill import benchmark
    from distill.benchmark import deploy
    if args.markdown:
        text = benchmark.format_markdown(rows, env, command)
        if deploy.format_deploy_table(rows):
            text += '\nDeploy routes:\n\n' + deploy.format_deploy_table(rows, markdown=True) + '\n'
            ops = deploy.format_ops(rows, markdown=True)
            text += ('\nSelf CPU ms per call by operator category:\n\n' + ops + '\n') if ops else ''
            accuracy = deploy.format_accuracy(getattr(args, 'accuracy_results', {}), markdown=True)
            text += (f'\nAccuracy per checkpoint ({args.accuracy}, validation split):\n\n' + accuracy + '\n') \
                if accuracy else ''
        args.markdown.write_text(text)
        print(f'markdown -> {args.markdown}')
    if args.csv:
        benchmark.write_csv(args.csv, rows, settings)
        print(f'csv -> {args.csv}')


class Progress:
    """The benchmark's log with the time left: after its warm-up the timer prints 'repetition k/R
    done' once every row has run again; this adds the estimate from the repetitions so far (later
    batch sizes, with their builds and warm-ups, are named, not estimated)."""

    def __init__(self, batch_sizes: int):
        import time
        self.clock = time.perf_counter
        self.batch_sizes_left = batch_sizes
        self.reps_start = self.clock()

    def __call__(self, line: str, *a, **k):
        import re
        if line.startswith('timing '):
            self.batch_sizes_left -= 1
        done = re.match(r'\s*repetition (\d+)/(\d+) done', line)
        if line.lstrip().startswith('warm-up '):
            self.reps_start = self.clock()          # the repetitions start after the last warm-up
        elif done:
            k_, reps = int(done.group(1)), int(done.group(2))
            left = (self.clock() - self.reps_start) / k_ * (reps - k_)
            more = f', then {self.batch_sizes_left} more batch size(s)' if self.batch_sizes_left else ''
            line = f'{line}: about {_minutes(left)} left at this batch size{more}'
        print(line, *a, flush=True, **k)


def _minutes(seconds: float) -> str:
    return f'{seconds:.0f} s' if seconds < 90 else f'{seconds / 60:.0f} min'


def accuracy_inputs(args) -> Optional[dict]:
    """With --accuracy: the trained models and the recipe's batches, all read before any row is
    timed, so that a damaged checkpoint or a bad recipe is one line at once (RIFormerError), not a
    traceback after the whole benchmark. None without --accuracy."""
    if not args.accuracy:
        return None
    import models
    from distill.benchmark import deploy
    teacher = models.load_model(args.teacher) if args.teacher else None
    students = [(str(path), models.load_deploy(path)) for path in args.student]
    val, calib = deploy.validation_batches(args.accuracy)
    return {'teacher': teacher, 'students': students, 'val': val, 'calib': calib}


def deploy_accuracy(rows, args, inputs: dict, threads) -> None:
    """Fill the deploy rows' accuracy columns: every route built on the trained checkpoints
    (`inputs` from accuracy_inputs)."""
    from distill.benchmark import deploy
    forms = {}
    for r in rows:
        if r['group'].startswith('deploy-'):
            family = forms.setdefault('poolformer' if r['model'].startswith('poolformer') else 'riformer', [])
            if r['form'] not in family:
                family.append(r['form'])
    print(f'accuracy on {args.accuracy} (validation split; calibration: 256 training images)')
    val, calib = inputs['val'], inputs['calib']
    results, named = {}, {}
    if inputs['teacher'] is not None and forms.get('poolformer'):
        named[str(args.teacher)] = deploy.route_accuracy(forms['poolformer'], inputs['teacher'], val, calib,
                                                         threads, name=str(args.teacher))
        results['poolformer'] = [named[str(args.teacher)]]
    if inputs['students'] and forms.get('riformer'):
        results['riformer'] = []
        for name, student in inputs['students']:
            named[name] = deploy.route_accuracy(forms['riformer'], student, val, calib, threads, name=name)
            results['riformer'].append(named[name])
    args.accuracy_results = named
    for r in rows:
        family = 'poolformer' if r['model'].startswith('poolformer') else 'riformer'
        per = [res[r['form']] for res in results.get(family, []) if r['form'] in res]
        if r['group'].startswith('deploy-') and per:
            r['accuracy'] = {'top1': sum(p['top1'] for p in per) / len(per),
                             'agreement': sum(p['agreement'] for p in per) / len(per),
                             'rel_err': max(p['rel_err'] for p in per), 'per_model': per}


if __name__ == '__main__':
    sys.exit(main())
