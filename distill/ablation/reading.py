"""The loss-balance study's decision (recipes/clutter/ablation_balance.yaml): which reading of
Table 10 the paper recipes use, by the rule declared in that config before its first run.

    python -m distill.ablation.reading runs/clutter/balance/runs.csv

Rule: a reading qualifies when its imitation student beats both its feature-distillation
student and its soft-KD student (difference of means > 0). Among qualifying readings the one
with the highest imitation top-1 wins; when the 95 % Welch interval of its difference to the
runner-up includes 0, the tie goes to the reading whose step-0 gradient shares at ImageNet
scale keep every active term within 1-95 %, then to the smaller largest share. If none
qualifies, the same over all readings.
"""
import csv
import statistics
import sys
from typing import Dict, List, Optional

from .stats import difference

# reading -> (imitation, feature distillation, soft KD) variants of the study
ARMS = {
    'shipped': ('imitation_shipped', 'feature_shipped', 'soft_kd_numel'),
    'mean': ('imitation_mean', 'feature_mean', 'soft_kd_numel'),
    'mixed': ('imitation_mixed', 'feature_shipped', 'soft_kd_numel'),
    'sample_sum': ('imitation_sample_sum', 'feature_sample_sum', 'soft_kd_batchmean'),
}


def top1_by_variant(runs_csv) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {}
    with open(runs_csv) as f:
        for row in csv.DictReader(f):
            if row.get('top1') not in (None, '') and not row.get('error'):
                out.setdefault(row['variant'], []).append(float(row['top1']))
    return out


def decide(top1: Dict[str, List[float]], shares: Dict[str, List[float]]) -> dict:
    """`shares`: reading -> every active term's gradient share (0-1) over the windows at
    ImageNet scale. Returns the decision and the numbers it read."""
    rows = {}
    for reading, (imit, feat, soft) in ARMS.items():
        vs_feature, vs_soft = difference(top1[imit], top1[feat]), difference(top1[imit], top1[soft])
        rows[reading] = {'imitation': statistics.fmean(top1[imit]), 'vs_feature': vs_feature, 'vs_soft': vs_soft,
                         'qualifies': vs_feature.diff > 0 and vs_soft.diff > 0,
                         'balanced': all(0.01 <= s <= 0.95 for s in shares[reading]),
                         'largest_share': max(shares[reading])}
    pool = [r for r in rows if rows[r]['qualifies']] or list(rows)
    ranked = sorted(pool, key=lambda r: rows[r]['imitation'], reverse=True)
    best = ranked[0]
    tie: Optional[object] = None
    if len(ranked) > 1:
        tie = difference(top1[ARMS[best][0]], top1[ARMS[ranked[1]][0]])
        if not tie.resolved:
            tied = [r for r in ranked if not difference(top1[ARMS[best][0]], top1[ARMS[r][0]]).resolved]
            best = sorted(tied, key=lambda r: (not rows[r]['balanced'], rows[r]['largest_share']))[0]
    return {'rows': rows, 'qualifying': [r for r in rows if rows[r]['qualifies']], 'ranked': ranked,
            'runner_up_difference': tie, 'chosen': best}


def imagenet_shares(recipe='recipes/riformer_s12.yaml', processes=8) -> Dict[str, List[float]]:
    """Every active term's step-0 gradient share per window under each reading (the proxy of
    tools/balance.py: S12, 224 px, 1000 classes, global batch 1024)."""
    from distill.balance import READINGS
    from distill.balance_proxy import measure_windows
    from distill.config import load_recipe
    out = {}
    for reading in ARMS:
        windows = measure_windows(load_recipe(recipe, READINGS[reading]), 1000, processes, 4)
        out[reading] = [r.grad_share for _, rows in windows for r in rows if len(rows) > 1]
    return out


def report(decision: dict) -> str:
    lines = ['| reading | imitation top-1 | imitation - feature [95 % CI] | imitation - soft KD [95 % CI] | '
             'qualifies | every term 1-95 % at ImageNet scale | largest share |', '|---|---:|---|---|---|---|---:|']
    for reading, r in decision['rows'].items():
        f, s = r['vs_feature'], r['vs_soft']
        lines.append(f'| `{reading}` | {r["imitation"]:.2f} | {f.diff:+.2f} [{f.low:+.2f}, {f.high:+.2f}] | '
                     f'{s.diff:+.2f} [{s.low:+.2f}, {s.high:+.2f}] | {"yes" if r["qualifies"] else "no"} | '
                     f'{"yes" if r["balanced"] else "no"} | {100 * r["largest_share"]:.2f} % |')
    tie = decision['runner_up_difference']
    lines.append('')
    lines.append(f'Qualifying: {", ".join(decision["qualifying"]) or "none (the rule falls back to all readings)"}; '
                 f'by imitation top-1: {", ".join(decision["ranked"])}'
                 + (f'; best - runner-up {tie.diff:+.2f} [{tie.low:+.2f}, {tie.high:+.2f}] '
                    f'({"resolved" if tie.resolved else "unresolved: the balance breaks the tie"})' if tie else '')
                 + f'. Chosen: **{decision["chosen"]}**.')
    return '\n'.join(lines)


if __name__ == '__main__':
    print(report(decide(top1_by_variant(sys.argv[1]), imagenet_shares())))
