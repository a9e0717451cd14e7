"""tools/export.py: ONNX (ONNX Runtime) and TorchScript match PyTorch at new batch and spatial
sizes; the mmpretrain checkpoint is exact in mmpretrain's documented deploy semantics."""
import pytest
import timm
import torch
import torch.nn.functional as F

import models
from helpers import mmpretrain_layout, randomize
from distill.cli import export


@pytest.fixture(scope='module')
def mini(tmp_path_factory):
    model = models.reparameterize(randomize(timm.create_model('riformer_mini', num_classes=7), seed=5).eval())
    path = tmp_path_factory.mktemp('ckpt') / 'mini.deploy.safetensors'
    models.save_model(path, model)
    return path


def run(capsys, *args):
    code = export.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize('features', [False, True])
def test_onnx_dynamic_batch_and_size(mini, tmp_path, capsys, features):
    ort = pytest.importorskip('onnxruntime')
    extra = ['--features', '--out-indices', '1', '2', '3'] if features else []
    code, out, err = run(capsys, mini, '--format', 'onnx', '-o', tmp_path / 'm.onnx', '--image-size', 64, *extra)
    assert code == 0, err
    assert 'max relative error' in out
    # Independent of the tool's own check: a size and batch it never saw.
    session = ort.InferenceSession(str(tmp_path / 'm.onnx'), providers=['CPUExecutionProvider'])
    x = torch.randn(3, 3, 80, 48)
    reference = models.load_deploy(mini, features_only=features, out_indices=(1, 2, 3) if features else None)
    with torch.no_grad():
        expected = reference(x)
    expected = expected if features else [expected]
    got = session.run(None, {'input': x.numpy()})
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        assert a.shape == b.shape
        assert models.relative_error(a, torch.from_numpy(b)) < 1e-4


def test_torchscript_matches_pytorch(mini, tmp_path, capsys):
    code, out, err = run(capsys, mini, '--format', 'torchscript', '-o', tmp_path / 'm.pt', '--image-size', 64,
                         '--features')
    assert code == 0, err
    loaded = torch.jit.load(str(tmp_path / 'm.pt'))
    x = torch.randn(2, 3, 96, 64)
    reference = models.load_deploy(mini, features_only=True)
    with torch.no_grad():
        for a, b in zip(reference(x), loaded(x)):
            assert models.relative_error(a, b) < 1e-5


def test_mmpretrain_checkpoint_is_exact(mini, tmp_path, capsys):
    code, out, err = run(capsys, mini, '--format', 'mmpretrain', '-o', tmp_path / 'mm.pth')
    assert code == 0, err
    ckpt = torch.load(tmp_path / 'mm.pth', weights_only=True)
    sd = ckpt['state_dict']
    deploy = models.load_deploy(mini)

    # Key names and shapes of mmpretrain's deploy RIFormer (`norm_reparam`, `backbone.` prefix),
    # written independently by tests/helpers.mmpretrain_layout from a plain-form model.
    plain = models.reparameterize(randomize(timm.create_model('riformer_mini', num_classes=7)), 'plain')
    documented = mmpretrain_layout(plain, plain=True)['state_dict']
    documented = {k: v for k, v in documented.items() if not k.startswith(('head.', 'backbone.norm'))}
    backbone = {k: v for k, v in sd.items() if not k.startswith('backbone.norm')}
    assert {k: tuple(v.shape) for k, v in backbone.items()} == {k: tuple(v.shape) for k, v in documented.items()}
    assert sorted(k for k in sd if k.startswith('backbone.norm')) == [
        f'backbone.norm{i}.{p}' for i in (0, 2, 4, 6) for p in ('bias', 'weight')]
    assert not any(k.startswith('head.') for k in sd)      # timm head: no mmpretrain equivalent

    # mmpretrain's deploy block, x + ls1 * norm_reparam(x); x + ls2 * mlp(norm2(x)), written out
    # from its documented semantics, with the out norms of out_indices (0, 2, 4, 6).
    def mm_forward(x):
        x = F.conv2d(x, sd['backbone.patch_embed.proj.weight'], sd['backbone.patch_embed.proj.bias'], 4, 2)
        outs = []
        for s in range(4):
            if s:
                p = f'backbone.network.{2 * s - 1}.proj.'
                x = F.conv2d(x, sd[p + 'weight'], sd[p + 'bias'], 2, 1)
            j = 0
            while f'backbone.network.{2 * s}.{j}.norm2.weight' in sd:
                p = f'backbone.network.{2 * s}.{j}.'
                gn = lambda t, n: F.group_norm(t, 1, sd[p + n + '.weight'], sd[p + n + '.bias'], 1e-5)
                x = x + sd[p + 'layer_scale_1'].view(-1, 1, 1) * gn(x, 'norm_reparam')
                h = F.gelu(F.conv2d(gn(x, 'norm2'), sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias']))
                x = x + sd[p + 'layer_scale_2'].view(-1, 1, 1) * F.conv2d(h, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])
                j += 1
            n = f'backbone.norm{2 * s}.'
            outs.append(F.group_norm(x, 1, sd[n + 'weight'], sd[n + 'bias'], 1e-5))
        return outs

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages = deploy.forward_intermediates(x, intermediates_only=True)
        mm = mm_forward(x)
    for ours, theirs in zip(stages, mm):
        assert models.relative_error(F.group_norm(ours, 1, eps=1e-5), theirs) < 1e-5

    # And our own mmpretrain reader (models.layouts) rebuilds the same stages from the file.
    back = models.build_model(models.read_checkpoint(tmp_path / 'mm.pth'))
    assert back.form == 'plain'
    with torch.no_grad():
        for a, b in zip(stages, back.forward_intermediates(x, intermediates_only=True)):
            assert models.relative_error(a, b) < 1e-5


def test_bad_inputs_give_one_line_errors(mini, tmp_path, capsys):
    student = randomize(timm.create_model('riformer_mini', num_classes=0))
    models.save_model(tmp_path / 'train.safetensors', student)
    for args, message in [
        ((tmp_path / 'missing.safetensors', '--format', 'onnx'), 'no such file'),
        (('resnet50', '--format', 'torchscript'), 'not a backbone name'),
        (('riformer_s12', '--format', 'onnx'), 'exported from its deploy checkpoint'),
        ((tmp_path / 'train.safetensors', '--format', 'onnx'), 'not a deploy one'),
        ((tmp_path / 'train.safetensors', '--format', 'mmpretrain'), 'needs the deploy form'),
        ((mini, '--format', 'onnx', '--features', '--out-indices', '9'), 'out of range'),
    ]:
        code, out, err = run(capsys, *args)
        assert code == 2 and err.startswith('error: ') and message in err and err.count('\n') == 1, (args, err)
