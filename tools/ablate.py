#!/usr/bin/env python
"""Run recipe variants over several seeds and report how they compare.

    python tools/ablate.py [--config recipes/digits/ablation.yaml] [--out DIR] [--seeds 0 1 2]
                           [--epochs N] [--variants a,b] [--smoke] [--jobs 1] [--threads 1]

The config (YAML) declares the teacher, the seeds, common overrides, settings (e.g. full labels
and 10% labels; each a name, overrides and optionally a subset of the variants) and the variants
(name, base recipe, dotted overrides). Each run trains `distill/train.py` in a subprocess into
OUT/runs/VARIANT/seed_N/ (VARIANT@SETTING for every setting but the first), then the final
student is evaluated here: RIFormer students in their reparameterized deploy form
(tools/reparam.py + models.load_deploy), other students as trained. Beside top-1 it measures
what imitation is about: top-1 agreement with the teacher and, at each imitated block, the
linear CKA and normalised MSE of student vs teacher features (distill/similarity.py).

Outputs in OUT: ablation.md (table), summary.csv (the table), runs.csv (one row per run),
ablation.png (top-1 with error bars, validation curves, CKA and NMSE per block) and every run's
TensorBoard logs under runs/. Finished runs are skipped, so an interrupted ablation resumes.
A run whose resolved recipe equals an earlier one (e.g. a label-free variant in a low-label
setting: without a CE term the label fraction changes nothing) reuses that run.
"""
import argparse
import csv
import dataclasses
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from distill.config import Recipe, RecipeError, flat_keys, load_recipe  # noqa: E402

DEFAULT_CONFIG = 'recipes/digits/ablation.yaml'
CONFIG_KEYS = {'output_dir', 'teacher', 'seeds', 'overrides', 'settings', 'variants'}
# Recipe keys that do not change what a run computes.
NON_RECIPE_KEYS = {'train.output_dir', 'train.progress', 'resume'}


class AblateError(ValueError):
    """Bad input to the tool; printed as one `error:` line, exit code 2."""


@dataclasses.dataclass
class Run:
    setting: str
    variant: str
    seed: int
    name: str                       # VARIANT or VARIANT@SETTING: the folder under OUT/runs
    dir: Path
    recipe_path: str
    overrides: List[str]
    recipe: Recipe
    alias_of: Optional['Run'] = None
    result: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self):
        return f'{self.name} seed {self.seed}'


# --- config ------------------------------------------------------------------------------------

def _str_list(value, where) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AblateError(f'{where}: expected a list of key.sub=value strings, got {value!r}')
    return value


def _named_list(value, where, keys) -> List[dict]:
    if not isinstance(value, list) or not value:
        raise AblateError(f'{where}: expected a non-empty list of mappings')
    names = set()
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get('name'), str) or not item['name']:
            raise AblateError(f'{where}[{i}]: expected a mapping with a name')
        unknown = set(item) - keys
        if unknown:
            raise AblateError(f'{where} {item["name"]!r}: unknown key(s) {sorted(unknown)}; known: {sorted(keys)}')
        if item['name'] in names:
            raise AblateError(f'{where}: name {item["name"]!r} appears twice')
        if any(c in item['name'] for c in '/@ '):
            raise AblateError(f'{where} {item["name"]!r}: names may not contain "/", "@" or spaces')
        names.add(item['name'])
    return value


def load_config(path: Path) -> dict:
    if not path.is_file():
        raise AblateError(f'{path}: no such ablation config')
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise AblateError(f'{path}: not valid YAML ({str(e).splitlines()[0]})') from None
    if not isinstance(raw, dict):
        raise AblateError(f'{path}: an ablation config is a mapping (teacher, seeds, settings, variants)')
    unknown = set(raw) - CONFIG_KEYS
    if unknown:
        raise AblateError(f'{path}: unknown key(s) {sorted(unknown)}; known: {sorted(CONFIG_KEYS)}')
    teacher = raw.get('teacher')
    if not isinstance(teacher, dict) or not teacher.get('checkpoint') or set(teacher) - {'arch', 'checkpoint'}:
        raise AblateError(f'{path}: teacher: expected {{arch, checkpoint}} (the PoolFormer teacher of the variants '
                          f'and of the similarity metrics)')
    teacher.setdefault('arch', 'poolformer_mini')
    seeds = raw.get('seeds', [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                         for s in seeds):
        raise AblateError(f'{path}: seeds: expected a non-empty list of non-negative integers, got {seeds!r}')
    variants = _named_list(raw.get('variants'), 'variants', {'name', 'recipe', 'overrides', 'description'})
    for v in variants:
        if not isinstance(v.get('recipe'), str):
            raise AblateError(f'variant {v["name"]!r}: needs a recipe (path of a training recipe)')
        v['overrides'] = _str_list(v.get('overrides'), f'variant {v["name"]!r} overrides')
    settings = _named_list(raw.get('settings') or [{'name': 'default'}], 'settings', {'name', 'overrides', 'variants'})
    known = [v['name'] for v in variants]
    for s in settings:
        s['overrides'] = _str_list(s.get('overrides'), f'setting {s["name"]!r} overrides')
        subset = s.get('variants') or known
        bad = [n for n in subset if n not in known]
        if bad:
            raise AblateError(f'setting {s["name"]!r}: unknown variant(s) {bad}; declared: {known}')
        s['variants'] = subset
    return {'output_dir': raw.get('output_dir', 'runs/ablation'), 'teacher': teacher, 'seeds': seeds,
            'overrides': _str_list(raw.get('overrides'), 'overrides'), 'settings': settings, 'variants': variants}


def has_teacher(recipe_path: Path, overrides: List[str]) -> bool:
    raw = yaml.safe_load(recipe_path.read_text()) or {}
    return raw.get('teacher') is not None or any(o.startswith('teacher.') for o in overrides)


def plan(config: dict, out: Path, seeds, epochs, only, smoke) -> List[Run]:
    """Every (setting, variant, seed) run with its validated recipe; duplicates become aliases."""
    teacher = config['teacher']
    settings = config['settings'][:1] if smoke else config['settings']
    runs, by_key = [], {}
    for i, setting in enumerate(settings):
        names = [n for n in setting['variants'] if not only or n in only]
        if smoke:
            names = names[:2]
        for name in names:
            variant = next(v for v in config['variants'] if v['name'] == name)
            recipe_path = Path(variant['recipe'])
            if not recipe_path.is_file():
                raise AblateError(f'variant {name!r}: no recipe file {recipe_path}')
            # The config's teacher replaces the recipe's, so one file decides which teacher is used.
            inject = ([f'teacher.arch={teacher["arch"]}', f'teacher.checkpoint={teacher["checkpoint"]}']
                      if has_teacher(recipe_path, variant['overrides']) else [])
            common = inject + config['overrides'] + setting['overrides'] + variant['overrides']
            if epochs:
                common.append(f'train.epochs={epochs}')
            run_name = name if i == 0 else f'{name}@{setting["name"]}'
            for seed in seeds:
                run_dir = out / 'runs' / run_name / f'seed_{seed}'
                overrides = common + [f'train.seed={seed}', f'train.output_dir={run_dir}', 'train.progress=false']
                try:
                    recipe = load_recipe(recipe_path, overrides)
                except RecipeError as e:
                    raise AblateError(f'variant {name!r} (setting {setting["name"]!r}): {e}') from None
                run = Run(setting['name'], name, seed, run_name, run_dir, str(recipe_path), overrides, recipe)
                key = canonical(recipe)
                run.alias_of = by_key.get(key)
                by_key.setdefault(key, run)
                runs.append(run)
    if not runs:
        raise AblateError(f'no runs selected (variants: {", ".join(v["name"] for v in config["variants"])})')
    return runs


def canonical(recipe: Recipe) -> str:
    """What a run computes: its recipe without the output folder; the label fraction only
    matters when a term uses labels (CE)."""
    flat = {k: v for k, v in flat_keys(recipe.to_dict()).items() if k not in NON_RECIPE_KEYS}
    if recipe.distill.ce.weight == 0:
        flat.pop('data.label_fraction')
    return json.dumps(flat, sort_keys=True, default=str)


def check_existing(runs: List[Run]):
    """A folder that holds a run of another recipe (e.g. other epochs) must not be skipped or
    resumed as if it were this one."""
    defaults = flat_keys(Recipe().to_dict())
    for run in runs:
        saved = run.dir / 'recipe.yaml'
        if run.alias_of is not None or not saved.is_file():
            continue
        old = flat_keys(yaml.safe_load(saved.read_text()) or {})
        new = flat_keys(run.recipe.to_dict())
        changed = sorted(k for k in set(old) | set(new) if k not in NON_RECIPE_KEYS and old.get(k, defaults.get(k)) != new.get(k))
        if changed:
            raise AblateError(f'{run.dir} holds a run of another recipe (changed: {", ".join(changed[:4])}); '
                              f'use another --out or delete that folder')


# --- running -----------------------------------------------------------------------------------

def finished(run_dir: Path, epochs: int) -> bool:
    try:
        summary = json.loads((run_dir / 'summary.json').read_text())
    except (OSError, ValueError):
        return False
    return summary.get('epochs') == epochs and 'final' in summary and (run_dir / 'model.safetensors').is_file()


def train(run: Run, threads: int) -> Optional[str]:
    """Train one run in a subprocess (resuming a partial one); None on success, else the error."""
    run.dir.mkdir(parents=True, exist_ok=True)
    # resume=true continues from the newest checkpoint, or starts afresh when there is none.
    cmd = [sys.executable, str(ROOT / 'distill' / 'train.py'), run.recipe_path, *run.overrides, 'resume=true']
    # One thread per job: on a shared CPU, torch's spinning OpenMP threads slow down many-fold.
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    with open(run.dir / 'train.log', 'a') as log:
        log.write('$ ' + ' '.join(shlex.quote(c) for c in cmd) + '\n')
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        lines = (run.dir / 'train.log').read_text().strip().splitlines()
        errors = [line for line in lines if line.startswith('error:')]
        return (errors or lines or [f'exit {proc.returncode}'])[-1][:200]
    return None


class Evaluator:
    """Evaluates final students against the teacher; the teacher's pass is computed once."""

    def __init__(self, teacher: dict):
        self.teacher = teacher
        self._teacher_cache = {}
        self._lock = threading.Lock()     # one evaluation at a time: they share the CPU

    def __call__(self, run_dir: Path) -> dict:
        cached = run_dir / 'ablation_metrics.json'
        model_file = run_dir / 'model.safetensors'
        if cached.is_file() and cached.stat().st_mtime >= model_file.stat().st_mtime:
            return json.loads(cached.read_text())
        with self._lock:
            metrics = self._evaluate(run_dir)
        cached.write_text(json.dumps(metrics, indent=2))
        return metrics

    def _evaluate(self, run_dir: Path) -> dict:
        import torch
        from distill.data import build_datasets
        from distill.recorders import default_imitated_blocks
        from distill.similarity import collect, compare
        recipe = load_recipe(run_dir / 'recipe.yaml')
        student, form = load_student(run_dir / 'model.safetensors', recipe)
        _, val_set, _ = build_datasets(recipe.data, recipe.train.seed, recipe.student.arch)
        loader = torch.utils.data.DataLoader(val_set, batch_size=128)
        blocks = default_imitated_blocks(student) if hasattr(student, 'stages') else []
        key = (recipe.data.source, recipe.data.path, recipe.data.image_size, recipe.data.val_fraction, tuple(blocks))
        if key not in self._teacher_cache:
            import models
            teacher = models.create_teacher(self.teacher['arch'], self.teacher['checkpoint'])
            self._teacher_cache[key] = collect(teacher, loader, blocks, 'teacher')
        metrics = compare(collect(student, loader, blocks, 'student'), self._teacher_cache[key])
        metrics['eval'] = form
        metrics['blocks'] = blocks
        return metrics


def load_student(path: Path, recipe: Recipe):
    """(model, how): the deploy form of a RIFormer checkpoint, else the trained model."""
    import models
    if models.read_metadata(path).get('format') == models.checkpoint.FORMAT:
        deploy = path.with_name(path.name.replace('.safetensors', '.deploy.safetensors'))
        if not deploy.is_file() or deploy.stat().st_mtime < path.stat().st_mtime:
            try:
                models.reparam_checkpoint(path, deploy, log=lambda *a: None)
            except models.CheckpointError as e:
                return models.load_model(path), f'trained (reparam failed: {str(e)[:80]})'
        return models.load_deploy(deploy), 'deploy'
    return models.load_model(path).float(), 'trained'


def execute(runs: List[Run], evaluator: Evaluator, jobs: int, threads: int, keep_checkpoints: bool, say=print):
    real = [r for r in runs if r.alias_of is None]
    total = len(runs)
    counter = iter(range(1, total + 1))
    lock = threading.Lock()

    def one(run: Run):
        start = time.perf_counter()
        epochs = run.recipe.train.epochs
        if finished(run.dir, epochs):
            status, error = 'skipped (finished)', None
        else:
            status, error = 'trained', train(run, threads)
        if error is None and finished(run.dir, epochs):
            if not keep_checkpoints:
                shutil.rmtree(run.dir / 'checkpoints', ignore_errors=True)
            try:
                run.result = collect_result(run, evaluator)
            except Exception as e:   # a bad student must not stop the other runs
                error = f'evaluation failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}'
        elif error is None:
            error = 'trainer exited without a complete summary.json'
        run.result.update(status='failed' if error else status, error=error or '')
        wall = time.perf_counter() - start
        with lock:
            i = next(counter)
            tail = (f'deploy top-1 {run.result["top1"]:.2f}' if run.result.get('eval') == 'deploy'
                    else f'top-1 {run.result["top1"]:.2f} ({run.result["eval"]})') if not error else \
                f'FAILED: {error} (log: {run.dir / "train.log"})'
            # The table's "train s" is the trainer's own time (summary.json, every session of the
            # run); the wall time adds process start-up, skipped work and evaluation.
            train_s = run.result.get('train_s')
            took = (f'{train_s:.0f}s of training, {wall:.0f}s in all' if train_s is not None and run.result['status'] == 'trained'
                    else f'{wall:.0f}s')
            say(f'[{i:>{len(str(total))}}/{total}] {run.label}: {run.result["status"]} ({took}), {tail}', flush=True)

    if jobs == 1:
        for run in real:
            one(run)
    else:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, real))
    for run in runs:
        if run.alias_of is not None:
            run.result = {**run.alias_of.result, 'status': f'reused {run.alias_of.label}'}
            i = next(counter)
            say(f'[{i}/{total}] {run.label}: same recipe as {run.alias_of.label} (labels unused): reused', flush=True)


def collect_result(run: Run, evaluator: Evaluator) -> dict:
    summary = json.loads((run.dir / 'summary.json').read_text())
    metrics = evaluator(run.dir)
    return {**metrics, 'trainer_top1': summary['final'].get('val/top1'),
            # The trainer's key was renamed; read either.
            'train_s': summary.get('train_seconds', summary.get('train_seconds_this_session')),
            'curve': [(h['epoch'], h['val/top1']) for h in summary['history'] if 'val/top1' in h]}


# --- reporting ---------------------------------------------------------------------------------

def mean_std(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return None, None
    m = sum(values) / len(values)
    # One seed has no spread to report (None, not a misleading ± 0.00).
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
    return m, sd


def aggregate(runs: List[Run]) -> List[dict]:
    rows, groups = [], {}
    for run in runs:
        groups.setdefault((run.setting, run.variant, run.name), []).append(run)
    for (setting, variant, name), group in groups.items():
        ok = [r.result for r in group if r.result.get('status') != 'failed']
        blocks = ok[0]['blocks'] if ok else []
        row = {'setting': setting, 'variant': variant, 'name': name, 'n': len(ok), 'failed': len(group) - len(ok),
               'eval': ', '.join(sorted({r['eval'] for r in ok})) or '-', 'blocks': blocks,
               'reused': any(r.alias_of is not None for r in group),
               'label_fraction': group[0].recipe.data.label_fraction}
        for key in ('top1', 'agreement', 'train_s', 'teacher_top1'):
            row[key], row[key + '_std'] = mean_std([r.get(key) for r in ok])
        row['cka'] = [mean_std([r['cka'][b] for r in ok])[0] for b in blocks]
        row['nmse'] = [mean_std([r['nmse'][b] for r in ok])[0] for b in blocks]
        row['curve'] = _mean_curve([r['curve'] for r in ok])
        row['points'] = [r['top1'] for r in ok]
        rows.append(row)
    return rows


def _mean_curve(curves):
    by_epoch = {}
    for curve in curves:
        for epoch, value in curve:
            by_epoch.setdefault(epoch, []).append(value)
    return [(e, sum(v) / len(v)) for e, v in sorted(by_epoch.items())]


def _fmt(m, sd=None, digits=2):
    if m is None:
        return '-'
    return f'{m:.{digits}f}' + (f' ± {sd:.{digits}f}' if sd is not None else '')


def _joined(values, digits):
    return ' / '.join('-' if v is None else f'{v:.{digits}f}' for v in values) or '-'


def markdown(rows, config, runs, command) -> str:
    teacher = next((r['teacher_top1'] for r in rows if r['teacher_top1'] is not None), None)
    blocks = next((r['blocks'] for r in rows if r['blocks']), [])
    lines = [
        f'Command: `{command}`',
        '',
        f'Teacher {config["teacher"]["arch"]} ({config["teacher"]["checkpoint"]}): top-1 {_fmt(teacher)} % on the '
        f'validation split. Mean ± sample std over seeds; agreement = top-1 agreement with the teacher; CKA and '
        f'NMSE (sum (s-t)^2 / sum t^2) of student vs teacher block outputs at '
        f'{", ".join(blocks) or "-"} on the validation split.',
        '',
        '| setting | variant | evaluated | n | top-1 % | agreement % | CKA per block | NMSE per block | train s |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        n = f'{r["n"]}' + (f' ({r["failed"]} failed)' if r['failed'] else '')
        variant = r['variant'] + (' (reused)' if r['reused'] else '')
        lines.append(f'| {r["setting"]} | {variant} | {r["eval"]} | {n} | {_fmt(r["top1"], r["top1_std"])} | '
                     f'{_fmt(r["agreement"], r["agreement_std"])} | {_joined(r["cka"], 3)} | '
                     f'{_joined(r["nmse"], 3)} | {_fmt(r["train_s"], digits=0)} |')
    lines += ['', 'Variants:', '']
    ran = {r['variant'] for r in rows}
    for v in (v for v in config['variants'] if v['name'] in ran):
        desc = f'{v["description"]} ' if v.get('description') else ''
        lines.append(f'- `{v["name"]}`: {desc}(`{v["recipe"]}` {" ".join(v["overrides"]) or "as is"})')
    for s in (s for s in config['settings'] if s['name'] in {r['setting'] for r in rows}):
        lines.append(f'- setting `{s["name"]}`: {" ".join(s["overrides"]) or "no overrides"}')
    failed = [r for r in runs if r.result.get('status') == 'failed']
    if failed:
        lines += ['', 'Failed runs:', ''] + [f'- {r.label}: {r.result["error"]}' for r in failed]
    if any(r['reused'] for r in rows):
        lines += ['', '(reused): the variant has no label term (CE weight 0), so the label fraction changes '
                      'nothing and the runs of the first setting are reported again.']
    return '\n'.join(lines) + '\n'


def write_csvs(out: Path, rows, runs):
    blocks = next((r['blocks'] for r in rows if r['blocks']), [])
    with open(out / 'summary.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['setting', 'variant', 'evaluated', 'n', 'failed', 'top1_mean', 'top1_std', 'agreement_mean',
                    'agreement_std', *[f'cka:{b}' for b in blocks], *[f'nmse:{b}' for b in blocks], 'train_s_mean'])
        for r in rows:
            w.writerow([r['setting'], r['variant'], r['eval'], r['n'], r['failed'], r['top1'], r['top1_std'],
                        r['agreement'], r['agreement_std'], *(r['cka'] or [''] * len(blocks)),
                        *(r['nmse'] or [''] * len(blocks)), r['train_s']])
    with open(out / 'runs.csv', 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['setting', 'variant', 'seed', 'status', 'evaluated', 'top1', 'trainer_top1', 'agreement',
                    *[f'cka:{b}' for b in blocks], *[f'nmse:{b}' for b in blocks], 'train_s', 'dir', 'error'])
        for run in runs:
            r = run.result
            run_dir = run.alias_of.dir if run.alias_of is not None else run.dir
            w.writerow([run.setting, run.variant, run.seed, r.get('status'), r.get('eval', ''), r.get('top1', ''),
                        r.get('trainer_top1', ''), r.get('agreement', ''),
                        *[r.get('cka', {}).get(b, '') for b in blocks], *[r.get('nmse', {}).get(b, '') for b in blocks],
                        r.get('train_s', ''), run_dir, r.get('error', '')])


def plot(path: Path, rows):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ((ax1, ax2), (ax3, ax4)) = plt.subplots(2, 2, figsize=(13, 9))
    ok = [r for r in rows if r['n'] and not r['reused']]     # reused rows repeat another row
    x = list(range(len(ok)))
    ax1.errorbar(x, [r['top1'] for r in ok], yerr=[r['top1_std'] or 0. for r in ok], fmt='o', capsize=4, zorder=3)
    for i, r in enumerate(ok):
        ax1.scatter([i] * len(r['points']), r['points'], s=10, color='grey', alpha=.6, zorder=2)
    teacher = next((r['teacher_top1'] for r in ok if r['teacher_top1'] is not None), None)
    if teacher is not None:
        ax1.axhline(teacher, ls='--', color='k', lw=1, label=f'teacher {teacher:.2f}')
        ax1.legend(loc='lower right')
    ax1.set_xticks(x, [r['name'] for r in ok], rotation=30, ha='right')
    ax1.set_ylabel('top-1 % (final student, mean ± std; dots: seeds)')
    ax1.set_title('validation top-1')
    for r in ok:
        if r['curve']:
            epochs, values = zip(*r['curve'])
            ax2.plot(epochs, values, marker='.', label=r['name'], ls='-' if '@' not in r['name'] else '--')
    ax2.set_xlabel('epoch')
    ax2.set_ylabel('val top-1 % (trainer, mean over seeds)')
    ax2.set_title('validation curves')
    ax2.set_ylim(top=100)
    ax2.legend(fontsize=8)
    for ax, key, title in ((ax3, 'cka', 'linear CKA to the teacher (higher = closer)'),
                           (ax4, 'nmse', 'normalised MSE to the teacher (lower = closer)')):
        for r in ok:
            if r[key]:
                ax.plot(range(1, len(r[key]) + 1), r[key], marker='o', label=r['name'],
                        ls='-' if '@' not in r['name'] else '--')
        ax.set_xticks(range(1, len(ok[0]['blocks']) + 1) if ok else [])
        ax.set_xlabel('stage (its last block, where imitation applies)')
        ax.set_title(title)
        ax.legend(fontsize=8)
    ax4.set_yscale('log')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(out: Path, runs, config, command):
    rows = aggregate(runs)
    (out / 'ablation.md').write_text(markdown(rows, config, runs, command))
    write_csvs(out, rows, runs)
    plot(out / 'ablation.png', rows)
    return rows


# --- CLI ---------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        for name in ('jobs', 'threads', 'epochs'):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise AblateError(f'--{name} must be at least 1, got {value}')
        if args.seeds and any(s < 0 for s in args.seeds):
            raise AblateError(f'--seeds must be non-negative, got {args.seeds}')
        config = load_config(Path(args.config))
        only = [v for v in (args.variants or '').split(',') if v]
        unknown = [v for v in only if v not in [x['name'] for x in config['variants']]]
        if unknown:
            raise AblateError(f'--variants: unknown {unknown}; declared: {[x["name"] for x in config["variants"]]}')
        out = Path(args.out or (config['output_dir'] + ('-smoke' if args.smoke else '')))
        seeds = (args.seeds or config['seeds'])[:1] if args.smoke else (args.seeds or config['seeds'])
        epochs = 1 if args.smoke else args.epochs
        if not Path(config['teacher']['checkpoint']).is_file():
            raise AblateError(f'teacher checkpoint {config["teacher"]["checkpoint"]} not found; train it first '
                              f'(python distill/train.py recipes/digits/teacher.yaml)')
        runs = plan(config, out, seeds, epochs, only, args.smoke)
        check_existing(runs)
    except AblateError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    command = ' '.join(['python tools/ablate.py', *map(shlex.quote, argv)])
    real = sum(r.alias_of is None for r in runs)
    print(f'{len(runs)} runs ({real} to train or reuse from disk) into {out}/runs, {args.jobs} job(s) '
          f'x {args.threads} thread(s)', flush=True)
    import torch
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    execute(runs, Evaluator(config['teacher']), args.jobs, args.threads, args.keep_checkpoints)
    report(out, runs, config, command)
    failed = sum(r.result.get('status') == 'failed' for r in runs)
    print(f'done in {time.perf_counter() - start:.0f}s: {out / "ablation.md"}, {out / "summary.csv"}, '
          f'{out / "runs.csv"}, {out / "ablation.png"}' + (f'; {failed} run(s) failed' if failed else ''))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
