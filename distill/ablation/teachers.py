"""Does a teacher recipe train the same way every time? One recipe (an "arm") trained at several
seeds with one thread, some seeds again with more threads, read against acceptance numbers
declared in the config before the runs:

    seed_sd     the final top-1's sample s.d. over the one-thread seeds is at most this
    thread_gap  a seed's final top-1 at more threads is within this of its one-thread run
    last_gain   the final top-1 gained less than this over the last `last_epochs` epochs

Runs go to OUT/ARM/seed_S (one thread) and OUT/threadsT_ARM/seed_S (T threads); a finished run is
read, not trained again, so the table can be written while other runs go on.
"""
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import List, Optional


from ..config import RecipeError, build
from ..integrity import read_json
from .config import AblateError, Comparison, read_mapping
from .stats import difference


@dataclass
class Arm:
    name: str = ''
    recipe: str = ''
    overrides: List[str] = field(default_factory=list)
    seeds: List[int] = field(default_factory=list)
    thread_seeds: List[int] = field(default_factory=list)     # seeds run again at `threads` threads
    description: Optional[str] = None


@dataclass
class Acceptance:
    seed_sd: float = 1.0
    thread_gap: float = 1.0
    last_gain: float = 0.5
    last_epochs: int = 3


@dataclass
class TeacherTableConfig:
    output_dir: str = 'runs/teachers'
    threads: int = 2                       # the thread count of the thread check
    acceptance: Acceptance = field(default_factory=Acceptance)
    arms: List[Arm] = field(default_factory=list)
    comparisons: List[Comparison] = field(default_factory=list)   # a, b: arm names; final top-1 over seeds


@dataclass
class TeacherRun:
    arm: Arm
    seed: int
    threads: int
    dir: Path


def load_config(path) -> TeacherTableConfig:
    path = Path(path)
    known = sorted(f.name for f in fields(TeacherTableConfig))
    raw = read_mapping(path, 'teacher-table config', ', '.join(known))
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise AblateError(f'{path}: unknown key(s) {unknown}; known: {known}')
    try:
        config = build(TeacherTableConfig, raw, '', noun='teacher-table config')
    except RecipeError as e:
        raise AblateError(f'{path}: {e}') from None
    if not config.arms or config.threads < 2:
        raise AblateError(f'{path}: needs at least one arm and threads >= 2 (the thread check)')
    for arm in config.arms:
        if not arm.name or not arm.seeds or not Path(arm.recipe).is_file():
            raise AblateError(f'{path}: arm {arm.name!r}: needs a name, seeds and an existing recipe')
        stray = sorted(set(arm.thread_seeds) - set(arm.seeds))
        if stray:
            raise AblateError(f'{path}: arm {arm.name!r}: thread_seeds {stray} are not among its seeds')
    names = [arm.name for arm in config.arms]
    for c in config.comparisons:
        if c.a not in names or c.b not in names:
            raise AblateError(f'{path}: comparison {c.name!r}: a and b must be arms ({", ".join(names)})')
    return config


def plan(config: TeacherTableConfig, arms: Optional[List[str]] = None) -> List[TeacherRun]:
    out = Path(config.output_dir)
    chosen = [arm for arm in config.arms if not arms or arm.name in arms]
    # Every one-thread run first, the thread checks last: a thread check takes the cores of two
    # one-thread runs, and a table stopped early should still have every arm's seeds.
    runs = [TeacherRun(arm, s, 1, out / arm.name / f'seed_{s}') for arm in chosen for s in arm.seeds]
    runs += [TeacherRun(arm, s, config.threads, out / f'threads{config.threads}_{arm.name}' / f'seed_{s}')
             for arm in chosen for s in arm.thread_seeds]
    return runs


def train_all(runs: List[TeacherRun], jobs: int, say=print):
    """Train the runs without a summary.json, `jobs` at a time (each with its own thread count)."""
    from .runner import run_trainer
    todo = [r for r in runs if not (r.dir / 'summary.json').is_file()]

    def one(run: TeacherRun):
        run.dir.mkdir(parents=True, exist_ok=True)
        args = [run.arm.recipe, *run.arm.overrides, f'train.seed={run.seed}', f'train.threads={run.threads}',
                f'train.output_dir={run.dir}', 'train.progress=false']
        error = run_trainer(args, run.dir / 'train.log', run.threads)
        say(f'{run.arm.name} seed {run.seed} ({run.threads} thread(s)): ' + (f'FAILED: {error}' if error else 'done'),
            flush=True)
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(one, todo))


def read(run: TeacherRun, last_epochs: int) -> Optional[dict]:
    """final top-1, top-1 `last_epochs` before the end, best, time; None if not finished."""
    if not os.path.lexists(run.dir / 'summary.json'):
        return None
    summary = read_json(run.dir / 'summary.json')     # a regular file of at most 16 MB, else one line
    curve = [h['val/top1'] for h in summary['history'] if h.get('val/top1') is not None]
    earlier = curve[-1 - last_epochs] if len(curve) > last_epochs else None
    # a run with a weight average (optim.ema_decay) evaluates the average; its raw weights beside it
    raw = [h['val/raw_top1'] for h in summary['history'] if h.get('val/raw_top1') is not None]
    return {'final': curve[-1], 'earlier': earlier, 'best': max(curve), 'epochs': len(curve),
            'seconds': summary.get('train_seconds'), 'raw_final': raw[-1] if raw else None,
            'raw_earlier': raw[-1 - last_epochs] if len(raw) > last_epochs else None}


def average_lines(runs: List[TeacherRun], results: dict, last_epochs: int) -> List[str]:
    """For the runs with a weight average: the average's final top-1 and last gain next to the
    raw weights' of the same run (the same training: the average changes no step)."""
    rows = []
    for run in runs:
        r = results.get((run.arm.name, run.seed, run.threads))
        if r is None or r['raw_final'] is None:
            continue
        gains = ['-' if before is None else f'{final - before:+.2f}'
                 for final, before in ((r['final'], r['earlier']), (r['raw_final'], r['raw_earlier']))]
        rows.append(f'| {run.arm.name} | {run.seed} | {run.threads} | {r["final"]:.2f} | {r["raw_final"]:.2f} | '
                    f'{r["final"] - r["raw_final"]:+.2f} | {gains[0]} | {gains[1]} |')
    if not rows:
        return []
    return ['', 'Runs with a weight average (optim.ema_decay): the average (what the run evaluates and saves) '
                'next to the raw weights of the same run.', '',
            f'| arm | seed | threads | average | raw | average - raw | average gain, last {last_epochs} | '
            f'raw gain, last {last_epochs} |', '|---|---:|---:|---:|---:|---:|---:|---:|', *rows]


def table(config: TeacherTableConfig, runs: List[TeacherRun]) -> str:
    acc = config.acceptance
    lines = [f'Acceptance (declared): final top-1 s.d. over one-thread seeds <= {acc.seed_sd}, '
             f'{config.threads} vs 1 thread within {acc.thread_gap}, less than {acc.last_gain} points gained over '
             f'the last {acc.last_epochs} epochs.', '',
             f'| arm | seed | threads | final top-1 | best | gain, last {acc.last_epochs} epochs | train s |',
             '|---|---:|---:|---:|---:|---:|---:|']
    results = {}
    for run in runs:
        r = read(run, acc.last_epochs)
        results[(run.arm.name, run.seed, run.threads)] = r
        if r is None:
            lines.append(f'| {run.arm.name} | {run.seed} | {run.threads} | not run | | | |')
            continue
        gain = '-' if r['earlier'] is None else f'{r["final"] - r["earlier"]:+.2f}'
        lines.append(f'| {run.arm.name} | {run.seed} | {run.threads} | {r["final"]:.2f} | {r["best"]:.2f} | {gain} | '
                     f'{r["seconds"]:.0f} |')
    lines += average_lines(runs, results, acc.last_epochs)
    lines += ['', '| arm | seeds | mean | s.d. | range | largest thread gap | largest last gain | verdict |',
              '|---|---:|---:|---:|---|---:|---:|---|']
    for arm in config.arms:
        one = [results.get((arm.name, s, 1)) for s in arm.seeds]
        done = [r for r in one if r]
        if not done:
            continue
        finals = [r['final'] for r in done]
        sd = statistics.stdev(finals) if len(finals) > 1 else None
        gaps = [abs(results[(arm.name, s, config.threads)]['final'] - results[(arm.name, s, 1)]['final'])
                for s in arm.thread_seeds if results.get((arm.name, s, config.threads)) and results.get((arm.name, s, 1))]
        gains = [r['final'] - r['earlier'] for r in done if r['earlier'] is not None]
        checks = {'seed s.d.': sd is not None and sd <= acc.seed_sd and len(done) == len(one),
                  'last gain': bool(gains) and max(gains) < acc.last_gain}
        if arm.thread_seeds:        # an arm without a thread check is not held to one
            checks['threads'] = len(gaps) == len(arm.thread_seeds) and max(gaps) <= acc.thread_gap
        failed = [name for name, ok in checks.items() if not ok]
        verdict = f'meets all {len(checks)}' if not failed else 'fails or incomplete: ' + ', '.join(failed)
        cells = [arm.name, f'{len(done)}/{len(one)}', f'{statistics.fmean(finals):.2f}',
                 '-' if sd is None else f'{sd:.2f}', f'{min(finals):.2f}-{max(finals):.2f}',
                 f'{max(gaps):.2f}' if gaps else '-', f'{max(gains):+.2f}' if gains else '-', verdict]
        lines.append('| ' + ' | '.join(cells) + ' |')
    if config.comparisons:
        lines += ['', 'Comparisons of arms: difference of the one-thread final top-1 means over seeds, 95 % Welch '
                      'and bootstrap intervals.', '',
                  '| comparison | a - b | 95 % CI (Welch) | 95 % CI (bootstrap) | question |', '|---|---:|---|---|---|']
        for c in config.comparisons:
            finals = {name: [r['final'] for (arm, _, t), r in results.items() if arm == name and t == 1 and r]
                      for name in (c.a, c.b)}
            d = difference(finals[c.a], finals[c.b])
            lines.append(f'| {c.name} | ' + ('- | - | -' if d is None else
                         f'{d.diff:+.2f} | [{d.low:+.2f}, {d.high:+.2f}] | [{d.boot_low:+.2f}, {d.boot_high:+.2f}]')
                         + f' | {c.question or ""} |')
    return '\n'.join(lines) + '\n'

