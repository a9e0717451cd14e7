"""tools/reparam.py: round trips for every architecture, foreign layouts, and every bad input."""
import copy
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import models
from helpers import mmpretrain_layout, network_layout, randomize
from distill.cli import reparam

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    code = reparam.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def saved_student(tmp_path, arch='riformer_mini', seed=0, classes=10):
    model = randomize(timm.create_model(arch, num_classes=classes), seed).eval()
    path = tmp_path / f'{arch}.safetensors'
    models.save_model(path, model)
    return model, path


@pytest.mark.parametrize('arch', list(models.ARCHS))
def test_round_trip_every_arch(arch, tmp_path, capsys):
    model, path = saved_student(tmp_path, arch)
    code, out, err = run_cli(capsys, path, '--image-size', 64)
    assert code == 0, err
    deploy_path = tmp_path / f'{arch}.deploy.safetensors'
    assert f'-> {deploy_path}' in out and 'max relative error' in out
    deploy = models.load_deploy(deploy_path)
    assert not deploy.training and deploy.form == 'deploy'
    x = torch.randn(2, 3, 64, 64)
    errors = models.compare_forms(model, deploy, x)
    assert max(errors.values()) < 1e-5, errors
    meta = models.read_checkpoint(deploy_path).metadata
    assert meta['arch'] == arch and float(meta['max_rel_error']) < 1e-5
    assert meta['folds'].split(',') == models.FOLDS['deploy']


def test_block_check_refuses_a_broken_fold_the_outputs_hide(tmp_path, capsys, monkeypatch):
    """Layer scales at their init (1e-5): the blocks are near identity, so a fold that drops
    norm2's shift moves logits and stage outputs by less than the tolerance; each block's
    residual branches, measured against their own size, refuse it."""
    from helpers import drop_norm2_shift
    model = randomize(timm.create_model('riformer_mini', num_classes=10), 3).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'layer_scale' in name:
                p.fill_(1e-5)
    path = tmp_path / 'near_identity.safetensors'
    models.save_model(path, model)
    monkeypatch.setattr(models.RIFormerBlock, '_fold_norm2_into_fc1', drop_norm2_shift)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))      # the check's batch
    assert max(models.compare_forms(model, models.reparameterize(model, inplace=False), x).values()) < 1e-5
    code, out, err = run_cli(capsys, path, '--image-size', 64)
    assert code == 2 and err.startswith('error: block check failed: the residual branches of 6 of 6 folded '
                                        'blocks') and err.count('\n') == 1, err
    assert not (tmp_path / 'near_identity.deploy.safetensors').exists()
    monkeypatch.undo()
    code, out, err = run_cli(capsys, path, '--image-size', 64)
    assert code == 0 and 'blocks: the residual branches of all 6 blocks within' in out, err
    assert float(models.read_checkpoint(tmp_path / 'near_identity.deploy.safetensors').metadata['block_error']) < 1e-6


def test_plain_state_dict_pth_with_output_option(tmp_path, capsys):
    model = randomize(timm.create_model('riformer_s12', num_classes=4), 1).eval()
    torch.save({'model': model.state_dict(), 'epoch': 3}, tmp_path / 'ckpt.pth')
    code, out, err = run_cli(capsys, tmp_path / 'ckpt.pth', '-o', tmp_path / 'out' / 'd.safetensors',
                             '--image-size', 64)
    assert code == 0, err
    assert 'arch riformer_s12' in out and 'classes 4' in out
    deploy = models.load_deploy(tmp_path / 'out' / 'd.safetensors')
    x = torch.randn(1, 3, 64, 64)
    assert models.relative_error(model(x), deploy(x)) < 1e-5


@pytest.mark.parametrize('plain', [False, True])
def test_mmpretrain_layout(plain, tmp_path, capsys):
    reference = randomize(timm.create_model('riformer_s12', num_classes=6, head_norm_first=True), 2).eval()
    source = models.reparameterize(copy.deepcopy(reference), 'plain') if plain else reference
    torch.save(mmpretrain_layout(source, plain=plain), tmp_path / 'mm.pth')

    ckpt = models.read_checkpoint(tmp_path / 'mm.pth')
    assert ckpt.source == 'mmpretrain' and ckpt.config.head_norm_first
    assert ckpt.config.form == ('plain' if plain else 'train')
    loaded = models.build_model(ckpt)
    x = torch.randn(2, 3, 64, 64)
    # The norm-first head reproduces mmpretrain's logits: GroupNorm on the map, pool, fc.
    feats = reference.forward_features(x)
    norm = reference.head.norm
    expected = reference.head.fc(F.group_norm(feats, 1, norm.weight, norm.bias, 1e-5).mean((2, 3)))
    assert models.relative_error(expected, loaded(x)) < 1e-5

    code, out, err = run_cli(capsys, tmp_path / 'mm.pth', '--image-size', 64)
    assert code == 0, err
    assert 'mmpretrain layout' in out
    deploy = models.load_deploy(tmp_path / 'mm.deploy.safetensors')
    assert models.relative_error(expected, deploy(x)) < 1e-5


def test_mmpretrain_names_round_trip():
    model = randomize(timm.create_model('riformer_mini', num_classes=3), 3)
    for m in (model, models.reparameterize(copy.deepcopy(model), 'plain')):
        sd = m.state_dict()
        mm = models.to_mmpretrain_names(sd)
        assert mm.keys() == mmpretrain_layout(m, plain=m.form == 'plain')['state_dict'].keys()
        back = models.to_timm_names(mm)
        assert back.source == 'mmpretrain' and back.state_dict.keys() == sd.keys()
        assert all(torch.equal(back.state_dict[k], v) for k, v in sd.items())


def test_mmdet_backbone_keys_are_ignored_not_fatal(tmp_path):
    model = randomize(timm.create_model('riformer_mini', num_classes=0, head_norm_first=True), 4)
    sd = mmpretrain_layout(model)['state_dict']
    for i in (0, 2, 4):
        sd[f'backbone.norm{i}.weight'] = torch.ones(model.dims[i // 2])
        sd[f'backbone.norm{i}.bias'] = torch.zeros(model.dims[i // 2])
    sd['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    torch.save({'state_dict': sd}, tmp_path / 'det.pth')
    ckpt = models.read_checkpoint(tmp_path / 'det.pth')
    assert 'neck.lateral_convs.0.conv.weight' in ckpt.ignored
    assert 'backbone.norm0.*' in ckpt.ignored and 'head.norm.weight' in ckpt.state_dict


def test_sail_poolformer_teacher_reproduces_original_head(tmp_path):
    timm_teacher = randomize(timm.create_model('poolformer_mini', num_classes=10), 5).eval()
    sail = network_layout(timm_teacher)
    torch.save(sail, tmp_path / 'sail.pth')
    teacher = models.create_teacher('poolformer_mini', tmp_path / 'sail.pth')
    x = torch.randn(2, 3, 32, 32)
    feats = timm_teacher.forward_features(x)
    norm = timm_teacher.head.norm
    expected = timm_teacher.head.fc(F.group_norm(feats, 1, norm.weight, norm.bias, 1e-5).mean((2, 3)))
    assert models.relative_error(expected, teacher(x)) < 1e-5
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training


def test_teacher_of_other_architecture_fails_clearly(tmp_path):
    torch.save(timm.create_model('poolformer_s12', num_classes=10).state_dict(), tmp_path / 't.pth')
    with pytest.raises(models.CheckpointError, match='shape mismatch.*teacher poolformer_mini'):
        models.create_teacher('poolformer_mini', tmp_path / 't.pth')
    with pytest.raises(models.CheckpointError, match='unknown teacher model'):
        models.create_teacher('poolformer_s13', tmp_path / 't.pth')


# --- bad input: one line on stderr, exit 2, no traceback -------------------------------------

class NotAllowed:
    pass


def _bad_inputs(tmp_path):
    _, good = saved_student(tmp_path)
    cases = {}
    cases['missing'] = ([tmp_path / 'nope.safetensors'], 'no such file')
    (tmp_path / 'text.pth').write_text('hello')
    cases['not_checkpoint'] = ([tmp_path / 'text.pth'], 'not a PyTorch checkpoint')
    (tmp_path / 'broken.safetensors').write_bytes(b'\x00' * 10)
    cases['bad_safetensors'] = ([tmp_path / 'broken.safetensors'], 'not a readable safetensors file')
    with open(tmp_path / 'evil.pth', 'wb') as f:
        pickle.dump({'x': NotAllowed()}, f)
    cases['unsafe_pickle'] = ([tmp_path / 'evil.pth'], r'not a tensor checkpoint \(its pickle holds Python objects.*\); '
                                                         r'it will not be unpickled')
    torch.save(timm.create_model('poolformer_mini').state_dict(), tmp_path / 'pool.pth')
    cases['poolformer'] = ([tmp_path / 'pool.pth'], 'looks like a PoolFormer')
    torch.save(timm.create_model('resnet10t').state_dict(), tmp_path / 'resnet.pth')
    cases['resnet'] = ([tmp_path / 'resnet.pth'], r'not a PoolFormer/RIFormer state dict \(keys look like: conv1')
    torch.save([1, 2], tmp_path / 'list.pth')
    cases['list'] = ([tmp_path / 'list.pth'], 'holds a list, not a state dict')
    assert reparam.main([str(good), '-o', str(tmp_path / 'deploy.safetensors'), '--image-size', '32']) == 0
    cases['already_deploy'] = ([tmp_path / 'deploy.safetensors'], 'already in deploy form')
    cases['wrong_arch'] = ([good, '--arch', 'riformer_s24'], r'shape mismatch: stem.conv.weight is \[32, 3, 7, 7\]')
    cases['unknown_arch'] = ([good, '--arch', 'riformer_s13'], 'unknown arch')
    sd = models.read_checkpoint(good).state_dict
    sd['stages.2.blocks.1.mlp.fc1.weight'] = torch.zeros(3, 128, 1, 1)
    torch.save(sd, tmp_path / 'shape.pth')
    cases['inconsistent_shapes'] = ([tmp_path / 'shape.pth'], 'shape mismatch: stages.2.blocks.1.mlp.fc1.weight')
    sd = models.read_checkpoint(good).state_dict
    sd['stages.1.blocks.0.token_mixer.affine.weight'] = torch.full((64, 1, 1, 1), 3e38)
    torch.save(sd, tmp_path / 'overflow.pth')
    cases['failed_check'] = ([tmp_path / 'overflow.pth', '--image-size', '32'], 'equivalence check failed')
    cases['overwrite'] = ([good, '-o', good], 'would overwrite the input')
    return cases


def test_bad_inputs(tmp_path, capsys):
    for name, (args, message) in _bad_inputs(tmp_path).items():
        capsys.readouterr()
        code, out, err = run_cli(capsys, *args)
        assert code == 2, (name, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith('error: '), (name, err)
        assert __import__('re').search(message, lines[0]), (name, lines[0])
    assert not (tmp_path / 'overflow.deploy.safetensors').exists()


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'reparam.py'), str(tmp_path / 'missing.pt')],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f'error: {tmp_path / "missing.pt"}: no such file'


def test_python_pickle_gets_our_line_not_torchs_advice(tmp_path):
    """A pickle of Python objects: no UserWarning about pickle protocols, no advice to load it
    with weights_only=False; one line saying the tool will not unpickle it."""
    with open(tmp_path / 'objects.pkl', 'wb') as f:
        pickle.dump({'callback': print}, f, protocol=4)
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'reparam.py'), str(tmp_path / 'objects.pkl')],
                            capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert 'not a tensor checkpoint' in lines[0] and 'will not be unpickled' in lines[0]
    assert 'weights_only' not in lines[0]
