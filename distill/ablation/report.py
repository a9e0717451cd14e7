"""An ablation's results: mean and sample std over seeds per (setting, variant), the declared
comparisons with 95 % confidence intervals (compare.py) and the declared decision (decision.py:
decision.json), written as ablation.md, summary.csv,
runs.csv, comparisons.csv, ablation.png (top-1, curves with bands over seeds, feature
similarity), comparisons.png (differences with their intervals) and erf.png (effective
receptive fields)."""
import csv
import itertools
import math
from pathlib import Path
from typing import List

from . import decision as rule
from .compare import answer, by_teacher, compare_runs, several_teachers
from .plan import Run
from .stats import TwoLevelDifference, teacher_spread


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
        for key in ('top1', 'agreement', 'train_s', 'teacher_top1', 'erf_rms_radius', 'erf_area50',
                    'teacher_erf_rms_radius'):
            row[key], row[key + '_std'] = mean_std([r.get(key) for r in ok])
        row['cka'] = [mean_std([r['cka'][b] for r in ok])[0] for b in blocks]
        row['nmse'] = [mean_std([r['nmse'][b] for r in ok])[0] for b in blocks]
        row['curve'], row['curve_std'] = _mean_curve([r['curve'] for r in ok])
        row['points'] = [r['top1'] for r in ok]
        row['point_teachers'] = [r.teacher_seed for r in group if r.result.get('status') != 'failed']
        rows.append(row)
    return rows


def _mean_curve(curves):
    """[(epoch, mean)] and [(epoch, std or 0)] over the seeds' validation curves."""
    by_epoch = {}
    for curve in curves:
        for epoch, value in curve:
            by_epoch.setdefault(epoch, []).append(value)
    stats = [(e, *mean_std(v)) for e, v in sorted(by_epoch.items())]
    return [(e, m) for e, m, _ in stats], [(e, sd or 0.) for e, _, sd in stats]


def question_lines(compared) -> List[str]:
    """What each comparison answers, below its table."""
    questions = [item['comparison'] for item in compared if item['comparison'].question]
    return [''] + [f'- {c.name}: {c.question}' for c in questions] if questions else []


def _comparison_table(compared, intro: str, header: str, align: str, cells) -> List[str]:
    """One row per comparison: its name, metric and arms, then `cells(difference)` (None: fewer
    than 2 runs a side); the questions below."""
    lines = ['', intro, '', f'| comparison | metric | a | b | {header} |', f'|---|---|---|---|{align}']
    for item in compared:
        c = item['comparison']
        lines.append(f'| {c.name} | {c.metric} | {c.a} | {c.b} | {cells(item["difference"])} |')
    return lines + question_lines(compared)


def two_level_lines(compared) -> List[str]:
    def cells(d):
        if d is None:
            return f'- | - | - | - | - | - | {answer(d)}'
        return (f'{d.mean_a:.2f} | {d.mean_b:.2f} | {_signed(d.diff)} | [{_signed(d.low)}, {_signed(d.high)}] | '
                f'{_fmt(d.between_sd)} | {_fmt(d.within_sd)} | {answer(d)}')
    return _comparison_table(
        compared, 'Comparisons with teachers as the unit of replication: a - b is the mean over teachers of each '
                  "teacher's mean difference; 95 % interval from a two-level bootstrap (10,000 resamples: teachers, "
                  'then students within each teacher); between = s.d. over teachers of the per-teacher '
                  'difference, within = pooled s.d. of students around their teacher\'s mean.',
        'mean a | mean b | a - b | 95 % CI (two-level) | between | within | answer', '---:|---:|---:|---|---:|---:|---|',
        cells)


def teacher_lines(runs: List[Run], rows) -> List[str]:
    """Per variant: the mean of each teacher's students, the spread between teachers and within."""
    teachers = sorted({run.teacher_seed for run in runs if run.teacher_seed is not None})
    tops = {}
    for run in runs:
        if run.teacher_seed is not None and run.result.get('teacher_top1') is not None:
            tops[run.teacher_seed] = run.result['teacher_top1']
    head = ' | '.join(f'teacher {t} ({_fmt(tops.get(t))} %)' for t in teachers)
    lines = ['', 'Top-1 per teacher (mean over its students; the teacher\'s own top-1 in brackets), and the '
                 's.d. of those means (between teachers) next to the pooled s.d. of students within a teacher.', '',
             f'| run | {head} | between | within |', '|---|' + '---:|' * (len(teachers) + 2)]
    for r in rows:
        if r['reused']:
            continue
        groups = by_teacher(runs, r['name'], 'top1')
        between, within = teacher_spread(groups)
        cells = ' | '.join(_fmt(sum(groups[t]) / len(groups[t])) if groups.get(t) else '-' for t in teachers)
        if None in groups:          # a variant without a teacher: one mean for all columns
            cells = ' | '.join([_fmt(sum(groups[None]) / len(groups[None]))] + ['"'] * (len(teachers) - 1))
        lines.append(f'| {r["name"]} | {cells} | {_fmt(between)} | {_fmt(within)} |')
    return lines


def _fmt(m, sd=None, digits=2):
    if m is None:
        return '-'
    return f'{m:.{digits}f}' + (f' ± {sd:.{digits}f}' if sd is not None else '')


def _joined(values, digits):
    return ' / '.join('-' if v is None else f'{v:.{digits}f}' for v in values) or '-'


def _signed(v, digits=2):
    return f'{v:+.{digits}f}'


def comparison_lines(compared) -> List[str]:
    def cells(d):
        if d is None:
            return '- | - | - | fewer than 2 runs a side | - | -'
        return (f'{d.mean_a:.2f} | {d.mean_b:.2f} | {_signed(d.diff)} | [{_signed(d.low)}, {_signed(d.high)}] | '
                f'[{_signed(d.boot_low)}, {_signed(d.boot_high)}] | {"yes" if d.resolved else "no"}')
    return _comparison_table(
        compared, 'Comparisons: difference of the means over seeds (a - b), 95 % confidence intervals by '
                  "Welch's t (unequal variances, seeds unpaired) and by bootstrap (10,000 resamples of each "
                  "side's seeds); resolved = the Welch interval excludes 0.",
        'mean a | mean b | a - b | 95 % CI (Welch) | 95 % CI (bootstrap) | resolved', '---:|---:|---:|---|---|---|',
        cells)


def erf_lines(rows, config) -> List[str]:
    teacher = next((r['teacher_erf_rms_radius'] for r in rows if r.get('teacher_erf_rms_radius') is not None), None)
    lines = ['', f'Effective receptive field of the centre unit of `{config.erf.block}` (|d unit / d input|, '
                 f'mean over {config.erf.images} validation images): RMS radius about its centroid in pixels, and '
                 f'the share of the image holding half of the gradient mass. Teacher: RMS radius '
                 f'{_fmt(teacher)} px.', '',
             '| run | n | ERF RMS radius px | ERF area50 % |', '|---|---|---|---|']
    for r in rows:
        if r.get('erf_rms_radius') is None or r['reused']:
            continue
        area, area_sd = r['erf_area50'], r['erf_area50_std']
        lines.append(f'| {r["name"]} | {r["n"]} | {_fmt(r["erf_rms_radius"], r["erf_rms_radius_std"])} | '
                     f'{_fmt(area * 100, area_sd * 100 if area_sd is not None else None)} |')
    return lines


def markdown(rows, config, runs, command, compared=(), decision_lines=()) -> str:
    teacher = next((r['teacher_top1'] for r in rows if r['teacher_top1'] is not None), None)
    blocks = next((r['blocks'] for r in rows if r['blocks']), [])
    lines = [
        f'Command: `{command}`',
        '',
        (f'Teachers {config.teacher.arch} at seeds {config.teacher.seeds} ({config.teacher.checkpoint}): mean '
         if config.teacher.seeds else f'Teacher {config.teacher.arch} ({config.teacher.checkpoint}): ') +
        f'top-1 {_fmt(teacher)} % on the validation split. Mean ± sample std over seeds; agreement = top-1 agreement with the teacher; CKA and '
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
    several = several_teachers(runs)
    if several:
        lines += teacher_lines(runs, rows)
    if compared:
        lines += two_level_lines(compared) if several else comparison_lines(compared)
    lines += list(decision_lines)
    if config.erf is not None:
        lines += erf_lines(rows, config)
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
        w.writerow(['setting', 'variant', 'teacher_seed', 'seed', 'status', 'evaluated', 'top1', 'trainer_top1', 'agreement',
                    *[f'cka:{b}' for b in blocks], *[f'nmse:{b}' for b in blocks], 'train_s', 'dir', 'error'])
        for run in runs:
            r = run.result
            run_dir = run.alias_of.dir if run.alias_of is not None else run.dir
            w.writerow([run.setting, run.variant, '' if run.teacher_seed is None else run.teacher_seed, run.seed,
                        r.get('status'), r.get('eval', ''), r.get('top1', ''),
                        r.get('trainer_top1', ''), r.get('agreement', ''),
                        *[r.get('cka', {}).get(b, '') for b in blocks], *[r.get('nmse', {}).get(b, '') for b in blocks],
                        r.get('train_s', ''), run_dir, r.get('error', '')])


# What a comparison's difference is measured in, per metric (comparisons.png's axes).
METRIC_UNITS = {'top1': 'top-1, percentage points', 'agreement': 'agreement with the teacher, percentage points',
                'erf_rms_radius': 'ERF RMS radius, pixels', 'erf_area50': 'ERF area50, share of the image'}


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def run_colours(names: List[str]) -> dict:
    """A distinct colour per name, for any number of names: tab10's colours first, then each
    next colour the one farthest (in RGB) from every colour taken so far, from a grid without
    near-white (lost on the white background) and near-black (the teacher's reference line)."""
    import numpy as np
    from matplotlib import colormaps
    chosen = [np.array(c) for c in colormaps['tab10'].colors][:len(names)]
    levels = np.linspace(0, 1, 8)
    grid = np.array([c for c in itertools.product(levels, repeat=3) if sum(c) < 2.4 and max(c) > 0.3])
    while len(chosen) < len(names):
        distance = np.linalg.norm(grid[:, None, :] - np.array(chosen)[None], axis=2).min(axis=1)
        chosen.append(grid[int(distance.argmax())])
    return {name: tuple(float(v) for v in c) for name, c in zip(names, chosen)}


def _line_style(name: str) -> str:
    return '--' if '@' in name else '-'         # runs of a setting other than the first: dashed


def ablation_figure(rows):
    """Top-1 per run (seeds as dots), validation curves with bands over seeds, CKA and NMSE per
    stage; one colour per run in every panel, one legend outside the panels."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    plt = _pyplot()
    fig, ((ax1, ax2), (ax3, ax4)) = plt.subplots(2, 2, figsize=(15, 9), layout='constrained')
    ok = [r for r in rows if r['n'] and not r['reused']]     # reused rows repeat another row
    colour = run_colours([r['name'] for r in ok])
    # With several teachers, each student's dot has its teacher's grey, set a little apart.
    for r in ok:        # rows built without teacher seeds: every student under the one teacher
        r.setdefault('point_teachers', [None] * len(r['points']))
    teachers = sorted({t for r in ok for t in r['point_teachers'] if t is not None})
    teacher_colour = {t: str(0.15 + 0.6 * k / max(1, len(teachers) - 1)) for k, t in enumerate(teachers)}

    def offsets(point_teachers):
        return [0.0 if t is None else 0.12 * (teachers.index(t) - (len(teachers) - 1) / 2) for t in point_teachers]

    for i, r in enumerate(ok):
        ax1.errorbar([i], [r['top1']], yerr=[r['top1_std'] or 0.], fmt='o', capsize=4, color=colour[r['name']],
                     zorder=3)
        ax1.scatter([i + dx for dx in offsets(r['point_teachers'])], r['points'], s=12, zorder=2,
                    color=[teacher_colour.get(t, 'grey') for t in r['point_teachers']], alpha=.7)
    teacher = next((r['teacher_top1'] for r in ok if r['teacher_top1'] is not None), None)
    if teacher is not None:
        ax1.axhline(teacher, ls=':', color='k', lw=1)
    ax1.set_xticks(range(len(ok)), [r['name'] for r in ok], rotation=30, ha='right')
    ax1.set_ylabel('top-1 % (mean ± std; dots: ' + ('students, shaded by teacher)' if teachers else 'seeds)'))
    ax1.set_title('validation top-1')
    for r in ok:
        if r['curve']:
            epochs, values = zip(*r['curve'])
            ax2.plot(epochs, values, marker='.', color=colour[r['name']], ls=_line_style(r['name']))
            spread = [sd for _, sd in r['curve_std']]
            ax2.fill_between(epochs, [v - sd for v, sd in zip(values, spread)],
                             [v + sd for v, sd in zip(values, spread)], color=colour[r['name']], alpha=.15, lw=0)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))      # epochs are whole numbers
    ax2.set_xlabel('epoch')
    ax2.set_ylabel('val top-1 % (trainer; mean, band ± std over seeds)')
    ax2.set_title('validation curves')
    ax2.set_ylim(top=min(ax2.get_ylim()[1], 100))      # bands stop at 100 %; the curves keep the height
    for ax, key, title in ((ax3, 'cka', 'linear CKA to the teacher (higher = closer)'),
                           (ax4, 'nmse', 'normalised MSE to the teacher (lower = closer)')):
        for r in ok:
            if r[key]:
                ax.plot(range(1, len(r[key]) + 1), r[key], marker='o', color=colour[r['name']],
                        ls=_line_style(r['name']))
        ax.set_xticks(range(1, len(ok[0]['blocks']) + 1) if ok else [])
        ax.set_xlabel('stage (its last block, where imitation applies)')
        ax.set_title(title)
    ax4.set_yscale('log')
    handles = [Line2D([], [], color=colour[r['name']], ls=_line_style(r['name']), marker='o') for r in ok]
    labels = [r['name'] for r in ok]
    if teacher is not None:
        handles.append(Line2D([], [], color='k', ls=':', lw=1))
        labels.append(f'{"teachers (mean)" if teachers else "teacher"} {teacher:.2f}')
    fig.legend(handles, labels, loc='outside right center', fontsize=9)
    return fig


def plot(path: Path, rows):
    fig = ablation_figure(rows)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def comparisons_figure(compared):
    """Each metric's comparisons on their own axis, labelled with what the difference is in."""
    plt = _pyplot()
    items = [i for i in compared if i['difference'] is not None]
    if not items:       # every comparison still lacks 2 runs a side
        fig, ax = plt.subplots(figsize=(6, 1.5), layout='constrained')
        ax.text(0.5, 0.5, 'no comparison has 2 runs on each side yet', ha='center', va='center')
        ax.set_axis_off()
        return fig
    metrics = list(dict.fromkeys(i['comparison'].metric for i in items))
    counts = [sum(i['comparison'].metric == m for i in items) for m in metrics]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(9, 0.45 * len(items) + 1.6 * len(metrics) + 0.5),
                             height_ratios=counts, layout='constrained', squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        mine = [i for i in items if i['comparison'].metric == metric][::-1]      # the first one on top
        for y, item in enumerate(mine):
            d = item['difference']
            ax.errorbar([d.diff], [y], xerr=[[d.diff - d.low], [d.high - d.diff]], fmt='o', capsize=4,
                        color='tab:blue' if d.resolved else 'tab:grey')
        ax.axvline(0, color='k', lw=1)
        ax.set_yticks(range(len(mine)), [i['comparison'].name for i in mine])
        ax.set_ylim(-0.6, len(mine) - 0.4)
        ax.set_xlabel(f'a - b: {METRIC_UNITS.get(metric, metric)}')
    interval = ('two-level bootstrap interval (teachers, then students)'
                if isinstance(items[0]['difference'], TwoLevelDifference) else 'Welch interval')
    fig.suptitle(f'difference of the means, 95 % {interval} (blue: excludes 0; grey: includes 0)', fontsize=10)
    return fig


def plot_comparisons(path: Path, compared):
    fig = comparisons_figure(compared)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def erf_panels(runs, config):
    """[(title, map)]: the teacher's ERF and the mean ERF over seeds of each run in erf.show."""
    from ..erf import mean_map
    done = [r for r in runs if r.result.get('erf_map') is not None]
    if not done:
        return []
    panels = [('teacher', mean_map([done[0].result['teacher_erf_map']]))]
    for name in config.erf.show:
        maps = [r.result['erf_map'] for r in done if r.name == name]
        if maps:
            panels.append((f'{name} (mean of {len(maps)})', mean_map(maps)))
    return panels


def erf_figure(panels, block: str):
    """The ERF maps side by side on one colour scale (% of the gradient mass per pixel, square
    root: the tails, where pooling and imitation differ, stay visible next to the peak)."""
    from matplotlib.colors import PowerNorm
    from ..erf import summarise
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 0.8, 3.9), layout='constrained',
                             squeeze=False)
    norm = PowerNorm(0.5, vmin=0., vmax=max(float(m.max()) for _, m in panels) * 100)
    for ax, (title, m) in zip(axes[0], panels):
        image = ax.imshow(m.numpy() * 100, cmap='magma', norm=norm)
        ax.set_title(f'{title}\nRMS radius {summarise(m).rms_radius:.1f} px', fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, pad=0.01, label='% of |gradient| per pixel (sqrt scale)')
    fig.suptitle(f'effective receptive field of the centre unit of {block}', fontsize=10)
    return fig


def plot_erf(path: Path, runs, config):
    panels = erf_panels(runs, config)
    if not panels:
        return
    fig = erf_figure(panels, config.erf.block)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def write_comparisons_csv(path: Path, compared):
    if any(isinstance(i['difference'], TwoLevelDifference) for i in compared):
        return write_two_level_csv(path, compared)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['comparison', 'metric', 'a', 'b', 'n_a', 'n_b', 'mean_a', 'mean_b', 'diff', 'welch_low',
                    'welch_high', 'boot_low', 'boot_high', 'resolved'])
        for item in compared:
            c, d = item['comparison'], item['difference']
            w.writerow([c.name, c.metric, c.a, c.b] + ([d.n_a, d.n_b, d.mean_a, d.mean_b, d.diff, d.low, d.high,
                                                         d.boot_low, d.boot_high, d.resolved] if d else [''] * 10))


def write_two_level_csv(path: Path, compared):
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['comparison', 'metric', 'a', 'b', 'teachers', 'n_a', 'n_b', 'mean_a', 'mean_b', 'diff',
                    'boot2_low', 'boot2_high', 'between_sd', 'within_sd', 'answer'])
        for item in compared:
            c, d = item['comparison'], item['difference']
            w.writerow([c.name, c.metric, c.a, c.b] + ([d.teachers, d.n_a, d.n_b, d.mean_a, d.mean_b, d.diff, d.low,
                                                         d.high, d.between_sd, d.within_sd] if d else [''] * 10)
                       + [answer(d)])


def report(out: Path, runs, config, command):
    rows = aggregate(runs)
    compared = compare_runs(runs, config.comparisons)
    decision_lines = []
    if config.decision is not None:
        outcome = rule.decide(runs, config.decision, several_teachers(runs))
        confirmation = rule.confirm(outcome, compared, config.decision.confirms) if config.decision.confirms else None
        rule.write(out / 'decision.json', outcome, compared, confirmation)
        decision_lines = rule.lines(outcome, confirmation)
    (out / 'ablation.md').write_text(markdown(rows, config, runs, command, compared, decision_lines))
    write_csvs(out, rows, runs)
    plot(out / 'ablation.png', rows)
    if compared:
        write_comparisons_csv(out / 'comparisons.csv', compared)
        plot_comparisons(out / 'comparisons.png', compared)
    if config.erf is not None:
        plot_erf(out / 'erf.png', runs, config)
    return rows
