"""The ablation report's figures (distill/ablation/report.py) on small synthetic results: one
distinct colour per run, legends and titles that cover nothing, whole-number epochs, one labelled
axis per compared metric, a colour bar on the ERF maps."""
import itertools
from types import SimpleNamespace

import matplotlib
import pytest
import torch
from matplotlib.colors import to_rgb
from matplotlib.text import Text

from distill.ablation.report import comparisons_figure, erf_figure, ablation_figure, run_colours
from distill.ablation.stats import Difference

matplotlib.use('Agg')

NAMES = ['ce_pool', 'ce_identity', 'ce_affine', 'soft_kd', 'feature', 'imitation', 'imitation_all',
         'imitation_norel', 'ce_affine@labels10', 'feature@labels10', 'imitation@labels10']   # 11 runs


def fake_row(i, name, epochs=4, blocks=4):
    return {'name': name, 'n': 2, 'reused': False, 'top1': 50. + i, 'top1_std': 1., 'points': [49. + i, 51. + i],
            'teacher_top1': 89.5, 'curve': [(e, 20. + 10 * e + i) for e in range(1, epochs + 1)],
            'curve_std': [(e, 1.) for e in range(1, epochs + 1)], 'blocks': [f'stages.{b}' for b in range(blocks)],
            'cka': [0.9 - 0.1 * b for b in range(blocks)], 'nmse': [0.5 + b for b in range(blocks)]}


def extents(fig, artists):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


@pytest.mark.parametrize('n', [1, 3, 10, 11, 20, 25, 60])
def test_every_run_gets_its_own_colour(n):
    colours = [to_rgb(c) for c in run_colours([f'run{i}' for i in range(n)]).values()]
    # Far enough apart to tell by eye: no two closer than 0.2 in RGB (tab20's light blue and
    # light cyan are 0.1 apart).
    assert all(sum((a - b) ** 2 for a, b in zip(x, y)) ** .5 > 0.2 for x, y in itertools.combinations(colours, 2))


def test_ablation_figure_colours_legend_and_epoch_ticks():
    fig = ablation_figure([fake_row(i, name) for i, name in enumerate(NAMES)])
    top1, curves, cka, nmse = fig.axes
    assert len({to_rgb(line.get_color()) for line in curves.lines}) == len(NAMES)
    # The same run has the same colour in every panel.
    assert [to_rgb(line.get_color()) for line in cka.lines] == [to_rgb(line.get_color()) for line in curves.lines]
    # One legend, for the whole figure, outside every panel.
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    legend, *panels = extents(fig, [fig.legends[0], *fig.axes])
    assert not any(legend.overlaps(panel) for panel in panels)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == NAMES + ['teacher 89.50']
    low, high = curves.get_xlim()
    ticks = [t for t in curves.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_comparisons_figure_has_one_labelled_axis_per_metric():
    def compared(name, metric, diff):
        return {'comparison': SimpleNamespace(name=name, metric=metric),
                'difference': Difference(mean_a=10., mean_b=10. - diff, diff=diff, low=diff - 1, high=diff + 1,
                                         boot_low=diff - 1, boot_high=diff + 1, n_a=8, n_b=8)}
    fig = comparisons_figure([compared('a_vs_b', 'top1', 5.), compared('erf_a_vs_b', 'erf_rms_radius', 0.5),
                              compared('a_vs_c', 'top1', -2.)])
    assert len(fig.axes) == 2
    top1, erf = fig.axes
    assert 'percentage points' in top1.get_xlabel() and 'pixels' in erf.get_xlabel()
    assert [t.get_text() for t in top1.get_yticklabels()] == ['a_vs_c', 'a_vs_b']     # first one on top
    assert [t.get_text() for t in erf.get_yticklabels()] == ['erf_a_vs_b']


def test_comparisons_figure_without_intervals_says_so():
    fig = comparisons_figure([{'comparison': SimpleNamespace(name='a_vs_b', metric='top1'), 'difference': None}])
    assert [t.get_text() for t in fig.findobj(Text) if 'yet' in t.get_text()]


def test_erf_figure_has_a_colour_bar_and_the_title_covers_no_panel_title():
    maps = []
    for width in (1., 3., 6.):
        ys, xs = torch.meshgrid(torch.arange(16.), torch.arange(16.), indexing='ij')
        m = torch.exp(-((ys - 7.5) ** 2 + (xs - 7.5) ** 2) / (2 * width ** 2)).double()
        maps.append((f'width {width}', m / m.sum()))
    fig = erf_figure(maps, 'stages.2')
    panels = [ax for ax in fig.axes if ax.get_images()]
    bars = [ax for ax in fig.axes if ax not in panels]
    assert len(panels) == 3 and len(bars) == 1 and 'per pixel' in bars[0].get_ylabel()
    # One colour scale for every panel: the colour bar reads each of them.
    assert len({id(ax.get_images()[0].norm) for ax in panels}) == 1
    suptitle = next(t for t in fig.findobj(Text) if t.get_text() == fig.get_suptitle())
    title, *panel_titles = extents(fig, [suptitle, *[ax.title for ax in panels]])
    assert not any(title.overlaps(t) for t in panel_titles)
