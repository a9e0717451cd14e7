"""RIFormerBlocks inside ultralytics detectors: a neck recipe trains (tools/detect.py, one tiny
epoch), a width mistake gives one error line, and tools/reparam.py DETECTOR.pt folds the whole
detector into a checkpoint that ultralytics predicts, validates, exports, rebuilds and fine-tunes
in deploy form."""
import os

os.environ['YOLO_AUTOINSTALL'] = 'False'
os.environ['YOLO_OFFLINE'] = '1'
os.environ.setdefault('YOLO_VERBOSE', 'False')

import copy  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402
from helpers import box_dataset, deploy_checkpoint, drop_norm2_shift, randomize  # noqa: E402

ultralytics = pytest.importorskip('ultralytics')
from models.handoff import RIFormerNeckBlock  # noqa: E402
from models.riformer import RIFormerBlock  # noqa: E402
from models.handoff import yolo as handoff  # noqa: E402
from models.handoff.detector import save_detector  # noqa: E402
from distill.cli import detect, reparam  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / 'recipes' / 'detect' / 'yolov8-riformer_s12-neck.yaml'


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """Four 64px images with one green box each, in ultralytics' YOLO format."""
    return box_dataset(tmp_path_factory.mktemp('tinydata'), seed=1, background=30, colour=(60, 200, 90))


def train_args(data, project, name, *extra):
    return ['--data', str(data), '--epochs', '1', '--imgsz', '64', '--batch', '2', '--workers', '0',
            '--device', 'cpu', '--project', str(project), '--name', name, '--exist-ok', 'plots=False', *extra]


@pytest.fixture(scope='module')
def neck_run(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp('neck')
    deploy = deploy_checkpoint(root / 'riformer_s12.deploy.safetensors', seed=11)
    assert detect.main(['train', '--cfg', str(RECIPE), '--scale', 's', '--backbone', str(deploy),
                        *train_args(tiny_data, root / 'runs', 'neck')]) == 0
    return root / 'runs' / 'neck'


def neck_blocks(net):
    return [m for m in net.modules() if isinstance(m, RIFormerNeckBlock)]


def flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for v in values for t in flatten(v)]


def outputs(net, x):
    """Every output tensor in eval mode: decoded predictions and the head's raw maps."""
    with torch.no_grad():
        return flatten(net.eval()(x))


def test_neck_recipe_trains_with_training_form_blocks(neck_run):
    net = ultralytics.YOLO(str(neck_run / 'weights' / 'last.pt')).model
    blocks = neck_blocks(net)
    # --scale s: the blocks' [512, 256, 512, 1024] at scale 1.0 follow the C2fs' scaled widths
    assert [b.dim for b in blocks] == [256, 128, 256, 512] and all(b.form == 'train' for b in blocks)
    assert [net.model[i].dim for i in (8, 12, 16, 20)] == [256, 128, 256, 512]
    # training moved them off their initialisation (affine mixer s = 1, t = 0)
    assert any(not torch.allclose(b.token_mixer.affine.bias, torch.zeros_like(b.token_mixer.affine.bias)) for b in blocks)


def unscaled_recipe():
    """The neck recipe as a YAML without scales (YOLOv8s's multiples, block widths written out)."""
    cfg = handoff.load_cfg(RECIPE)
    del cfg['scales']
    cfg.update(depth_multiple=0.33, width_multiple=0.5)
    for i, width in zip((3, 7, 11, 15), (256, 128, 256, 512)):
        cfg['head'][i][3] = [width]
    return cfg


@pytest.mark.parametrize('scaled', [False, True], ids=['written-out', 'scales'])
def test_every_wrong_width_in_one_error_line_with_the_value(scaled, tiny_data, tmp_path, capsys):
    cfg = handoff.load_cfg(RECIPE) if scaled else unscaled_recipe()
    cfg['head'][3][3] = [1024 if scaled else 512]     # row 8: the C2f before it is 256 wide at s
    cfg['head'][11][3] = [256 if scaled else 512]     # row 16: likewise
    path = handoff.write_cfg(cfg, tmp_path / 'wide.yaml')
    deploy = deploy_checkpoint(tmp_path / 's12.deploy.safetensors')
    assert detect.main(['train', '--cfg', str(path), '--backbone', str(deploy), *(['--scale', 's'] if scaled else []),
                        *train_args(tiny_data, tmp_path / 'runs', 'wide')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: row 8: RIFormerBlock') and err.count('\n') == 1, err
    if scaled:      # the advice is a width at scale 1.0, which the launcher scales
        assert 'row 8: RIFormerBlock is 512 channels at scale s but its input has 256: write [-1, 1, RIFormerBlock, ' \
               '[512]]' in err and 'row 16: RIFormerBlock is 128 channels at scale s but its input has 256' in err, err
    else:
        assert 'row 8: RIFormerBlock declares 512 channels but its input has 256' in err and \
            'row 16: RIFormerBlock declares 512 channels but its input has 256' in err and \
            'write [-1, 1, RIFormerBlock, [256]]' in err, err
    assert not (tmp_path / 'runs').exists()


def test_written_out_widths_build_unchanged(tmp_path):
    deploy = deploy_checkpoint(tmp_path / 's12.deploy.safetensors')
    net = handoff.build_detector(handoff.prepare_cfg(unscaled_recipe(), str(deploy)))
    assert [b.dim for b in neck_blocks(net)] == [256, 128, 256, 512]


def test_fold_whole_detector_then_predict_val_export_rebuild_finetune(neck_run, tiny_data, tmp_path, capsys):
    # Non-trivial neck blocks (one training epoch barely moves them from their init).
    net = ultralytics.YOLO(str(neck_run / 'weights' / 'last.pt')).model.float()
    for i, block in enumerate(neck_blocks(net)):
        randomize(block, seed=20 + i)
    src = save_detector(net, tmp_path / 'random.pt', extra={'train_args': {'imgsz': 64, 'task': 'detect'}})
    capsys.readouterr()
    assert reparam.main([str(src)]) == 0
    log = capsys.readouterr().out
    folded_path = tmp_path / 'random.deploy.pt'
    assert 'folded 4 of 16 RIFormer blocks' in log and folded_path.is_file()

    folded = ultralytics.YOLO(str(folded_path)).model
    assert all(b.form == 'deploy' for b in neck_blocks(folded))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    errors = [models.relative_error(a, b) for a, b in zip(outputs(net, x), outputs(folded, x))]
    assert len(errors) >= 4 and max(errors) <= 1e-5, errors
    assert min(models.relative_error(a, b) for a, b in zip(outputs(net, x), outputs(ultralytics.YOLO(
        str(neck_run / 'weights' / 'last.pt')).model.float(), x))) > 1e-3    # the check can fail

    # The stored YAML rebuilds deploy-form blocks and takes every tensor.
    assert [folded.yaml['head'][i][3][-1] for i in (3, 7, 11, 15)] == ['deploy'] * 4
    assert folded.yaml['backbone'][0][3] == ['riformer_s12', [1, 2, 3]]
    from ultralytics.nn.tasks import DetectionModel
    rebuilt = DetectionModel(folded.yaml, nc=1, verbose=False)
    assert all(b.form == 'deploy' for b in neck_blocks(rebuilt))
    have, want = folded.state_dict(), rebuilt.state_dict()
    assert have.keys() == want.keys() and all(have[k].shape == want[k].shape for k in have)

    # ultralytics' own predict, val and export take it.
    assert detect.main(['predict', '--weights', str(folded_path), '--source', str(tiny_data.parent / 'images'),
                        '--imgsz', '64', '--device', 'cpu', 'save=False']) == 0
    assert detect.main(['val', '--weights', str(folded_path), '--data', str(tiny_data), '--imgsz', '64',
                        '--batch', '2', '--workers', '0', '--device', 'cpu', 'plots=False']) == 0
    assert detect.main(['export', '--weights', str(folded_path), '--format', 'torchscript', '--imgsz', '64']) == 0
    scripted = torch.jit.load(str(folded_path.with_suffix('.torchscript')))
    with torch.no_grad():
        assert models.relative_error(outputs(folded, x)[0], flatten(scripted(x))[0]) < 1e-4
    assert 'mAP50-95' in capsys.readouterr().out

    # Fine-tuning rebuilds from the YAML, transfers every tensor, and stays in deploy form.
    assert detect.main(['train', '--weights', str(folded_path), *train_args(tiny_data, tmp_path / 'runs', 'ft')]) == 0
    tuned = ultralytics.YOLO(str(tmp_path / 'runs' / 'ft' / 'weights' / 'last.pt')).model
    assert all(b.form == 'deploy' for b in neck_blocks(tuned)) and tuned.state_dict().keys() == have.keys()


def test_fold_check_refuses_a_broken_block_fold_the_outputs_hide(tmp_path, capsys, monkeypatch):
    """A freshly initialised neck detector: its blocks are near identity (layer scales 1e-5), so
    a fold that drops norm2's shift moves the outputs by less than the tolerance; each folded
    block's residual branches, measured against their own size, show it in full."""
    deploy = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=12)
    net = handoff.build_detector(handoff.prepare_cfg(handoff.load_cfg(RECIPE), str(deploy), scale='n')).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for block in neck_blocks(net):          # norm2's shift a little off its init, as a few steps move it
            block.norm2.bias.normal_(0, 0.003, generator=generator)
    src = save_detector(net, tmp_path / 'fresh.pt', extra={'train_args': {'imgsz': 64, 'task': 'detect'}})
    monkeypatch.setattr(RIFormerBlock, '_fold_norm2_into_fc1', drop_norm2_shift)

    from models.handoff.detector import compare_detectors
    x = torch.randn(2, 3, 64, 64, generator=generator)
    assert max(compare_detectors(net, models.reparameterize(copy.deepcopy(net)), x).values()) < 1e-5   # hidden
    capsys.readouterr()
    assert reparam.main([str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: block check failed: the residual branches of 4 of 4 folded blocks differ ') and \
        'worst: model.' in err and err.count('\n') == 1, err
    assert float(err.split('by up to ')[1].split()[0]) > 1e-3
    assert not (tmp_path / 'fresh.deploy.pt').exists()

    monkeypatch.undo()                          # the right fold passes the same check
    assert reparam.main([str(src)]) == 0
    assert 'blocks: the residual branches of the 4 folded blocks within' in capsys.readouterr().out


def test_reparam_of_a_folded_or_blockless_detector_is_an_error(neck_run, tmp_path, capsys):
    from models.handoff.detector import deploy_yaml
    from ultralytics.nn.tasks import DetectionModel
    net = ultralytics.YOLO(str(neck_run / 'weights' / 'last.pt')).model.float()
    models.reparameterize(net)
    net.yaml = deploy_yaml(net)                   # as tools/reparam.py writes a folded detector
    save_detector(net, tmp_path / 'folded.pt')
    plain = DetectionModel({'nc': 1, 'backbone': [[-1, 1, 'Conv', [16, 3, 2]], [-1, 1, 'Conv', [32, 3, 2]],
                                                   [-1, 1, 'Conv', [64, 3, 2]]],
                            'head': [[[2], 1, 'Detect', ['nc']]]}, verbose=False)
    save_detector(plain, tmp_path / 'none.pt')
    for name, message in [('folded.pt', 'already in deploy form'), ('none.pt', 'no RIFormer blocks')]:
        assert reparam.main([str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
