"""The study's statistics (distill/ablation/stats.py), effective receptive fields (distill/erf.py),
comparisons in the report, and the config checks that go with them."""
import json
import math
import statistics
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import yaml
from scipy import stats as scipy_stats

from distill.ablation import load_ablation_config, plan
from distill.ablation.config import AblateError, Comparison
from distill.ablation.report import compare_runs, markdown, aggregate, report
from distill.ablation.stats import bootstrap, difference, teacher_spread, two_level, welch
from distill.erf import effective_receptive_field, summarise

A = [71.2, 69.8, 70.5, 72.0, 70.9, 71.5, 70.1, 71.8]
B = [69.0, 68.1, 70.2, 68.8, 69.5, 67.9, 69.9, 68.4]


def welch_by_hand(a, b, level=0.95):
    """Welch's interval written out (Welch-Satterthwaite degrees of freedom): the reference."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = scipy_stats.t.ppf(0.5 + level / 2, df) * math.sqrt(va + vb)
    diff = statistics.fmean(a) - statistics.fmean(b)
    return diff - half, diff + half


def test_welch_is_welchs_interval_of_a_minus_b():
    diff, low, high = welch(A, B)
    assert diff == pytest.approx(sum(A) / 8 - sum(B) / 8)
    assert (low, high) == tuple(pytest.approx(x) for x in welch_by_hand(A, B))
    small, large = [1.0, 2.0, 3.0], [5.0, 5.5, 4.5, 5.2, 4.9]          # unequal sizes and spreads
    assert welch(small, large)[1:] == tuple(pytest.approx(x) for x in welch_by_hand(small, large))
    assert welch(small, large, level=0.8)[1:] == tuple(pytest.approx(x) for x in welch_by_hand(small, large, 0.8))
    assert welch(large, small)[1] == pytest.approx(-welch(small, large)[2])   # a - b, not b - a
    assert welch([2.0, 2.0], [1.0, 1.0]) == (1.0, 1.0, 1.0)                    # no spread at all


def test_bootstrap_is_seeded_and_brackets_the_difference():
    low, high = bootstrap(A, B)
    assert (low, high) == bootstrap(A, B)
    diff = sum(A) / 8 - sum(B) / 8
    assert low < diff < high
    w = welch(A, B)
    assert abs((high - low) - (w[2] - w[1])) < 0.6 * (w[2] - w[1])    # same size as Welch's


def test_difference_resolves_only_separated_groups():
    assert difference(A, B).resolved
    assert not difference(A, [a + 0.1 for a in reversed(A)]).resolved
    assert difference(A, [70.0]) is None                              # one seed: no interval
    with pytest.raises(ValueError, match='at least 2 seeds'):
        welch([1.0], [1.0, 2.0])


def test_summarise_known_maps():
    point = torch.zeros(9, 9, dtype=torch.float64)
    point[4, 4] = 3.0
    erf = summarise(point)
    assert erf.rms_radius == 0 and erf.area50 == pytest.approx(1 / 81) and erf.map.sum() == pytest.approx(1)
    uniform = summarise(torch.ones(9, 9, dtype=torch.float64))
    # RMS distance from the centre of a uniform 9 x 9 grid: sqrt(2 * mean((i - 4)^2)).
    assert uniform.rms_radius == pytest.approx(math.sqrt(2 * sum((i - 4) ** 2 for i in range(9)) / 9))
    assert uniform.area50 == pytest.approx(41 / 81)
    with pytest.raises(ValueError, match='zero everywhere'):
        summarise(torch.zeros(3, 3))


class TwoConvs(nn.Module):
    """A k x k convolution, then (optionally) a 3 x 3 average pool: its ERF support is known."""

    def __init__(self, k, pool):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, k, padding=k // 2)
        self.mix = nn.AvgPool2d(3, 1, 1) if pool else nn.Identity()
        nn.init.uniform_(self.conv.weight, 0.5, 1.0)

    def forward(self, x):
        return self.mix(self.conv(x)).mean((2, 3))


def test_erf_support_and_pooling_widens_it():
    images = torch.rand(4, 3, 17, 17) + 0.1
    plain = effective_receptive_field(TwoConvs(3, pool=False), images, 'mix')
    support = (plain.map > 0).nonzero()
    # The centre unit (8, 8) of a 3 x 3 convolution depends on pixels 7..9 only.
    assert support.min(0).values.tolist() == [7, 7] and support.max(0).values.tolist() == [9, 9]
    pooled = effective_receptive_field(TwoConvs(3, pool=True), images, 'mix')
    assert (pooled.map > 0).sum() == 25 and pooled.rms_radius > plain.rms_radius
    with pytest.raises(ValueError, match=r'expected a \[N, C, H, W\] map'):
        effective_receptive_field(TwoConvs(3, pool=False), images, '')


def write(tmp_path, **extra):
    teacher = tmp_path / 'teacher' / 'model.safetensors'
    config = {
        'teacher': {'arch': 'poolformer_mini', 'checkpoint': str(teacher)},
        'seeds': [0, 1],
        'settings': [{'name': 'full'}, {'name': 'labels10', 'overrides': ['data.label_fraction=0.1'],
                                         'variants': ['plain']}],
        'variants': [{'name': 'plain', 'recipe': 'recipes/digits/plain.yaml'},
                     {'name': 'imitation', 'recipe': 'recipes/digits/imitation.yaml'}],
        **extra,
    }
    path = tmp_path / 'a.yaml'
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize('extra, message', [
    ({'comparisons': [{'name': 'x', 'a': 'plain', 'b': 'imitation@labels10'}]}, "unknown run 'imitation@labels10'"),
    ({'comparisons': [{'name': 'x', 'a': 'plain', 'b': 'imitation', 'metric': 'loss'}]}, "metric 'loss'"),
    ({'comparisons': [{'name': 'x', 'a': 'plain', 'b': 'imitation', 'metric': 'erf_rms_radius'}]}, 'needs an erf section'),
    ({'erf': {'show': ['nope']}}, "erf.show: unknown run(s) ['nope']"),
    ({'erf': {'images': 0}}, 'erf.images must be at least 1'),
])
def test_comparison_and_erf_config_errors(tmp_path, extra, message):
    with pytest.raises(AblateError) as e:
        load_ablation_config(write(tmp_path, **extra))
    assert message in str(e.value)


def test_teacher_recipe_must_name_the_trainers_output(tmp_path):
    path = write(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw['teacher'].update(recipe='recipes/digits/teacher.yaml', checkpoint=str(tmp_path / 'teacher.pt'))
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(AblateError, match='must end in model.safetensors'):
        load_ablation_config(path)
    raw['teacher'].update(recipe='recipes/nope.yaml')
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(AblateError, match='no such recipe'):
        load_ablation_config(path)


def fake_results(runs, top1, erf_radius):
    for run in runs:
        m = torch.rand(8, 8, generator=torch.Generator().manual_seed(run.seed)).double()
        m /= m.sum()
        run.result = {'status': 'trained', 'eval': 'deploy', 'top1': top1[run.name][run.seed], 'agreement': 90.0,
                      'teacher_top1': 95.0, 'blocks': ['b'], 'cka': {'b': 0.9}, 'nmse': {'b': 0.1}, 'train_s': 10.0,
                      'curve': [(1, 50.0 + run.seed), (2, 60.0 + run.seed)], 'erf_rms_radius': erf_radius[run.name],
                      'erf_area50': 0.1, 'erf_map': m.tolist(), 'teacher_erf_rms_radius': 3.0,
                      'teacher_erf_area50': 0.2, 'teacher_erf_map': m.tolist()}


def test_report_writes_comparisons_with_intervals(tmp_path):
    config = load_ablation_config(write(tmp_path, seeds=[0, 1, 2], erf={'show': ['imitation']}, comparisons=[
        {'name': 'imitation_vs_plain', 'a': 'imitation', 'b': 'plain', 'question': 'does it help?'},
        {'name': 'labels', 'a': 'plain', 'b': 'plain@labels10'},
    ]))
    runs = plan(config, tmp_path / 'out', config.seeds, None, [], False)
    top1 = {'plain': [60.0, 61.0, 62.0], 'imitation': [70.0, 71.0, 72.5], 'plain@labels10': [60.5, 62.0, 61.0]}
    fake_results(runs, top1, {'plain': 2.0, 'imitation': 2.5, 'plain@labels10': 2.0})
    (tmp_path / 'out').mkdir()
    report(tmp_path / 'out', runs, config, 'python tools/ablate.py')
    md = (tmp_path / 'out' / 'ablation.md').read_text()
    row = next(line for line in md.splitlines() if line.startswith('| imitation_vs_plain |'))
    cells = [c.strip() for c in row.strip('|').split('|')]
    ref = scipy_stats.ttest_ind(top1['imitation'], top1['plain'], equal_var=False).confidence_interval()
    assert cells[6] == f'{sum(top1["imitation"]) / 3 - 61.0:+.2f}'
    assert cells[7] == f'[{ref.low:+.2f}, {ref.high:+.2f}]' and cells[9] == 'yes'
    assert next(line for line in md.splitlines() if line.startswith('| labels |')).endswith('| no |')
    assert '- imitation_vs_plain: does it help?' in md
    assert '| imitation | 3 | 2.50 ± 0.00 |' in md            # ERF table
    for name in ('ablation.png', 'comparisons.png', 'erf.png'):
        assert (tmp_path / 'out' / name).read_bytes()[:4] == b'\x89PNG'
    assert (tmp_path / 'out' / 'comparisons.csv').read_text().count('\n') == 3
    # Bands over seeds: the curve's spread per epoch.
    plain = next(r for r in aggregate(runs) if r['name'] == 'plain')
    assert plain['curve'] == [(1, 51.0), (2, 61.0)] and plain['curve_std'] == [(1, 1.0), (2, 1.0)]


@pytest.mark.parametrize('arch', ['riformer_mini', 'poolformer_mini'])
def test_student_layer_scale_init(arch):
    import models
    scales = lambda m: torch.cat([p.flatten() for n, p in m.named_parameters() if 'layer_scale' in n])
    assert torch.all(scales(models.create_student(arch, 10, layer_scale_init=0.5)) == 0.5)
    assert torch.allclose(scales(models.create_student(arch, 10)), torch.tensor(1e-5))


def test_train_teacher_from_its_recipe(tmp_path):
    """A missing teacher is trained from `teacher.recipe` into the checkpoint's folder; a bad
    recipe comes back as the trainer's error line; an existing checkpoint is left alone."""
    from distill.ablation import AblationTeacher, train_teacher
    raw = yaml.safe_load(Path('recipes/digits/teacher.yaml').read_text())
    raw['train']['epochs'] = 1
    recipe = tmp_path / 'teacher.yaml'
    recipe.write_text(yaml.safe_dump(raw))
    checkpoint = tmp_path / 'teacher' / 'model.safetensors'
    said = []
    teacher = AblationTeacher('poolformer_mini', str(checkpoint), str(recipe))
    assert train_teacher(teacher, 1, say=lambda *a, **k: said.append(a[0])) is None
    assert checkpoint.is_file() and said[-1].startswith(f'teacher: {checkpoint} trained in')
    assert train_teacher(teacher, 1, say=lambda *a, **k: said.append(a[0])) is None and len(said) == 2
    raw['train']['epochz'] = 1
    recipe.write_text(yaml.safe_dump(raw))
    bad = AblationTeacher('poolformer_mini', str(tmp_path / 'other' / 'model.safetensors'), str(recipe))
    assert "unknown recipe key 'train.epochz'" in train_teacher(bad, 1, say=lambda *a, **k: None)


# Teachers as the unit of replication: three teachers whose students differ a lot between
# teachers (the teacher lottery) while each teacher's a - b is about +1.
TEACHER_A = {0: [90.0, 91.0, 92.0], 1: [80.0, 81.0, 79.5], 2: [86.0, 85.0, 86.5]}
TEACHER_B = {0: [89.0, 90.2, 90.8], 1: [79.0, 79.6, 78.9], 2: [85.0, 84.4, 85.1]}


def test_two_level_pairs_teachers_and_separates_their_spread():
    d = two_level(TEACHER_A, TEACHER_B)
    per_teacher = [sum(TEACHER_A[t]) / 3 - sum(TEACHER_B[t]) / 3 for t in (0, 1, 2)]
    assert d.diff == pytest.approx(sum(per_teacher) / 3) and d.teachers == 3 and (d.n_a, d.n_b) == (9, 9)
    assert d.between_sd == pytest.approx(statistics.stdev(per_teacher))
    assert d.resolved and d.low < d.diff < d.high
    assert d == two_level(TEACHER_A, TEACHER_B)                       # seeded
    # Unpaired, the 10-point lottery between teachers swamps the +1: the interval spans 0.
    unpaired = two_level(TEACHER_A, {t + 10: v for t, v in TEACHER_B.items()})
    assert unpaired.teachers == 0 and not unpaired.resolved and unpaired.high - unpaired.low > 5
    # A difference whose sign changes with the teacher is not resolved, however tight the students.
    flipped = {0: [v + 2 for v in TEACHER_B[0]], 1: [v - 2 for v in TEACHER_B[1]], 2: TEACHER_B[2]}
    assert not two_level(flipped, TEACHER_B).resolved
    between, within = teacher_spread(TEACHER_A)
    assert between == pytest.approx(scipy_stats.tstd([sum(v) / 3 for v in TEACHER_A.values()]))
    assert within == pytest.approx(math.sqrt(sum(scipy_stats.tvar(v) * 2 for v in TEACHER_A.values()) / 6))
    assert two_level({0: [1.0]}, TEACHER_B) is None                   # one run: no interval


def test_teacher_seeds_plan_each_student_under_each_teacher(tmp_path):
    pattern = str(tmp_path / 'teachers' / 'seed_{seed}' / 'model.safetensors')
    config = load_ablation_config(write(tmp_path, teacher={'arch': 'poolformer_mini', 'checkpoint': pattern,
                                                           'seeds': [3, 4]}, settings=[]))
    runs = plan(config, tmp_path / 'out', [0, 1], None, [], False)
    imitation = [r for r in runs if r.variant == 'imitation']
    assert sorted((r.teacher_seed, r.seed) for r in imitation) == [(3, 0), (3, 1), (4, 0), (4, 1)]
    for r in imitation:
        assert r.recipe.teacher.checkpoint == pattern.replace('{seed}', str(r.teacher_seed))
        assert r.dir == tmp_path / 'out' / 'runs' / 'imitation' / f'teacher_{r.teacher_seed}' / f'seed_{r.seed}'
    plain = [r for r in runs if r.variant == 'plain']       # no teacher: once per seed
    assert [(r.teacher_seed, r.seed) for r in plain] == [(None, 0), (None, 1)]
    # The report groups by teacher and compares with the two-level interval.
    for r in runs:
        r.result = {'status': 'trained', 'eval': 'deploy', 'agreement': 90.0, 'teacher_top1': 95.0 + (r.teacher_seed or 0),
                    'blocks': [], 'cka': {}, 'nmse': {}, 'train_s': 1.0, 'curve': [],
                    'top1': 80.0 + r.seed + (10.0 * (r.teacher_seed == 4) if r.variant == 'imitation' else 0)}
    config.comparisons = [Comparison(name='im_vs_plain', a='imitation', b='plain')]
    compared = compare_runs(runs, config.comparisons)
    assert compared[0]['difference'].diff == pytest.approx(5.0) and compared[0]['difference'].teachers == 0
    md = markdown(aggregate(runs), config, runs, 'cmd', compared)
    assert '| imitation | 80.50 | 90.50 | 7.07 | 0.71 |' in md and 'two-level bootstrap' in md


@pytest.mark.parametrize('teacher, message', [
    ({'checkpoint': 'runs/t/model.safetensors', 'seeds': [0, 1]}, 'must hold {seed}'),
    ({'checkpoint': 'runs/t{seed}/model.safetensors'}, 'teacher.seeds is missing'),
    ({'checkpoint': 'runs/t{seed}/model.safetensors', 'seeds': [1, 1]}, 'distinct non-negative'),
])
def test_teacher_seed_config_errors(tmp_path, teacher, message):
    with pytest.raises(AblateError, match=message):
        load_ablation_config(write(tmp_path, teacher={'arch': 'poolformer_mini', **teacher}))


def test_teacher_table_reads_runs_against_the_declared_numbers(tmp_path):
    """The table from finished runs' summary.json: a stable arm meets all three numbers; an arm
    whose seeds scatter, whose threads disagree and that still climbs fails each of them."""
    from distill.ablation.teachers import load_config, plan, table
    config_path = tmp_path / 'teachers.yaml'
    config_path.write_text(yaml.safe_dump({
        'output_dir': str(tmp_path / 'out'), 'threads': 2,
        'acceptance': {'seed_sd': 1.0, 'thread_gap': 1.0, 'last_gain': 0.5, 'last_epochs': 3},
        'arms': [{'name': 'stable', 'recipe': 'recipes/clutter/teacher.yaml', 'seeds': [0, 1, 2], 'thread_seeds': [0]},
                 {'name': 'lottery', 'recipe': 'recipes/clutter/teacher.yaml', 'seeds': [0, 1, 2], 'thread_seeds': [0]}],
        'comparisons': [{'name': 'premise', 'a': 'stable', 'b': 'lottery'}]}))
    config = load_config(config_path)
    runs = plan(config)
    curves = {('stable', 1): [[80, 90, 93.2, 93.4, 93.5, 93.6], [80, 91, 93.6, 93.8, 94.0, 94.0], [79, 90, 92.9, 93.0, 93.1, 93.0]],
              ('stable', 2): [[80, 90, 93, 93.4, 93.6, 93.9]],
              ('lottery', 1): [[60, 70, 75, 80, 84, 88], [70, 80, 85, 88, 90, 92.6], [50, 60, 70, 80, 82, 84.1]],
              ('lottery', 2): [[60, 70, 75, 80, 88, 91.5]]}
    for run in runs:
        curve = curves[(run.arm.name, run.threads)][run.arm.thread_seeds.index(run.seed) if run.threads == 2 else run.seed]
        run.dir.mkdir(parents=True)
        # the stable arm's runs keep a weight average: their raw weights' top-1 trails it by 1 + epoch / 10
        raw = {'val/raw_top1': 0.} if run.arm.name == 'stable' else {}
        (run.dir / 'summary.json').write_text(json.dumps({
            'history': [{'epoch': e + 1, 'val/top1': v, **{k: v - 1 - e / 10 for k in raw}} for e, v in enumerate(curve)],
            'train_seconds': 60.0}))
    text = table(config, runs)
    averaged = [line for line in text.splitlines() if line.count('|') == 9 and line.startswith('| ')
                and '/' not in line and 'arm' not in line]      # not the arms' summary rows (3/3), nor headers
    assert len(averaged) == 4 and all(line.startswith('| stable | ') for line in averaged)
    # seed 0: final 93.6, raw 93.6 - 1.5 = 92.1; gains +0.40 (average) and +0.10 (raw: 92.1 - 92.0)
    assert averaged[0] == '| stable | 0 | 1 | 93.60 | 92.10 | +1.50 | +0.40 | +0.10 |'
    stable = next(line for line in text.splitlines() if line.startswith('| stable | 3/3 |'))
    assert stable.endswith('| 0.30 | +0.40 | meets all 3 |')
    lottery = next(line for line in text.splitlines() if line.startswith('| lottery | 3/3 |'))
    assert lottery.endswith('fails or incomplete: seed s.d., last gain, threads |')
    assert f'| {statistics.stdev([93.6, 94.0, 93.0]):.2f} |' in stable
    assert '| premise | +' in text
    bad = yaml.safe_load(config_path.read_text())
    bad['arms'][0]['thread_seeds'] = [7]
    config_path.write_text(yaml.safe_dump(bad))
    with pytest.raises(AblateError, match=r'thread_seeds \[7\] are not among its seeds'):
        load_config(config_path)
