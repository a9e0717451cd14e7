"""Rows from timings (median, IQR, speedups against a group's baselines) and their output:
a console table, markdown with the command and machine, CSV."""
import csv
import os
import platform
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import timm
import torch

from .case import Case, Settings
from .table import render_table
from .training import PHASES

COLUMNS = ['model', 'form', 'batch', 'res', 'img/s', 'IQR img/s', 'latency ms', 'vs PoolFormer', 'vs plain']
CSV_FIELDS = ['model', 'form', 'group', 'batch', 'res', 'reps', 'img_s', 'img_s_p25', 'img_s_p75', 'img_s_min',
              'img_s_max', 'latency_ms', 'vs_poolformer', 'vs_plain', 'device', 'dtype', 'threads',
              'channels_last', 'compile'] + [f'{p.replace(" ", "_")}_ms' for p in PHASES] + [
              'gflop', 'flop_ratio', 'vs_plain_paired', 'vs_plain_paired_p25', 'vs_plain_paired_p75']


def summarize(case: Case, batch: int, settings: Settings, seconds: Sequence[float]) -> dict:
    t = np.asarray(seconds)
    rate = batch / t
    p25, p75 = np.percentile(rate, [25, 75])
    return {
        'model': case.model, 'form': case.form, 'group': case.group, 'role': case.role,
        'batch': batch, 'res': settings.img_size, 'reps': len(t),
        'img_s': float(np.median(rate)), 'img_s_p25': float(p25), 'img_s_p75': float(p75),
        'img_s_min': float(rate.min()), 'img_s_max': float(rate.max()),
        'latency_ms': float(np.median(t) * 1e3), 'seconds': [float(v) for v in t],
    }


def phase_stats(phases: Sequence[Dict[str, float]]) -> Dict[str, tuple]:
    """Per phase of a training step: (median, p25, p75) in milliseconds over the timed calls."""
    if not phases:
        return {}
    out = {}
    for name in PHASES:
        ms = np.asarray([p[name] for p in phases]) * 1e3
        out[name] = tuple(float(v) for v in (np.median(ms), *np.percentile(ms, [25, 75])))
    return out


def add_speedups(rows: List[dict]) -> None:
    """`vs_poolformer` and `vs_plain`: a row's median img/s over its group's baseline rows at
    the same batch size (None where the group has no such baseline). Against the plain
    baseline also `vs_plain_paired` (median, p25, p75 of the per-repetition ratios) where the
    rows carry their `seconds`, and `flop_ratio` where they carry `gflop` (training rows)."""
    base = {(r['group'], r['batch'], r['role']): r for r in rows if r['role']}
    for r in rows:
        for column, role in (('vs_poolformer', 'poolformer'), ('vs_plain', 'plain')):
            ref = base.get((r['group'], r['batch'], role))
            r[column] = r['img_s'] / ref['img_s'] if ref else None
        plain = base.get((r['group'], r['batch'], 'plain'))
        # Paired: the plain step's time over this row's within each repetition (the rows of a
        # repetition run back to back), so a slow spell of a shared machine cancels out.
        if plain and plain.get('seconds') and len(plain['seconds']) == len(r.get('seconds', ())):
            paired = np.asarray(plain['seconds']) / np.asarray(r['seconds'])
            r['vs_plain_paired'] = tuple(float(v) for v in (np.median(paired), *np.percentile(paired, [25, 75])))
        # The plain step's FLOPs over this row's: the 'vs plain' a step would reach if its extra
        # arithmetic ran as efficiently as the plain step's.
        if 'gflop' in r:
            r['flop_ratio'] = plain['gflop'] / r['gflop'] if plain and plain.get('gflop') and r['gflop'] else None


def _ratio(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.2f}x'


def table_cells(row: dict) -> List[str]:
    spread = '-' if row['reps'] < 2 else f'{row["img_s_p25"]:.1f}-{row["img_s_p75"]:.1f}'
    return [row['model'], row['form'], str(row['batch']), str(row['res']), f'{row["img_s"]:.1f}', spread,
            f'{row["latency_ms"]:.1f}', _ratio(row['vs_poolformer']), _ratio(row['vs_plain'])]


def format_table(rows: List[dict]) -> str:
    cells = [COLUMNS] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ['  '.join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


BREAKDOWN_COLUMNS = ['model', 'form', 'batch', *(f'{p} ms' for p in PHASES), 'sum ms', 'step ms',
                     'GFLOP', 'GFLOP/s', 'FLOP ratio', 'paired vs plain (IQR)']


def breakdown_cells(row: dict) -> List[str]:
    phases = row['phases']
    cells = [row['model'], row['form'], str(row['batch'])]
    for name in PHASES:
        median, p25, p75 = phases[name]
        cells.append(f'{median:.0f}' if row['reps'] < 2 else f'{median:.0f} ({p25:.0f}-{p75:.0f})')
    cells += [f'{sum(phases[n][0] for n in PHASES):.0f}', f'{row["latency_ms"]:.0f}']
    gflop = row.get('gflop')
    cells += ['-', '-'] if gflop is None else [f'{gflop:.4g}', f'{gflop / row["latency_ms"] * 1e3:.3g}']
    cells.append(_ratio(row.get('flop_ratio')))
    cells.append(_paired(row))
    return cells


def _paired(row: dict) -> str:
    paired = row.get('vs_plain_paired')
    if paired is None:
        return '-'
    median, p25, p75 = paired
    return _ratio(median) if row['reps'] < 2 else f'{median:.2f}x ({p25:.2f}-{p75:.2f})'



def format_breakdown(rows: List[dict], markdown: bool = False) -> str:
    """Where a training step's time goes: median (IQR) milliseconds per phase, the sum of the
    medians, the step's median latency, its FLOPs, the rate it ran them at, the FLOP ratio
    (the plain step's FLOPs over the row's: its 'vs plain' at equal arithmetic efficiency) and
    the paired 'vs plain' (median and IQR of the per-repetition ratios); '' when no row has
    phases."""
    rows = [r for r in rows if r.get('phases')]
    if not rows:
        return ''
    return render_table([BREAKDOWN_COLUMNS] + [breakdown_cells(r) for r in rows], 2, markdown)



def format_markdown(rows: List[dict], env: Dict[str, str], command: str) -> str:
    lines = [f'Command: `{command}`', '',
             'Machine: ' + ', '.join(f'{k} {v}' for k, v in env.items()), '',
             '| ' + ' | '.join(COLUMNS) + ' |',
             '|' + '|'.join('---' if i < 2 else '---:' for i in range(len(COLUMNS))) + '|']
    lines += ['| ' + ' | '.join(table_cells(r)) + ' |' for r in rows]
    breakdown = format_breakdown(rows, markdown=True)
    if breakdown:
        lines += ['', 'Training step by phase, median (IQR) ms:', '', breakdown]
    return '\n'.join(lines) + '\n'


def write_csv(path: Path, rows: List[dict], settings: Settings) -> None:
    extra = {'device': settings.device, 'dtype': settings.dtype, 'threads': settings.threads,
             'channels_last': int(settings.channels_last), 'compile': int(settings.compile)}
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            cells = {k: ('' if v is None else f'{v:.4f}' if isinstance(v, float) else v) for k, v in r.items()}
            phases = {f'{n.replace(" ", "_")}_ms': f'{v[0]:.4f}' for n, v in r.get('phases', {}).items()}
            paired = dict(zip(('vs_plain_paired', 'vs_plain_paired_p25', 'vs_plain_paired_p75'),
                              (f'{v:.4f}' for v in r.get('vs_plain_paired', ()))))
            writer.writerow({**cells, **phases, **paired, **extra})


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


# The instruction sets that decide the CPU rows' speed (vector width, bf16, AMX), as /proc/cpuinfo names them.
ISA_FLAGS = ('avx2', 'fma', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16', 'asimd', 'bf16')


def environment(settings: Settings) -> Dict[str, str]:
    env = {'cpu': cpu_model(), 'nproc': str(os.cpu_count()), 'torch': torch.__version__, 'timm': timm.__version__,
           'threads': str(settings.threads), 'device': settings.device, 'dtype': settings.dtype,
           'channels_last': str(settings.channels_last), 'compile': str(settings.compile)}
    if settings.device.startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name(settings.device)
    else:
        from distill.teacher import cpu_bf16_support, cpu_flags
        flags = cpu_flags()
        env['cpu flags'] = ' '.join(f for f in ISA_FLAGS if f in flags) or 'unknown'
        env['cpu bf16'] = cpu_bf16_support() or 'none (emulated)'
        env['torch cpu capability'] = torch.backends.cpu.get_cpu_capability()
    from distill.teacher import resolve_precision
    dtype = resolve_precision(settings.teacher_precision, settings.device)
    env['teacher precision'] = f'{settings.teacher_precision} -> {str(dtype).replace("torch.", "")}'
    env['train layout'] = settings.train_layout
    return env
