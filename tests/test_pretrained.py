"""Weights from elsewhere, offline: the official RIFormer weights through timm's pretrained
configs (mmpretrain layout, converted by the filter), and PoolFormer teachers from timm's tags.
Nothing is downloaded: files go through `pretrained_cfg_overlay=dict(file=...)` or a Hugging
Face cache written here."""
import pytest
import timm
import torch
from safetensors.torch import save_file

import models
from distill import train as train_mod
from distill.config import load_recipe
from distill.preflight import check_inputs
from helpers import mmpretrain_layout, official_file_in_torch_hub_cache, randomize

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

ROOT = models.__file__.rsplit('/', 2)[0]


@pytest.mark.parametrize('arch', ['riformer_s12', 'riformer_s24', 'riformer_s36', 'riformer_m36', 'riformer_m48'])
def test_every_paper_size_has_the_official_weights(arch):
    for tag, size in (('mmpretrain_in1k', 224), ('mmpretrain_in1k_384', 384)):
        cfg = timm.get_pretrained_cfg(f'{arch}.{tag}')
        assert cfg.url.startswith('https://download.openmmlab.com/mmclassification/v1/riformer/')
        assert arch.replace('_', '-') in cfg.url and (('384px' in cfg.url) == (size == 384))
        assert cfg.input_size == (3, size, size) and cfg.num_classes == 1000
    assert timm.create_model(arch).pretrained_cfg['tag'] == 'mmpretrain_in1k'     # the default tag


@pytest.fixture(scope='module')
def official_s12(tmp_path_factory):
    """A RIFormer-S12 checkpoint as mmpretrain publishes it (norm-first head, `backbone.` keys,
    under `state_dict` with `meta`), random non-trivial weights; and the model it came from."""
    reference = randomize(timm.create_model('riformer_s12', head_norm_first=True), seed=5).eval()
    path = tmp_path_factory.mktemp('mm') / 'riformer-s12_32xb128_in1k.pth'
    torch.save(mmpretrain_layout(reference), path)
    return path, reference


def test_official_weights_load_with_their_head(official_s12):
    path, reference = official_s12
    model = timm.create_model('riformer_s12', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.head_norm_first                        # switched by the filter: the checkpoint's head
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    # A new class count keeps the backbone and the head's norm, with a fresh classifier.
    ten = timm.create_model('riformer_s12', pretrained=True, num_classes=10,
                            pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        assert torch.equal(ten.forward_head(ten.forward_features(x), pre_logits=True),
                           reference.forward_head(reference.forward_features(x), pre_logits=True))
    assert ten.get_classifier().out_features == 10
    # Backbone for a detector: stage outputs of the official weights.
    feats = timm.create_model('riformer_s12', pretrained=True, features_only=True, out_indices=(1, 2, 3),
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        expected = reference.forward_intermediates(x, indices=(1, 2, 3), intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(feats(x), expected))


def test_downloaded_file_shape_goes_through_the_filter(official_s12):
    """From a URL, timm hands the filter the whole file (`meta` + `state_dict`)."""
    path, reference = official_s12
    model = timm.create_model('riformer_s12')
    sd = models.riformer.checkpoint_filter_fn(torch.load(path, weights_only=True), model)
    model.load_state_dict(sd)
    assert model.head_norm_first and torch.equal(model.head.norm.weight, reference.head.norm.weight)


def test_our_own_checkpoints_keep_timms_head(tmp_path):
    reference = randomize(timm.create_model('riformer_mini'), seed=2).eval()
    models.save_model(tmp_path / 'm.safetensors', reference)
    model = timm.create_model('riformer_mini', pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'm.safetensors'))).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not model.head_norm_first
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_teacher_from_timm_pretrained_weights(tmp_path):
    reference = randomize(timm.create_model('poolformer_mini'), seed=1).eval()
    save_file(reference.state_dict(), str(tmp_path / 'p.safetensors'))
    teacher = models.create_teacher('poolformer_mini', pretrained=True,
                                    pretrained_cfg_overlay=dict(file=str(tmp_path / 'p.safetensors')))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(teacher(x), reference(x))
    # timm would warn and hand back random weights for a name without any: we refuse.
    with pytest.raises(models.CheckpointError, match='timm has no pretrained weights for it'):
        models.create_teacher('poolformer_mini', pretrained=True)


def fake_hub_cache(root, repo_id, tensors):
    """The Hugging Face cache layout that hf_hub_download reads offline."""
    folder = root / f'models--{repo_id.replace("/", "--")}'
    commit = '0' * 40
    (folder / 'refs').mkdir(parents=True)
    (folder / 'refs' / 'main').write_text(commit)
    (folder / 'snapshots' / commit).mkdir(parents=True)
    save_file(tensors, str(folder / 'snapshots' / commit / 'model.safetensors'))


def test_recipe_teacher_from_a_timm_tag(tmp_path, monkeypatch):
    """The paper recipe's teacher (`poolformer_s12.sail_in1k`, pretrained) and the student's
    teacher-weight init, from the Hugging Face cache, offline; without it, one clear problem."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    recipe = load_recipe(f'{ROOT}/recipes/riformer_s12.yaml', [f'train.output_dir={tmp_path / "out"}',
                                                               f'data.path={tmp_path / "imagenet"}'])
    problems = check_inputs(recipe)
    assert len(problems) == 2 and 'poolformer_s12.sail_in1k: its weights (timm/poolformer_s12.sail_in1k) are not in the local cache' in problems[1]
    weights = randomize(timm.create_model('poolformer_s12'), seed=4).state_dict()
    fake_hub_cache(tmp_path / 'hub', 'timm/poolformer_s12.sail_in1k', weights)
    problems = check_inputs(recipe)
    assert len(problems) == 1 and 'imagenet does not exist' in problems[0]
    teacher, logit_teacher = train_mod.build_teachers(recipe, 1000)
    assert logit_teacher is None and torch.equal(teacher.stem.conv.weight, weights['stem.conv.weight'])
    student = train_mod.build_student(recipe, 1000, teacher)
    assert torch.equal(student.stages[2].blocks[3].mlp.fc1.weight, weights['stages.2.blocks.3.mlp.fc1.weight'])


def test_reparam_tool_official_and_random_weights(tmp_path):
    """Two of the three routes to a deploy checkpoint, as the README gives them: the official
    weights (through timm's URL, here from a prepared torch hub cache) and random weights."""
    import os
    import subprocess
    import sys
    env = {**os.environ, 'TORCH_HOME': str(tmp_path / 'torch')}
    tool = [sys.executable, f'{ROOT}/tools/reparam.py']
    result = subprocess.run([*tool, '--pretrained', 'riformer_mini'], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == \
        ['error: riformer_mini: timm has no pretrained weights for it; download that file where there is network '
         'and pass it instead (python tools/reparam.py FILE -o riformer_mini.deploy.safetensors)']
    result = subprocess.run([*tool, '--pretrained', 'riformer_s12'], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and 'are not in the local cache' in result.stderr, result.stderr

    reference = randomize(timm.create_model('riformer_s12', head_norm_first=True), seed=7).eval()
    official_file_in_torch_hub_cache(tmp_path / 'torch', 'riformer_s12', reference)
    result = subprocess.run([*tool, '--pretrained', 'riformer_s12'], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('riformer_s12 (timm pretrained weights) -> riformer_s12.deploy.safetensors')
    deploy = models.load_deploy(tmp_path / 'riformer_s12.deploy.safetensors')
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert models.relative_error(deploy(x), reference(x)) < 1e-5     # the official model, folded

    result = subprocess.run([*tool, '--random', 'riformer_mini'], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert models.load_deploy(tmp_path / 'riformer_mini.deploy.safetensors').form == 'deploy'
