"""An ablation's results: mean and sample std over seeds per (setting, variant), written as
ablation.md, summary.csv, runs.csv and ablation.png."""
import csv
import math
from pathlib import Path
from typing import List

from .plan import Run


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
        f'Teacher {config.teacher.arch} ({config.teacher.checkpoint}): top-1 {_fmt(teacher)} % on the '
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
    for v in (v for v in config.variants if v.name in ran):
        desc = f'{v.description} ' if v.description else ''
        lines.append(f'- `{v.name}`: {desc}(`{v.recipe}` {" ".join(v.overrides) or "as is"})')
    for s in (s for s in config.settings if s.name in {r['setting'] for r in rows}):
        lines.append(f'- setting `{s.name}`: {" ".join(s.overrides) or "no overrides"}')
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
