"""RIFormer architectures: exact reparameterization, timm integration, teacher-weight init."""
import copy

import pytest
import timm
import torch
from timm.utils.model import reparameterize_model

import models
import torch.nn.functional as F

from helpers import mmpretrain_layout, network_layout, randomize

ARCHS = list(models.ARCHS)
TOL = 1e-5


def _pair(arch, seed=0, **kwargs):
    train = randomize(timm.create_model(arch, num_classes=7, **kwargs), seed).eval()
    return train, models.reparameterize(copy.deepcopy(train))


@pytest.mark.parametrize('arch', ARCHS)
def test_deploy_matches_training_form(arch):
    train, deploy = _pair(arch)
    assert deploy.form == 'deploy' and train.form == 'train'
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    errors = models.compare_forms(train, deploy, x)
    assert set(errors) == {'stage0', 'stage1', 'stage2', 'stage3', 'logits'}
    assert max(errors.values()) < TOL, errors
    # The deploy form really lost its mixer, layer scales and norm2 affine.
    keys = deploy.state_dict().keys()
    assert not any('token_mixer' in k or 'layer_scale' in k or 'norm2' in k for k in keys)


@pytest.mark.parametrize('form', ['plain', 'deploy'])
def test_plain_form_and_plain_to_deploy(form):
    train, _ = _pair('riformer_mini', seed=3)
    plain = models.reparameterize(copy.deepcopy(train), 'plain')
    assert plain.form == 'plain'
    assert any('layer_scale1' in k for k in plain.state_dict())
    target = models.reparameterize(copy.deepcopy(plain), form)
    x = torch.randn(3, 3, 32, 32)
    assert max(models.compare_forms(train, target, x).values()) < TOL


def test_fold_is_not_trivially_identity():
    """With random weights the training-form mixer matters: dropping it changes the output,
    so the equivalence above is evidence of a correct fold, not of a no-op."""
    train, _ = _pair('riformer_mini', seed=4)
    broken = copy.deepcopy(train)
    for block in broken.modules():
        if isinstance(block, models.RIFormerBlock):
            block.token_mixer = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    assert max(models.compare_forms(train, broken, x).values()) > 1e-2


def test_reparameterize_is_idempotent():
    train, deploy = _pair('riformer_mini', seed=5)
    once = {k: v.clone() for k, v in deploy.state_dict().items()}
    models.reparameterize(deploy)
    models.reparameterize(deploy, 'plain')     # going back is a no-op, not an error
    assert once.keys() == deploy.state_dict().keys()
    for k, v in deploy.state_dict().items():
        assert torch.equal(v, once[k]), k


def test_timm_reparameterize_model():
    train = randomize(timm.create_model('riformer_s12', num_classes=5), 6).eval()
    deploy = reparameterize_model(train)          # timm's own tool, not ours
    assert deploy.form == 'deploy' and train.form == 'train'
    x = torch.randn(2, 3, 64, 64)
    assert max(models.compare_forms(train, deploy, x).values()) < TOL


@pytest.mark.parametrize('arch,channels', [
    ('riformer_s12', [64, 128, 320, 512]), ('riformer_m36', [96, 192, 384, 768])])
def test_features_only(arch, channels):
    net = timm.create_model(arch, features_only=True, out_indices=(0, 1, 2, 3))
    assert net.feature_info.channels() == channels
    assert net.feature_info.reduction() == [4, 8, 16, 32]
    feats = net(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == channels
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    sub = timm.create_model(arch, features_only=True, out_indices=(1, 3))
    assert sub.feature_info.channels() == [channels[1], channels[3]]


def test_features_only_deploy_form_matches_training_features():
    train, deploy = _pair('riformer_s12', seed=7)
    x = torch.randn(1, 3, 64, 64)
    feats = timm.models.FeatureListNet(deploy, out_indices=(1, 2, 3), flatten_sequential=True)(x)
    ref = train.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    for a, b in zip(ref, feats):
        assert models.relative_error(a, b) < TOL


@pytest.mark.parametrize('arch', ['s12', 's36', 'm48'])
def test_teacher_weight_init_only_affine_missing(arch, tmp_path):
    teacher = randomize(timm.create_model(f'poolformer_{arch}', num_classes=10), 8)
    path = tmp_path / 'teacher.pth'
    torch.save(teacher.state_dict(), path)
    student = timm.create_model(f'riformer_{arch}', num_classes=10)
    left = models.init_from_teacher(student, path)
    assert left and all('token_mixer.affine' in k for k in left)
    assert len(left) == 2 * sum(models.ARCHS[f'riformer_{arch}'][0])
    sd_s, sd_t = student.state_dict(), teacher.state_dict()
    assert all(torch.equal(sd_s[k], sd_t[k]) for k in sd_t)


def test_teacher_init_with_other_class_count_keeps_student_head(tmp_path):
    teacher = timm.create_model('poolformer_mini', num_classes=10)
    torch.save(teacher.state_dict(), tmp_path / 't.pth')
    student = timm.create_model('riformer_mini', num_classes=3)
    left = models.init_from_teacher(student, tmp_path / 't.pth')
    assert 'head.fc.weight' in left and student.head.fc.weight.shape[0] == 3


def test_teacher_init_rejects_other_architecture(tmp_path):
    torch.save(timm.create_model('poolformer_s24', num_classes=10).state_dict(), tmp_path / 't.pth')
    with pytest.raises(models.CheckpointError, match='does not fit|shape mismatch'):
        models.init_from_teacher(timm.create_model('riformer_s12', num_classes=10), tmp_path / 't.pth')


def _original_layout_teacher(layout, path):
    """A PoolFormer checkpoint in the sail-sg or mmpretrain layout, whose head is GroupNorm on
    the map, then pool; with the expected head function computed from its own tensors."""
    source = randomize(timm.create_model('poolformer_mini', num_classes=10), 5).eval()
    sd = network_layout(source) if layout == 'sail' else mmpretrain_layout(source)
    torch.save(sd, path)
    norm, fc = source.head.norm, source.head.fc

    def head(feats):
        return fc(F.group_norm(feats, 1, norm.weight, norm.bias, 1e-5).mean((2, 3)))
    return head


@pytest.mark.parametrize('layout', ['sail', 'mmpretrain'])
def test_teacher_init_gives_the_student_the_checkpoints_head(layout, tmp_path):
    """Same shapes, different functions: the student must get the head its weights come from."""
    head = _original_layout_teacher(layout, tmp_path / 't.pth')
    teacher = models.create_teacher('poolformer_mini', tmp_path / 't.pth')
    student = timm.create_model('riformer_mini', num_classes=10)
    models.init_from_teacher(student, tmp_path / 't.pth')
    assert student.head_norm_first
    feats = torch.randn(2, student.num_features, 3, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = head(feats)
        assert models.relative_error(expected, teacher.forward_head(feats)) < 1e-6
        assert models.relative_error(expected, student.forward_head(feats)) < 1e-6
    # A timm PoolFormer student (MetaFormer) is adapted the same way.
    metaformer = timm.create_model('poolformer_mini', num_classes=10)
    models.init_from_teacher(metaformer, tmp_path / 't.pth')
    with torch.no_grad():
        assert models.relative_error(expected, metaformer.forward_head(feats)) < 1e-6
    # And back: a timm-layout checkpoint gives a RIFormer timm's head again.
    torch.save(timm.create_model('poolformer_mini', num_classes=10).state_dict(), tmp_path / 'timm.pth')
    models.init_from_teacher(student, tmp_path / 'timm.pth')
    assert not student.head_norm_first and type(student.head.norm).__name__ == 'LayerNorm2d'


def test_teacher_init_refuses_a_head_it_cannot_build(tmp_path):
    _original_layout_teacher('sail', tmp_path / 't.pth')
    with pytest.raises(models.CheckpointError, match='original PoolFormer head .* use a RIFormer student'):
        models.init_from_teacher(timm.create_model('resnet10t', num_classes=10), tmp_path / 't.pth')
