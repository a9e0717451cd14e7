"""The declared decision rule applied by the report (distill/ablation/decision.py): the
recommendation, its confidence against every other candidate, and the confirmation draw read
against the study's decision.json."""
import json
import statistics

import pytest
import yaml

from distill.ablation import load_ablation_config, plan, report
from distill.ablation.config import AblateError
from distill.ablation.stats import two_level

TEACHERS = [0, 1, 2]
SEEDS = [0, 1, 2]


def write_study(tmp_path, name='study', **extra):
    """Three teacher-dependent variants (all from the imitation recipe), 3 teachers x 3 seeds."""
    config = {
        'output_dir': str(tmp_path / name),
        'teacher': {'arch': 'poolformer_mini', 'checkpoint': str(tmp_path / 't{seed}' / 'model.safetensors'),
                    'seeds': TEACHERS},
        'seeds': SEEDS,
        'variants': [{'name': n, 'recipe': 'recipes/digits/imitation.yaml', 'overrides': [f'optim.lr={lr}']}
                     for n, lr in (('imitation', 1e-3), ('soft_kd', 2e-3), ('feature', 3e-3))],
        'comparisons': [{'name': 'imitation_vs_feature', 'a': 'imitation', 'b': 'feature'},
                        {'name': 'imitation_vs_soft_kd', 'a': 'imitation', 'b': 'soft_kd'}],
        'decision': {'candidates': ['imitation', 'soft_kd', 'feature']},
        **extra,
    }
    path = tmp_path / f'{name}.yaml'
    path.write_text(yaml.safe_dump(config))
    return load_ablation_config(path)


def top1_of(variant, teacher, seed, levels):
    """A level per variant, a teacher effect shared by all variants, student scatter of +-0.3."""
    return levels[variant] + 0.8 * teacher + 0.3 * (seed - 1) * (-1) ** teacher


def run_report(config, out, levels):
    runs = plan(config, out, config.seeds, None, [], False)
    for run in runs:
        run.result = {'status': 'trained', 'eval': 'deploy', 'agreement': 90.0, 'teacher_top1': 96.0,
                      'blocks': [], 'cka': {}, 'nmse': {}, 'train_s': 1.0, 'curve': [],
                      'top1': top1_of(run.variant, run.teacher_seed, run.seed, levels)}
    out.mkdir(parents=True, exist_ok=True)
    report(out, runs, config, 'cmd')
    return runs, json.loads((out / 'decision.json').read_text()), (out / 'ablation.md').read_text()


def test_recommendation_and_its_confidence(tmp_path):
    config = write_study(tmp_path)
    levels = {'imitation': 92.0, 'soft_kd': 91.9, 'feature': 88.0}
    runs, decision, md = run_report(config, tmp_path / 'study', levels)
    assert decision['recommendation'] == 'imitation'
    want = statistics.fmean(statistics.fmean(top1_of('imitation', t, s, levels) for s in SEEDS) for t in TEACHERS)
    assert decision['means']['imitation'] == pytest.approx(want)
    # The interval against each other candidate is the comparisons' two-level interval.
    groups = {v: {t: [top1_of(v, t, s, levels) for s in SEEDS] for t in TEACHERS} for v in levels}
    against = {a['candidate']: a for a in decision['against']}
    ref = two_level(groups['imitation'], groups['soft_kd'])
    assert (against['soft_kd']['low'], against['soft_kd']['high']) == pytest.approx((ref.low, ref.high))
    assert against['soft_kd']['low'] < 0 < against['feature']['low']       # 0.1 apart is not resolved
    assert decision['with_confidence'] is False and '**recommendation: imitation, not with confidence**' in md
    assert decision['answers'] == {'imitation_vs_feature': 'a better', 'imitation_vs_soft_kd': 'no difference shown'}

    levels['soft_kd'] = 90.0
    _, decision, md = run_report(config, tmp_path / 'study2', levels)
    assert decision['with_confidence'] is True and '**recommendation: imitation, with confidence**' in md

    levels['feature'] = 93.0                                               # another candidate leads
    _, decision, _ = run_report(config, tmp_path / 'study3', levels)
    assert decision['recommendation'] == 'feature'


def test_confirmation_reads_the_study_decision(tmp_path):
    levels = {'imitation': 92.0, 'soft_kd': 90.0, 'feature': 88.0}
    study = write_study(tmp_path)
    confirm = write_study(tmp_path, name='confirm', decision={'candidates': ['imitation', 'soft_kd', 'feature'],
                                                               'confirms': str(tmp_path / 'study')})
    # Before the study has a decision: said so, not guessed.
    _, decision, md = run_report(confirm, tmp_path / 'confirm', levels)
    assert decision['confirmation']['checked'] is False and 'not checked' in md and 'run the study first' in md

    (tmp_path / 'study').mkdir()
    (tmp_path / 'study' / 'decision.json').write_text('[1, 2]')           # not the report's: not read as one
    _, decision, md = run_report(confirm, tmp_path / 'confirm', levels)
    assert decision['confirmation']['checked'] is False and 'not a decision the report wrote' in md

    run_report(study, tmp_path / 'study', levels)
    _, decision, md = run_report(confirm, tmp_path / 'confirm', {**levels, 'imitation': 92.5})
    assert decision['confirmation']['confirmed'] is True and '**confirmed** against' in md

    # imitation vs soft KD answered "a better" in the study; a draw where it is not answered fails it.
    _, decision, md = run_report(confirm, tmp_path / 'confirm', {**levels, 'soft_kd': 91.9})
    assert decision['confirmation']['confirmed'] is False
    assert decision['confirmation']['differ'] == ['imitation_vs_soft_kd: a better there, no difference shown here']
    assert '**not confirmed**' in md

    # Another recommendation fails it even when the answered comparisons agree.
    _, decision, _ = run_report(confirm, tmp_path / 'confirm', {'imitation': 92.0, 'soft_kd': 90.0, 'feature': 93.0})
    assert any(d.startswith('recommendation: imitation there, feature here') for d in decision['confirmation']['differ'])


@pytest.mark.parametrize('decision, message', [
    ({'candidates': ['imitation']}, 'at least 2 distinct run names'),
    ({'candidates': ['imitation', 'imitation']}, 'at least 2 distinct run names'),
    ({'candidates': ['imitation', 'nope']}, "unknown run(s) ['nope']"),
    ({'candidates': ['imitation', 'feature'], 'metric': 'erf_rms_radius'}, 'use top1 or agreement'),
    ({'candidates': ['imitation', 'feature'], 'when': 1}, 'when'),
])
def test_decision_config_errors(tmp_path, decision, message):
    with pytest.raises(AblateError) as e:
        write_study(tmp_path, decision=decision)
    assert message in str(e.value) and '\n' not in str(e.value)
