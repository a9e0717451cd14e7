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

from .cases import Case, Settings

COLUMNS = ['model', 'form', 'batch', 'res', 'img/s', 'IQR img/s', 'latency ms', 'vs PoolFormer', 'vs plain']
CSV_FIELDS = ['model', 'form', 'group', 'batch', 'res', 'reps', 'img_s', 'img_s_p25', 'img_s_p75', 'img_s_min',
              'img_s_max', 'latency_ms', 'vs_poolformer', 'vs_plain', 'device', 'dtype', 'threads',
              'channels_last', 'compile']


def summarize(case: Case, batch: int, settings: Settings, seconds: Sequence[float]) -> dict:
    t = np.asarray(seconds)
    rate = batch / t
    p25, p75 = np.percentile(rate, [25, 75])
    return {
        'model': case.model, 'form': case.form, 'group': case.group, 'role': case.role,
        'batch': batch, 'res': settings.img_size, 'reps': len(t),
        'img_s': float(np.median(rate)), 'img_s_p25': float(p25), 'img_s_p75': float(p75),
        'img_s_min': float(rate.min()), 'img_s_max': float(rate.max()),
        'latency_ms': float(np.median(t) * 1e3),
    }


def add_speedups(rows: List[dict]) -> None:
    """`vs_poolformer` and `vs_plain`: a row's median img/s over its group's baseline rows at
    the same batch size (None where the group has no such baseline)."""
    base = {(r['group'], r['batch'], r['role']): r['img_s'] for r in rows if r['role']}
    for r in rows:
        for column, role in (('vs_poolformer', 'poolformer'), ('vs_plain', 'plain')):
            ref = base.get((r['group'], r['batch'], role))
            r[column] = r['img_s'] / ref if ref else None


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


def format_markdown(rows: List[dict], env: Dict[str, str], command: str) -> str:
    lines = [f'Command: `{command}`', '',
             'Machine: ' + ', '.join(f'{k} {v}' for k, v in env.items()), '',
             '| ' + ' | '.join(COLUMNS) + ' |',
             '|' + '|'.join('---' if i < 2 else '---:' for i in range(len(COLUMNS))) + '|']
    lines += ['| ' + ' | '.join(table_cells(r)) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


def write_csv(path: Path, rows: List[dict], settings: Settings) -> None:
    extra = {'device': settings.device, 'dtype': settings.dtype, 'threads': settings.threads,
             'channels_last': int(settings.channels_last), 'compile': int(settings.compile)}
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            cells = {k: ('' if v is None else f'{v:.4f}' if isinstance(v, float) else v) for k, v in r.items()}
            writer.writerow({**cells, **extra})


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def environment(settings: Settings) -> Dict[str, str]:
    env = {'cpu': cpu_model(), 'nproc': str(os.cpu_count()), 'torch': torch.__version__, 'timm': timm.__version__,
           'threads': str(settings.threads), 'device': settings.device, 'dtype': settings.dtype,
           'channels_last': str(settings.channels_last), 'compile': str(settings.compile)}
    if settings.device.startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name(settings.device)
    return env
