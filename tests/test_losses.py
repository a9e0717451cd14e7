"""Loss terms against values computed by hand, and recorders."""
import math

import pytest
import timm
import torch

import models  # noqa: F401  (registers riformer_mini / poolformer_mini)
from distill.config import RecipeError
from distill.losses import FeatureMSE, HardTargetKD, LabelCE, RelationMSE, SoftTargetKD, relation_matrix
from distill.recorders import FeatureRecorder, check_pairs, default_imitated_blocks


def softmax(row, T=1.):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize('T', [1.0, 4.0])
def test_soft_kd_is_batchmean_kl_times_t_squared(T):
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    expected = 0.
    for srow, trow in zip(s, t):
        ps, pt = softmax(srow, T), softmax(trow, T)
        expected += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))
    expected = expected / len(s) * T * T
    got = SoftTargetKD(T)(torch.tensor(s), torch.tensor(t))
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize('T', [1.0, 3.0])
def test_soft_kd_numel_is_deits_normalisation(T):
    """DeiT: sum of KL(teacher_T || student_T) * T^2 / (N x classes), a class count smaller than batchmean."""
    s = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 0.2]]
    t = [[2.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, -2.0]]
    total = 0.
    for srow, trow in zip(s, t):
        ps, pt = softmax(srow, T), softmax(trow, T)
        total += sum(b * (math.log(b) - math.log(a)) for a, b in zip(ps, pt))     # KL(teacher || student)
    got = SoftTargetKD(T, normalize='numel')(torch.tensor(s), torch.tensor(t))
    assert got.item() == pytest.approx(total * T * T / (2 * 4), rel=1e-5)
    batchmean = SoftTargetKD(T)(torch.tensor(s), torch.tensor(t))
    assert batchmean.item() == pytest.approx(4 * got.item(), rel=1e-5)


@pytest.mark.parametrize('normalize', ['batchmean', 'numel'])
def test_criterion_soft_term_follows_the_recipes_normalize(normalize):
    """distill.soft.normalize reaches the trainer's criterion (the paper recipes set numel)."""
    from distill.config import DistillConfig, SoftTermConfig
    from distill.criterion import DistillationCriterion
    torch.manual_seed(0)
    student, teacher = timm.create_model('riformer_mini').eval(), timm.create_model('poolformer_mini').eval()
    cfg = DistillConfig(soft=SoftTermConfig(weight=1.0, temperature=2.0, normalize=normalize))
    criterion = DistillationCriterion(cfg, student, teacher, None, default_imitated_blocks(student))
    x = torch.randn(2, 3, 32, 32)
    logits = student(x)
    _, terms = criterion(x, logits, torch.zeros(2, dtype=torch.long), epoch=0)
    with torch.no_grad():
        expected = SoftTargetKD(2.0, normalize)(logits, teacher(x))
    assert terms['soft'].item() == pytest.approx(expected.item(), rel=1e-5)
    criterion.remove_hooks()


def test_hard_kd_is_ce_to_teacher_argmax():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.0, 0.0, 9.0]])
    expected = -math.log(softmax([1.0, 2.0, 0.5])[2])
    assert HardTargetKD()(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_label_ce_skips_unlabelled_and_takes_soft_targets():
    logits = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.5, 0.5]])
    targets = torch.tensor([1, -1, 0])
    expected = (-math.log(softmax([1.0, 2.0])[1]) - math.log(softmax([0.5, 0.5])[0])) / 2
    assert LabelCE()(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    assert LabelCE()(logits, torch.tensor([-1, -1, -1])).item() == 0.0
    soft = torch.tensor([[0.25, 0.75], [1.0, 0.0], [0.5, 0.5]])
    expected_soft = sum(-sum(p * math.log(q) for p, q in zip(prow, softmax(lrow)))
                        for prow, lrow in zip(soft.tolist(), logits.tolist())) / 3
    assert LabelCE()(logits, soft).item() == pytest.approx(expected_soft, rel=1e-6)


def test_feature_mse_mean_over_blocks_and_scale():
    s1, t1 = torch.zeros(2, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]], [[[0.0, 2.0]]]])   # mean of squares 14/4
    s2, t2 = torch.ones(2, 1, 2, 1), torch.ones(2, 1, 2, 1)                               # 0
    assert FeatureMSE()([s1, s2], [t1, t2]).item() == pytest.approx((14 / 4 + 0) / 2)
    assert FeatureMSE(64)([s1, s2], [t1, t2]).item() == pytest.approx(64 * (14 / 4) / 2)


@pytest.mark.parametrize('reduction', ['mean', 'batch_sum'])
def test_criterion_scales_feature_terms_by_the_global_batch(reduction):
    """'lambda x batch size' uses the global batch the trainer passes (per-process batch x
    processes x accumulation), not the per-process batch the features arrive with."""
    from distill.config import DistillConfig, TermConfig
    from distill.criterion import DistillationCriterion
    student, teacher = timm.create_model('riformer_mini').eval(), timm.create_model('poolformer_mini').eval()
    cfg = DistillConfig(l_in_hidden=TermConfig(weight=0.5), l_rel=TermConfig(weight=2.0), feature_reduction=reduction)
    blocks = default_imitated_blocks(student)
    criterion = DistillationCriterion(cfg, student, teacher, None, blocks, global_batch=64)
    x = torch.randn(2, 3, 32, 32)
    total, terms = criterion(x, student(x), torch.zeros(2, dtype=torch.long), epoch=0)
    s_feats = student.forward_intermediates(x, intermediates_only=True)
    t_feats = teacher.forward_intermediates(x, intermediates_only=True)
    scale = 64 if reduction == 'batch_sum' else 1
    mse = FeatureMSE()(s_feats, t_feats) * scale
    rel = RelationMSE()(s_feats, t_feats) * scale
    assert terms['l_in_hidden'].item() == pytest.approx(mse.item(), rel=1e-5)
    assert terms['l_rel'].item() == pytest.approx(rel.item(), rel=1e-5)
    assert total.item() == pytest.approx(0.5 * mse.item() + 2.0 * rel.item(), rel=1e-5)
    criterion.remove_hooks()


def test_relation_mse_by_hand():
    # One sample, C=2 features, 2 tokens (H=1, W=2).
    ys = torch.tensor([[[[3.0, 0.0]], [[4.0, 1.0]]]])    # tokens (3,4) and (0,1)
    yt = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])    # tokens (1,0) and (1,1)
    def rel(tokens):
        n = [[v / math.hypot(*tok) for v in tok] for tok in tokens]
        return [[sum(a * b for a, b in zip(u, v)) for v in n] for u in n]
    rs, rt = rel([(3, 4), (0, 1)]), rel([(1, 0), (1, 1)])
    expected = sum((rs[i][j] - rt[i][j]) ** 2 for i in range(2) for j in range(2)) / 4
    assert torch.allclose(relation_matrix(ys)[0], torch.tensor(rs))
    assert RelationMSE()([ys], [yt]).item() == pytest.approx(expected, rel=1e-5)


def test_teacher_inference_tensors_need_no_copy():
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    with torch.inference_mode():
        t = torch.randn(2, 3, 4, 4)
        t_logits = torch.randn(2, 5)
    loss = FeatureMSE()([s], [t]) + RelationMSE()([s], [t]) + SoftTargetKD(2.)(s.mean((2, 3)).repeat(1, 2)[:, :5], t_logits)
    loss.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_recorder_names_are_validated_with_close_matches():
    model = timm.create_model('riformer_mini')
    with pytest.raises(RecipeError, match="no module 'stages.0.block.0'.*close matches: stages.0.blocks.0"):
        FeatureRecorder(model, ['stages.0.block.0'], 'student')


def test_recorded_features_are_the_block_outputs_uncorrupted():
    model = timm.create_model('riformer_mini').eval()
    names = default_imitated_blocks(model)
    assert names == ['stages.0.blocks.0', 'stages.1.blocks.0', 'stages.2.blocks.2', 'stages.3.blocks.0']
    x = torch.randn(2, 3, 32, 32)
    with FeatureRecorder(model, names) as rec:
        model(x)
        recorded = rec.take()
    expected = model.forward_intermediates(x, intermediates_only=True)
    for r, e in zip(recorded, expected):       # the last block of a stage is the stage output
        assert torch.equal(r, e)


def test_check_pairs_shape_mismatch():
    student = timm.create_model('riformer_mini')
    teacher = timm.create_model('poolformer_s12')
    with pytest.raises(RecipeError, match='student output .* vs teacher'):
        check_pairs(student, teacher, ['stages.0.blocks.0'], 32)
    check_pairs(student, timm.create_model('poolformer_mini'), ['stages.2.blocks.2.token_mixer'], 32)


@pytest.mark.parametrize('scale', [1.0, 3.0])
@pytest.mark.parametrize('shape', [(3, 8, 5, 6), (3, 40, 3, 2)], ids=['gram_path', 'explicit_path'])
def test_relation_mse_matches_explicit_relation_matrices(scale, shape):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(*shape, generator=g, requires_grad=True)
    t = torch.randn(*shape, generator=g)
    explicit = (relation_matrix(s) - relation_matrix(t)).pow(2).mean() * scale
    got = RelationMSE(scale)([s], [t])
    assert got.item() == pytest.approx(explicit.item(), rel=1e-5)
    grad_got, = torch.autograd.grad(got, s)
    grad_explicit, = torch.autograd.grad(explicit, s)
    assert torch.allclose(grad_got, grad_explicit, rtol=1e-4, atol=1e-7)


def test_topk_stats_skip_unlabelled():
    from distill.engine import topk_stats
    logits = torch.tensor([[.1, .9, .05, .04, .03, .02, -1.], [.9, .1, .05, .04, .03, .02, -1.], [.1, .9, .05, .04, .03, .02, 1.]])
    # sample 0: label 1 is top-1; sample 1: label 6 is last (not in top-5); sample 2 unlabelled;
    # then label 2 of sample 0 is third (top-5 only)
    assert topk_stats(logits, torch.tensor([1, 6, -1])).tolist() == [2.0, 1.0, 1.0]
    assert topk_stats(logits, torch.tensor([2, 0, 6])).tolist() == [3.0, 2.0, 3.0]


def test_relation_mse_stays_accurate_when_student_nears_teacher():
    """The Gram path must not lose the small difference to cancellation (float64 reference)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 16, 28, 28, generator=g)
    s = (t + 1e-3 * torch.randn(t.shape, generator=g)).requires_grad_(True)
    def rel64(y):
        tokens = torch.nn.functional.normalize(y.double().flatten(2), dim=1)
        return tokens.transpose(1, 2) @ tokens
    reference = (rel64(s) - rel64(t)).pow(2).mean()
    got = RelationMSE()([s], [t])
    assert got.item() == pytest.approx(reference.item(), rel=1e-3)
    grad_got, = torch.autograd.grad(got, s)
    grad_ref, = torch.autograd.grad(reference, s)
    assert torch.allclose(grad_got, grad_ref, rtol=1e-2, atol=1e-3 * grad_ref.abs().max().item())


def _rel64(y):
    tokens = torch.nn.functional.normalize(y.double().flatten(2), dim=1)
    return tokens.transpose(1, 2) @ tokens


@pytest.mark.parametrize('shape', [(2, 64, 7, 7), (2, 16, 14, 14)], ids=['explicit_path', 'gram_path'])
def test_losses_are_float32_under_bf16_autocast(shape):
    """Under bf16 autocast (how the trainer runs the criterion) every term still computes in
    float32: L_rel and the MSEs within 1e-3 of a float64 reference, gradients too."""
    g = torch.Generator().manual_seed(2)
    t = torch.randn(*shape, generator=g)
    s = (t + 0.05 * torch.randn(shape, generator=g)).requires_grad_(True)
    rel_ref = (_rel64(s) - _rel64(t)).pow(2).mean()
    mse_ref = (s.double() - t.double()).pow(2).mean()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        rel = RelationMSE()([s], [t])
        mse = FeatureMSE()([s], [t])
    assert rel.dtype == mse.dtype == torch.float32
    assert rel.item() == pytest.approx(rel_ref.item(), rel=1e-3)
    assert mse.item() == pytest.approx(mse_ref.item(), rel=1e-3)
    for got, ref in ((rel, rel_ref), (mse, mse_ref)):
        grad, = torch.autograd.grad(got, s)
        grad_ref, = torch.autograd.grad(ref, s)
        cosine = torch.nn.functional.cosine_similarity(grad.double().flatten(), grad_ref.flatten(), dim=0)
        assert cosine.item() > 1 - 1e-5
        assert (grad.double() - grad_ref).norm() / grad_ref.norm() < 1e-3


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'channels_last'])
def test_gram_relation_gradient_is_autograds(layout):
    """The written-out gradient of the Gram path equals autograd's on the explicit float64
    relation matrices, for both layouts and with an all-zero token (normalisation's eps branch);
    gradcheck confirms it on a small float64 case."""
    from distill.losses import GramRelationDistance
    g = torch.Generator().manual_seed(3)
    s = torch.randn(3, 8, 6, 5, generator=g)
    s[1, :, 2, 3] = 0
    s = s.contiguous(memory_format=layout).requires_grad_(True)
    t = torch.randn(3, 8, 6, 5, generator=g).contiguous(memory_format=layout)
    got = RelationMSE(2.0)([s], [t])
    reference = (_rel64(s) - _rel64(t)).pow(2).mean() * 2.0
    assert got.item() == pytest.approx(reference.item(), rel=1e-5)
    grad_got, = torch.autograd.grad(got, s)
    grad_ref, = torch.autograd.grad(reference, s)
    assert torch.allclose(grad_got.double(), grad_ref.double(), rtol=1e-4, atol=1e-7)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, generator=g).contiguous(memory_format=layout).requires_grad_(True)
    y = torch.randn(2, 5, 3, 4, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda a: GramRelationDistance.apply(a, y), (x,))


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'channels_last'])
def test_feature_mse_is_autograds_bitwise(layout):
    """The written-out MSE gives autograd's value and gradient bit for bit (the trainer's
    results do not move with it), takes an inference-mode teacher tensor and gives the
    teacher no gradient."""
    g = torch.Generator().manual_seed(5)
    maps = [(3, 8, 6, 5), (3, 16, 3, 3)]
    s = [torch.randn(*m, generator=g).contiguous(memory_format=layout).requires_grad_(True) for m in maps]
    with torch.inference_mode():
        t = [torch.randn(*m, generator=g).contiguous(memory_format=layout) for m in maps]
    got = FeatureMSE(16.)(s, t)
    got_grads = torch.autograd.grad(got * 0.37, s)
    reference = torch.stack([(a - b.clone()).pow(2).mean() for a, b in zip(s, t)]).mean() * 16.
    ref_grads = torch.autograd.grad(reference * 0.37, s)
    assert torch.equal(got, reference)
    for a, b in zip(got_grads, ref_grads):
        assert torch.equal(a, b)
        assert a.abs().sum() > 0
