"""The loss balance (distill/balance.py): shares on cases whose answer is known, the warning,
the per-term reductions, the split seed, and that measuring changes nothing about training."""
import json
from pathlib import Path

import pytest
from helpers import FAST_TRAIN
import torch
import torch.nn as nn
from safetensors.torch import load_file

from distill import balance
from distill import train as train_mod
from distill.config import DistillConfig, FeatureTermConfig, RecipeError, SoftTermConfig, load_recipe
from distill.data import build_datasets
from distill.losses import FeatureMSE, RelationMSE
from distill.terms import TERMS, LossContext

ROOT = Path(__file__).resolve().parents[1]
FAST = FAST_TRAIN


pytestmark = pytest.mark.usefixtures('fresh_accelerate_state')   # conftest.py


class Student(nn.Module):
    pretrained_cfg = {'classifier': 'head'}

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6, bias=False)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        self.features = self.body(x)
        return self.head(self.features)


class ConstructedCriterion:
    """Two feature terms on the same student features whose targets are chosen so that the
    second term's difference is `ratio` times the first's: the gradients are parallel, with
    norms in the ratio weight x factor x difference."""

    def __init__(self, cfg, global_batch, ratio):
        self.cfg, self.ratio = cfg, ratio
        self.context = LossContext(0.0, global_batch, cfg.feature_reduction)
        self.losses = {n: TERMS[n].build(getattr(cfg, n), self.context) for n in ('l_in_hidden', 'l_out')}
        self.target = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))

    def term_inputs(self, images, logits, targets, epoch):
        f = self.student.features
        d = (f - self.target).detach()
        return {'l_in_hidden': ([f], [f.detach() - d]), 'l_out': ([f], [f.detach() - self.ratio * d])}

    def clear_records(self):
        pass


def constructed(weight_in=1.0, weight_out=1.0, global_batch=4, ratio=4.0):
    cfg = DistillConfig(l_in_hidden=FeatureTermConfig(weight=weight_in, reduction='batch_sum'),
                        l_out=FeatureTermConfig(weight=weight_out, reduction='mean'))
    torch.manual_seed(0)
    student = Student()
    criterion = ConstructedCriterion(cfg, global_batch, ratio)
    criterion.student = student
    return student, criterion, torch.randn(8, 4), torch.zeros(8, dtype=torch.long)


def test_known_shares():
    """L'_in x4 (batch_sum, global batch 4) against L_out with 4x the difference (mean): equal
    gradients (4 x d and 1 x 4d) and losses 4 d^2 : 16 d^2."""
    student, criterion, x, y = constructed()
    rows = {r.term: r for r in balance.measure(student, criterion, x, y, 0)}
    assert rows['l_in_hidden'].grad_share == pytest.approx(0.5, abs=1e-6)
    assert rows['l_out'].grad_share == pytest.approx(0.5, abs=1e-6)
    assert rows['l_in_hidden'].loss_share == pytest.approx(0.2, abs=1e-6)
    assert rows['l_out'].loss_share == pytest.approx(0.8, abs=1e-6)
    assert rows['l_in_hidden'].factor == pytest.approx(4) and rows['l_in_hidden'].reading == 'batch_sum x4'
    assert rows['l_out'].factor == pytest.approx(1) and rows['l_out'].reading == 'mean'
    assert rows['l_out'].raw == pytest.approx(16 * rows['l_in_hidden'].raw, rel=1e-5)
    assert balance.warnings(list(rows.values()), 4, 0) == []
    assert all(p.grad is None for p in student.parameters()), 'measuring writes no .grad'


def test_dominant_and_negligible_terms_are_warned_with_their_keys():
    student, criterion, x, y = constructed(weight_in=1.0, weight_out=1e-3)
    rows = balance.measure(student, criterion, x, y, 0)
    shares = {r.term: r.grad_share for r in rows}
    # norms 4 : 4e-3, so shares 1/1.001 and 1e-3/1.001
    assert shares['l_in_hidden'] == pytest.approx(1 / 1.001, rel=1e-5)
    lines = balance.warnings(rows, 4, 2)
    assert len(lines) == 2
    over = next(line for line in lines if line.startswith('warning: l_in_hidden'))
    under = next(line for line in lines if line.startswith('warning: l_out'))
    assert 'over 95 %' in over and 'epoch 3' in over and 'distill.l_in_hidden.weight=1' in over
    assert 'distill.feature_reduction' in over and 'batch_sum x4' in over and 'global batch 4' in over
    assert 'under 1 %' in under and 'distill.l_out.weight=0.001' in under


def test_the_soft_term_reading_names_the_classes():
    logits = torch.randn(4, 10)
    teacher = torch.randn(4, 10)
    soft = TERMS['soft'].build(SoftTermConfig(weight=1.0, normalize='numel'), LossContext())
    raw = TERMS['soft'].build(SoftTermConfig(weight=1.0, normalize='batchmean'), LossContext())
    assert float(soft(logits, teacher)) == pytest.approx(float(raw(logits, teacher)) / 10, rel=1e-6)


def test_epochs_to_measure_follow_the_windows():
    cfg = load_recipe(ROOT / 'recipes' / 'riformer_s12.yaml').distill

    class C:
        def active_terms(self, epoch):
            return [t for t in TERMS if getattr(cfg, t).active(epoch)]
    assert balance.epochs_to_measure(C(), 0, 600) == [0, 100, 400]
    assert balance.epochs_to_measure(C(), 250, 600) == [250, 400]      # a resumed session
    assert balance.epochs_to_measure(C(), 600, 600) == []


# --- per-term reductions ------------------------------------------------------------------------

def test_sample_sum_is_the_squared_frobenius_norm_per_sample():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 8, 5, 5, generator=g), torch.randn(3, 8, 5, 5, generator=g)
    frob = ((s - t) ** 2).flatten(1).sum(1).mean()
    assert float(FeatureMSE(per_sample=True)([s], [t])) == pytest.approx(float(frob), rel=1e-5)
    assert float(FeatureMSE(scale=7.0)([s], [t])) == pytest.approx(7 * float(((s - t) ** 2).mean()), rel=1e-5)
    for c, hw in ((8, 5), (32, 4)):       # the Gram path (HW > C) and the explicit matrices (HW <= C)
        s, t = torch.randn(2, c, hw, hw, generator=g), torch.randn(2, c, hw, hw, generator=g)
        rs = nn.functional.normalize(s.flatten(2), dim=1)
        rt = nn.functional.normalize(t.flatten(2), dim=1)
        diff = rs.transpose(1, 2) @ rs - rt.transpose(1, 2) @ rt
        expect = (diff ** 2).flatten(1).sum(1).mean()
        assert float(RelationMSE(per_sample=True)([s], [t])) == pytest.approx(float(expect), rel=1e-4)


def test_per_term_reduction_overrides_the_section_default(tmp_path):
    recipe = load_recipe(ROOT / 'recipes' / 'clutter' / 'imitation.yaml',
                         ['distill.l_rel.reduction=mean', 'distill.l_out.reduction=sample_sum'])
    d = recipe.distill
    context = LossContext(0.0, 64, d.feature_reduction)
    built = {n: TERMS[n].build(getattr(d, n), context) for n in ('l_in_hidden', 'l_out', 'l_rel')}
    assert (built['l_in_hidden'].scale, built['l_in_hidden'].per_sample) == (64.0, False)   # batch_sum default
    assert (built['l_out'].scale, built['l_out'].per_sample) == (1.0, True)
    assert (built['l_rel'].scale, built['l_rel'].per_sample) == (1.0, False)
    with pytest.raises(RecipeError, match='distill.l_rel.reduction .*frobenius.*use mean \\| batch_sum \\| sample_sum'):
        load_recipe(ROOT / 'recipes' / 'clutter' / 'imitation.yaml', ['distill.l_rel.reduction=frobenius'])


def test_split_seed_draws_another_task():
    base = load_recipe(ROOT / 'recipes' / 'clutter' / 'imitation.yaml',
                       ['data.clutter.train_images=20', 'data.clutter.val_images=20']).data
    _, val0, _ = build_datasets(base, 0)
    base.split_seed = 1
    train1, val1, _ = build_datasets(base, 0)
    pool0, pool1 = set(val0.pool.tolist()), set(val1.pool.tolist())
    assert pool0 != pool1 and not pool1 & set(train1.pool.tolist())
    assert not torch.equal(torch.as_tensor(val0.draw(0)[0]), torch.as_tensor(val1.draw(0)[0]))


# --- in the trainer -----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def teacher_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp('teacher')
    assert train_mod.main([str(ROOT / 'recipes/digits/teacher.yaml'), *FAST, 'train.epochs=1',
                           f'train.output_dir={out}']) == 0
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    return out / 'model.safetensors'


def test_measuring_changes_nothing_and_is_reported(teacher_ckpt, tmp_path, capsys):
    """Two epochs with a window closing after the first: the balance is measured at both, shown,
    logged to TensorBoard and summary.json, and the trained weights are bitwise those of a run
    that does not measure (mixup on, so the batch's and mixup's random numbers are restored)."""
    common = [str(ROOT / 'recipes/digits/imitation.yaml'), *FAST, 'train.epochs=2', f'teacher.checkpoint={teacher_ckpt}',
              'distill.l_rel.end=1', 'data.mixup=0.8', 'student.drop_path=0.1']
    assert train_mod.main([*common, f'train.output_dir={tmp_path / "on"}']) == 0
    out = capsys.readouterr().out
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    assert train_mod.main([*common, 'train.loss_balance=false', f'train.output_dir={tmp_path / "off"}']) == 0
    a, b = load_file(tmp_path / 'on' / 'model.safetensors'), load_file(tmp_path / 'off' / 'model.safetensors')
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert 'loss balance at epoch 1' in out and 'loss balance at epoch 2' in out
    summary = json.loads((tmp_path / 'on' / 'summary.json').read_text())
    assert [m['epoch'] for m in summary['balance']] == [1, 2]
    first = {r['term']: r for r in summary['balance'][0]['terms']}
    assert 'l_rel' in first and 'l_rel' not in {r['term'] for r in summary['balance'][1]['terms']}
    assert sum(r['grad_share'] for r in first.values()) == pytest.approx(1, abs=1e-4)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = set()
    for events in (tmp_path / 'on' / 'tb').rglob('events.out.tfevents.*'):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()['scalars'])
    assert {'balance/grad_share/l_rel', 'balance/loss_share/soft'} <= tags


def test_check_prints_the_table_for_every_window(teacher_ckpt, tmp_path, capsys):
    code = train_mod.main([str(ROOT / 'recipes/digits/imitation.yaml'), *FAST, f'teacher.checkpoint={teacher_ckpt}',
                           f'train.output_dir={tmp_path / "x"}', '--check'])
    out = capsys.readouterr().out
    assert code == 0 and 'inputs ok' in out
    recipe = load_recipe(ROOT / 'recipes/digits/imitation.yaml')
    windows = sorted({getattr(recipe.distill, n).end for n in ('l_in_hidden', 'l_rel')} - {None})
    for epoch in [1] + [e + 1 for e in windows if e < recipe.train.epochs]:
        assert f'loss balance at epoch {epoch} ' in out
    assert not (tmp_path / 'x').exists()


# --- the proxy at a recipe's own shapes ---------------------------------------------------------

def test_proxy_prints_every_window_and_states_the_proxy(capsys):
    from distill.cli import balance as cli
    assert cli.main([str(ROOT / 'recipes/clutter/imitation.yaml'), '--processes', '2']) == 0
    out = capsys.readouterr().out
    assert out.startswith('proxy: riformer_mini student') and 'random non-trivial weights' in out
    assert 'global batch 128' in out and 'batch_sum x128' in out
    for window in ('epochs 1-1', 'epochs 2-3', 'epochs 4-4'):
        assert f'loss balance, {window}' in out
    first = out.split('loss balance, epochs 1-1')[1].split('loss balance')[0]
    shares = [float(line.split()[-1]) for line in first.strip().splitlines()[1:]]
    assert len(shares) == 4 and sum(shares) == pytest.approx(100, abs=0.05)


def test_proxy_readings_table(capsys):
    from distill.cli import balance as cli
    assert cli.main([str(ROOT / 'recipes/clutter/imitation.yaml'), '--readings']) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert {r[0] for r in rows} == set(balance.READINGS)
    # batchmean_mean against shipped: the soft term is 10 x 64 / 1 larger relative to the features,
    # so its share at the first window must be larger
    share = {r[0]: float(r[2]) for r in rows if r[1] == '1-1'}
    assert share['batchmean_mean'] > share['mean'] > share['shipped']


def test_proxy_rejects_a_recipe_without_teacher(capsys):
    from distill.cli import balance as cli
    assert cli.main([str(ROOT / 'recipes/clutter/ce.yaml')]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# --- the study's declared rule ------------------------------------------------------------------

def _top1(**means):
    """8 seeds around each variant's mean (spread 0.2)."""
    offsets = [-0.3, -0.2, -0.1, 0.0, 0.0, 0.1, 0.2, 0.3]
    return {name: [m + o for o in offsets] for name, m in means.items()}


BASE = dict(soft_kd_numel=80, soft_kd_batchmean=80, feature_shipped=81, feature_mean=81, feature_sample_sum=81)
SHARES = {'shipped': [0.99, 0.01], 'mean': [0.5, 0.5], 'mixed': [0.3, 0.7], 'sample_sum': [0.999, 0.001]}


def test_rule_picks_the_best_qualifying_reading():
    from distill.ablation.reading import decide
    d = decide(_top1(**BASE, imitation_shipped=79, imitation_mean=85, imitation_mixed=83, imitation_sample_sum=86),
               SHARES)
    # shipped loses to its feature student; the others beat both of theirs; sample_sum is best
    assert d['qualifying'] == ['mean', 'mixed', 'sample_sum'] and d['chosen'] == 'sample_sum'


def test_rule_breaks_an_unresolved_tie_by_the_balance():
    from distill.ablation.reading import decide
    d = decide(_top1(**BASE, imitation_shipped=79, imitation_mean=85.05, imitation_mixed=85, imitation_sample_sum=70),
               SHARES)
    assert not d['runner_up_difference'].resolved
    assert d['ranked'][:2] == ['mean', 'mixed'] and d['chosen'] == 'mean'        # both balanced: smaller largest share
    shares = {**SHARES, 'mean': [0.98, 0.02]}
    assert decide(_top1(**BASE, imitation_shipped=79, imitation_mean=85.05, imitation_mixed=85,
                        imitation_sample_sum=70), shares)['chosen'] == 'mixed'   # only mixed keeps 1-95 %


def test_rule_falls_back_to_every_reading_when_none_qualifies():
    from distill.ablation.reading import decide, report
    d = decide(_top1(**BASE, imitation_shipped=70, imitation_mean=75, imitation_mixed=79, imitation_sample_sum=60),
               SHARES)
    assert d['qualifying'] == [] and d['chosen'] == 'mixed'
    assert 'none (the rule falls back to all readings)' in report(d)
