"""Hand-off to detectors: load_deploy features, ultralytics YOLO / RT-DETR via the shipped YAMLs
and tools/detect.py (one tiny training epoch, no downloads), and one-line errors."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Before ultralytics is imported: quiet. conftest.py already turned pip installs and network off
# and put its settings into a temporary directory.
os.environ.setdefault('YOLO_VERBOSE', 'False')

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402
from helpers import box_dataset, deploy_checkpoint, randomize  # noqa: E402

ultralytics = pytest.importorskip('ultralytics')
from models.handoff import DeployBackbone, build_backbone  # noqa: E402
from models.handoff import yolo as handoff  # noqa: E402
from distill.cli import detect  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / 'recipes' / 'detect'


@pytest.fixture(scope='module')
def s12_deploy(tmp_path_factory):
    return deploy_checkpoint(tmp_path_factory.mktemp('ckpt') / 'riformer_s12.deploy.safetensors', seed=3)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    """Four 64px images with one red box each, in ultralytics' YOLO format."""
    return box_dataset(tmp_path_factory.mktemp('tinydata'))


def features(module, x):
    with torch.no_grad():
        return [t.clone() for t in module(x)]


def assert_same_features(a, b, tol=1e-6):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert p.shape == q.shape
        assert models.relative_error(p, q) <= tol


def test_load_deploy_features_match_stage_outputs(s12_deploy):
    feats = models.load_deploy(s12_deploy, features_only=True, out_indices=(1, 2, 3))
    assert feats.feature_info.channels() == [128, 320, 512]
    assert feats.feature_info.reduction() == [8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    full = models.load_deploy(s12_deploy)
    with torch.no_grad():
        stages = full.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True)
    assert_same_features(stages, features(feats, x), tol=0)
    assert features(feats, x)[0].shape == (2, 128, 8, 8)


@pytest.mark.parametrize('recipe, cls', [('yolov8-riformer_s12', 'YOLO'), ('rtdetr-riformer_s12', 'RTDETR')])
def test_shipped_yaml_builds_with_deploy_weights(recipe, cls, s12_deploy, tmp_path):
    cfg = handoff.prepare_cfg(handoff.load_cfg(RECIPES / f'{recipe}.yaml'), str(s12_deploy))
    # written into a directory with a space: the path survives ultralytics' literal_eval quoting
    path = handoff.write_cfg(cfg, tmp_path / 'with space' / f'{recipe}.yaml')
    detector = getattr(ultralytics, cls)(str(path))
    net = detector.model.eval()
    backbone = net.model[0]
    assert isinstance(backbone, DeployBackbone) and backbone.channels == [128, 320, 512]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    x = torch.randn(1, 3, 64, 64)
    reference = models.load_deploy(s12_deploy, features_only=True, out_indices=(1, 2, 3))
    assert_same_features(features(reference, x), features(backbone, x), tol=0)
    with torch.no_grad():
        out = net(x)
    first = out[0] if isinstance(out, (list, tuple)) else out
    assert torch.isfinite(first).all()
    if cls == 'YOLO':
        assert net.stride.tolist() == [8., 16., 32.]
        assert first.shape[:2] == (1, 4 + 80)        # boxes + classes per anchor


def test_yaml_channel_check_and_efficient_backbone_in_same_yaml(s12_deploy):
    cfg = handoff.load_cfg(RECIPES / 'yolov8-riformer_s12.yaml')
    with pytest.raises(models.HandoffError, match=r'row 1: Index declares 128 channels .* gives 80'):
        handoff.prepare_cfg(cfg, 'fasternet_t0')
    for row, channels in zip(cfg['backbone'][1:4], (80, 160, 320)):
        row[3][0] = channels
    cfg = handoff.prepare_cfg(cfg, 'fasternet_t0')
    net = ultralytics.YOLO(str(handoff.write_cfg(cfg, Path(s12_deploy).parent / 'fn.yaml'))).model.eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 64))
    assert net.stride.tolist() == [8., 16., 32.] and out[0].shape[1] == 84


def yolo_cli(*args, cwd, env=None):
    """The plain `yolo` command in a new process (the entry point installed with ultralytics)."""
    script = Path(sys.executable).with_name('yolo')
    command = [str(script)] if script.is_file() else [sys.executable, '-c', 'from ultralytics.cfg import entrypoint; entrypoint()']
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
           'YOLO_AUTOINSTALL': 'False', 'YOLO_OFFLINE': '1', 'YOLO_VERBOSE': 'True', **(env or {})}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_train_one_epoch_then_predict_export_and_rebuild(s12_deploy, tiny_data, tmp_path, capsys):
    deploy = tmp_path / 'moving' / 'riformer_s12.deploy.safetensors'
    deploy.parent.mkdir()
    shutil.copy(s12_deploy, deploy)
    # ultralytics-style settings for the launcher's own options (imgsz=64 is --imgsz 64), and the
    # scale from a file name that is not a file, as ultralytics reads yolov8n.yaml
    code = detect.main([
        'train', '--cfg', str(RECIPES / 'yolov8n-riformer_s12.yaml'), '--backbone', str(deploy),
        f'data={tiny_data}', 'epochs=1', 'imgsz=64', 'batch=2', 'workers=0', 'device=cpu',
        f'project={tmp_path / "runs"}', 'name=y8', 'exist_ok=True', 'plots=False'])
    assert code == 0
    assert 'model scale: n (the file name)' in capsys.readouterr().out
    last = tmp_path / 'runs' / 'y8' / 'weights' / 'last.pt'
    assert last.is_file()

    # The unpickled detector holds the trained backbone; training moved it off the deploy weights.
    trained = ultralytics.YOLO(str(last)).model.float().eval()
    x = torch.randn(1, 3, 64, 64)
    reference = models.load_deploy(s12_deploy, features_only=True, out_indices=(1, 2, 3))
    trained_feats = features(trained.model[0], x)
    assert max(models.relative_error(a, b) for a, b in zip(features(reference, x), trained_feats)) > 1e-4

    # Fine-tuning / resuming rebuilds from the stored YAML, which names the architecture only,
    # and then loads the checkpoint's weights: the rebuilt detector must equal the trained one.
    from ultralytics.nn.tasks import DetectionModel
    assert trained.yaml['backbone'][0][3] == ['riformer_s12', [1, 2, 3]]
    run = tmp_path / 'runs' / 'y8'
    assert (run / 'model.yaml').is_file() and (run / 'init.pt').is_file()   # inside the run folder
    assert sorted(p.name for p in (tmp_path / 'runs').iterdir()) == ['y8']
    rebuilt = DetectionModel(trained.yaml, nc=1, verbose=False)
    rebuilt.load(trained)
    rebuilt.eval()
    assert_same_features(trained_feats, features(rebuilt.model[0], x), tol=0)

    # The deploy file moves away; the plain `yolo` CLI in a new process (which never imported our
    # package: unpickling does, and registers the layers) fine-tunes the checkpoint.
    deploy.rename(tmp_path / 'elsewhere.safetensors')
    result = yolo_cli('detect', 'train', f'model={last}', f'data={tiny_data}', 'epochs=1', 'imgsz=64', 'batch=2',
                      'workers=0', 'device=cpu', f'project={tmp_path / "cli"}', 'name=ft', 'plots=False',
                      'val=False', cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = result.stdout + result.stderr
    transferred = re.search(r'Transferred (\d+)/(\d+) items', log)
    assert transferred and transferred.group(1) == transferred.group(2), log[-2000:]
    tuned = ultralytics.YOLO(str(tmp_path / 'cli' / 'ft' / 'weights' / 'last.pt')).model
    assert isinstance(tuned.model[0], DeployBackbone) and tuned.yaml['backbone'][0][3] == ['riformer_s12', [1, 2, 3]]

    capsys.readouterr()
    assert detect.main(['predict', f'model={last}', f'source={tiny_data.parent / "images"}',
                        'imgsz=64', 'conf=0.25', '--device', 'cpu', 'save=False']) == 0
    assert capsys.readouterr().out.count(' boxes') == 4
    assert detect.main(['export', '--weights', str(last), '--format', 'torchscript', '--imgsz', '64']) == 0
    scripted = torch.jit.load(str(last.with_suffix('.torchscript')))
    trained.fuse()
    with torch.no_grad():
        got = scripted(x)
        got = got[0] if isinstance(got, (list, tuple)) else got
        assert models.relative_error(trained(x)[0], got) < 1e-4


def test_rtdetr_trains_one_epoch(s12_deploy, tiny_data, tmp_path):
    code = detect.main([
        'train', '--cfg', str(RECIPES / 'rtdetr-riformer_s12.yaml'), '--backbone', str(s12_deploy),
        '--data', str(tiny_data), '--epochs', '1', '--imgsz', '64', '--batch', '2', '--workers', '0',
        '--device', 'cpu', '--project', str(tmp_path / 'runs'), '--name', 'rt', '--exist-ok',
        'plots=False', 'val=False'])
    assert code == 0
    last = tmp_path / 'runs' / 'rt' / 'weights' / 'last.pt'
    assert 'RTDETRDecoder' in (tmp_path / 'runs' / 'rt' / 'model.yaml').read_text()
    model = ultralytics.RTDETR(str(last)).model
    assert type(model).__name__ == 'RTDETRDetectionModel' and isinstance(model.model[0], DeployBackbone)


def c2f_widths(net):
    return [m.cv2.conv.out_channels for m in net.model if type(m).__name__ == 'C2f']


# C2f output widths of the YOLOv8 head at each scale: make_divisible(min(c, max_channels) * width, 8)
# of its [512, 256, 512, 1024] rows, as ultralytics' own yolov8{n,s,m,l,x}.yaml.
SCALED_C2F = {'n': [128, 64, 128, 256], 's': [256, 128, 256, 512], 'm': [384, 192, 384, 576],
              'l': [512, 256, 512, 512], 'x': [640, 320, 640, 640]}


def test_the_scale_a_yaml_asks_for_is_kept(s12_deploy, tiny_data, tmp_path, capsys):
    """The issue's case: a recipe copy named yolov8m-rif.yaml trained through tools/detect.py is
    the m model (it was built at n: the prepared YAML's file name says no scale)."""
    cfg = tmp_path / 'yolov8m-rif.yaml'
    shutil.copy(RECIPES / 'yolov8-riformer_s12.yaml', cfg)
    assert detect.main(['train', '--cfg', str(cfg), '--backbone', str(s12_deploy), '--data', str(tiny_data),
                        '--epochs', '1', '--imgsz', '64', '--batch', '2', '--workers', '0', '--device', 'cpu',
                        '--project', str(tmp_path / 'runs'), '--name', 'm', 'plots=False', 'val=False']) == 0
    assert 'model scale: m (the file name)' in capsys.readouterr().out
    run = tmp_path / 'runs' / 'm'
    for weights in (run / 'init.pt', run / 'weights' / 'last.pt'):
        net = ultralytics.YOLO(str(weights)).model
        assert c2f_widths(net) == SCALED_C2F['m'] and net.yaml['scale'] == 'm', weights
    prepared = {**handoff.prepare_cfg(handoff.load_cfg(cfg), str(s12_deploy)), 'nc': 1}
    reference = ultralytics.YOLO(str(handoff.write_cfg(prepared, tmp_path / 'yolov8m-ref.yaml'))).model
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in reference.parameters())
    # the prepared YAML builds the same model by its own name too (ultralytics reads no scale from 'model')
    assert c2f_widths(ultralytics.YOLO(str(run / 'model.yaml')).model) == SCALED_C2F['m']


@pytest.mark.parametrize('scale', ['n', 'm'])
def test_neck_blocks_follow_the_scale(scale, s12_deploy):
    from models.handoff import RIFormerNeckBlock
    cfg = handoff.prepare_cfg(handoff.load_cfg(RECIPES / 'yolov8-riformer_s12-neck.yaml'), str(s12_deploy), scale=scale)
    net = handoff.build_detector(cfg)
    blocks = [m.dim for m in net.model if isinstance(m, RIFormerNeckBlock)]
    assert c2f_widths(net) == blocks == SCALED_C2F[scale]


@pytest.mark.parametrize('cfg, args, message', [
    ('yolov8-riformer_s12.yaml', ['--scale', 'q'], "scale 'q' (from --scale): the model YAML has scales n, s, m, l, x"),
    ('yolov8s-riformer_s12.yaml', ['--scale', 'm'], 'the model scale is ambiguous: --scale says m, the file name says s'),
    ('yolov5-riformer_s12.yaml', ['--scale', 's'], '--scale s: the model YAML has no scales:'),
    ('yolov8q-riformer_s12.yaml', [], 'yolov8q-riformer_s12.yaml: no such model YAML'),
])
def test_scale_errors_are_one_line(cfg, args, message, s12_deploy, tiny_data, tmp_path, capsys):
    assert detect.main(['train', '--cfg', str(RECIPES / cfg), '--backbone', str(s12_deploy), '--data', str(tiny_data),
                        '--project', str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
    assert not any(tmp_path.iterdir())


def reference_gflops(net, imgsz):
    """What the detector computes: torch's FlopCounterMode over the reference forward."""
    from torch.utils.flop_counter import FlopCounterMode
    with models.reference_forward(net), FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(torch.zeros(1, 3, imgsz, imgsz))
    return counter.get_total_flops() / 1e9


@pytest.mark.parametrize('recipe', ['yolov8s-riformer_s12', 'yolov8s-riformer_s12-neck'])
def test_summary_gflops_count_the_fused_deploy_blocks(recipe, s12_deploy):
    """ultralytics' summary counts FLOPs with module hooks, which the fused CPU path of deploy
    blocks bypassed (YOLOv8-S12: 20.7 GFLOPs reported, 46.3 computed)."""
    from ultralytics.utils.torch_utils import model_info
    net = handoff.build_detector(handoff.prepare_cfg(handoff.load_cfg(RECIPES / f'{recipe}.yaml'), str(s12_deploy)))
    models.reparameterize(net.eval())           # the folded neck too: every block deploy-form, fused
    assert all(b.form == 'deploy' and b.fused for b in models.fused_blocks(net))
    _, params, _, gflops = model_info(net, imgsz=640)
    assert params == sum(p.numel() for p in net.parameters())
    assert gflops == pytest.approx(reference_gflops(net, 640), rel=0.05)


@pytest.mark.parametrize('args, message', [
    (['--backbone', '/no/such/dir/x.deploy.safetensors'], 'x.deploy.safetensors: no such file'),
    (['--backbone', 'resnet50'], 'resnet50: no such file, and not a backbone name'),
    (['--backbone', 'riformer_s12'], 'riformer_s12: a RIFormer needs its deploy checkpoint'),
    (['--cfg', 'missing.yaml'], 'missing.yaml: no such model YAML'),
    (['--data', 'missing.yaml'], 'missing.yaml: no such dataset YAML'),
])
def test_bad_train_inputs_give_one_line_errors(args, message, s12_deploy, tiny_data, tmp_path, capsys):
    base = {'--cfg': str(RECIPES / 'yolov8-riformer_s12.yaml'), '--backbone': str(s12_deploy),
            '--data': str(tiny_data)}
    base.update(dict(zip(args[::2], args[1::2])))
    argv = ['train', *[a for kv in base.items() for a in kv], '--project', str(tmp_path), '--epochs', '1']
    assert detect.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1
    assert not (tmp_path / 'exp').exists()


def test_bad_weights_and_training_form_checkpoint(tmp_path, capsys):
    assert detect.main(['val', '--weights', str(tmp_path / 'nope.pt')]) == 2
    assert capsys.readouterr().err.startswith('error: ')
    student = randomize(timm.create_model('riformer_mini', num_classes=0))
    models.save_model(tmp_path / 'train.safetensors', student)
    with pytest.raises(models.CheckpointError, match='train-form checkpoint, not a deploy one'):
        build_backbone(tmp_path / 'train.safetensors')
    with pytest.raises(models.CheckpointError, match=r'out_indices \[7\] out of range'):
        build_backbone('fasternet_t0', out_indices=(1, 7))


@pytest.fixture(scope='module')
def bad_weights(tmp_path_factory):
    """Files a user may pass as --weights by mistake, with the words their error must say."""
    import torchvision
    root = tmp_path_factory.mktemp('bad')
    torch.save({'model': torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3))}, root / 'layers.pt')
    (root / 'truncated.pt').write_bytes((root / 'layers.pt').read_bytes()[:300])
    torch.save(torchvision.models.resnet18(), root / 'torchvision.pt')
    torch.save(torch.nn.Conv2d(3, 3, 1).state_dict(), root / 'state_dict.pt')
    (root / 'folder.pt').mkdir()
    return {root / 'truncated.pt': 'empty or truncated', root / 'torchvision.pt': 'refused to unpickle torchvision.',
            root / 'layers.pt': 'Sequential: not an ultralytics, yolo9 or yolov5 detector',
            root / 'state_dict.pt': 'not a detector checkpoint (no model in it)',
            root / 'folder.pt': 'a directory, not a checkpoint file'}


@pytest.mark.parametrize('route', [
    ['train', '--weights', '{w}', '--data', '{data}'], ['train', '--resume', '{w}'], ['val', '--weights', '{w}'],
    ['predict', '--weights', '{w}', '--source', '{images}'], ['export', 'model={w}', 'format=torchscript'],
], ids=lambda r: r[0] + (' --resume' if '--resume' in r else ''))
def test_bad_weights_give_one_error_line_on_every_route(route, bad_weights, tiny_data, capsys):
    for path, words in bad_weights.items():
        argv = [a.format(w=path, data=tiny_data, images=tiny_data.parent / 'images') for a in route]
        assert detect.main(argv) == 2, path
        err = capsys.readouterr().err
        assert err.startswith(f'error: {path}: ') and words in err and err.count('\n') == 1, err


def test_bad_weights_in_a_real_process_print_no_traceback(bad_weights, tiny_data, tmp_path):
    """As a user runs it: one line on stderr, exit code 2, for a truncated file and a pickled
    torchvision model (ultralytics printed a 49-line traceback, or unpickled it and crashed)."""
    env = {**os.environ, 'YOLO_AUTOINSTALL': 'False', 'YOLO_OFFLINE': '1', 'OMP_NUM_THREADS': '1'}
    for path in list(bad_weights)[:2]:
        result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'detect.py'), 'predict', '--weights', str(path),
                                 '--source', str(tiny_data.parent / 'images')],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), result.stderr
        assert bad_weights[path] in lines[0]


@pytest.mark.parametrize('args, message', [
    (['train', '--imgsz', '64', 'imgsz=128'], 'imgsz given twice: --imgsz 64 and imgsz=128'),
    (['train', 'imgsize=64'], 'imgsize=64: not an ultralytics setting (close: imgsz'),
    (['train', 'batch=all'], 'batch=all: --batch takes int values'),
    (['train', 'resume=True'], 'resume=True: give the checkpoint to resume: --resume '),
    (['train', 'model=missing.yaml', f'data={RECIPES / "yolov8-riformer_s12.yaml"}'], 'missing.yaml: no such model YAML'),
    (['val', 'model=missing.pt'], 'missing.pt: no such checkpoint'),
    (['predict', '--weights', 'missing.pt'], 'predict needs --source'),
    (['export'], 'export needs --weights'),
])
def test_ultralytics_style_settings_and_missing_options_are_one_line(args, message, capsys):
    assert detect.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and err.count('\n') == 1, err


def test_weights_argument_quoted_or_absolute_is_resolved(tmp_path, monkeypatch):
    from models.efficient import create_deploy, create_training
    timm_file = tmp_path / 'fasternet_t0.pth'
    torch.save(randomize(create_training('fasternet_t0'), seed=2).state_dict(), timm_file)
    reference = models.efficient.as_features(create_deploy('fasternet_t0', weights=str(timm_file)), (1, 2, 3))
    x = torch.randn(1, 3, 64, 64)
    # quoted, as ultralytics passes a string that literal_eval turned into 'path'
    quoted = DeployBackbone('fasternet_t0', [1, 2, 3], repr(str(timm_file)))
    assert_same_features(features(reference, x), features(quoted, x), tol=0)

    cfg = handoff.load_cfg(RECIPES / 'yolov8-riformer_s12.yaml')
    for row, channels in zip(cfg['backbone'][1:4], (80, 160, 320)):
        row[3][0] = channels
    monkeypatch.chdir(tmp_path)      # relative and absolute, unquoted: literal_eval would fail on both
    for weights in (str(timm_file), timm_file.name):
        cfg['backbone'][0][3] = ['fasternet_t0', [1, 2, 3], weights]
        prepared = handoff.prepare_cfg(cfg)
        assert prepared['backbone'][0][3] == ['fasternet_t0', [1, 2, 3], repr(str(timm_file))]
        net = ultralytics.YOLO(str(handoff.write_cfg(prepared, tmp_path / 'fn.yaml'))).model.eval()
        assert_same_features(features(reference, x), features(net.model[0], x), tol=0)


def test_rows_name_the_architecture_for_every_kind_of_source(s12_deploy, tmp_path):
    from distill.cli import export
    fn_file = tmp_path / 'fasternet_t0.deploy.safetensors'
    assert export.main(['fasternet_t0', '--format', 'deploy', '-o', str(fn_file)]) == 0
    cfg = handoff.load_cfg(RECIPES / 'yolov8-riformer_s12.yaml')
    x = torch.randn(1, 3, 64, 64)
    for source, channels, arch in [(str(s12_deploy), (128, 320, 512), 'riformer_s12'),
                                   (str(fn_file), (80, 160, 320), 'fasternet_t0')]:
        for row, c in zip(cfg['backbone'][1:4], channels):
            row[3][0] = c
        row = handoff.prepare_cfg(cfg, source)['backbone'][0][3]
        assert row == [arch, [1, 2, 3], repr(str(Path(source).resolve()))]
        fresh = DeployBackbone(*row)                        # weights from the file
        portable = DeployBackbone(*fresh.portable_args())   # the architecture only, fresh weights
        assert fresh.portable_args() == [arch, [1, 2, 3]]
        portable.load_state_dict(fresh.state_dict(), strict=True)      # same tensors, names, shapes
        assert_same_features(features(fresh, x), features(portable, x), tol=0)
    with pytest.raises(models.CheckpointError, match='is riformer_s12 .* the model YAML names riformer_s24'):
        DeployBackbone('riformer_s24', [1, 2, 3], repr(str(s12_deploy)))
    with pytest.raises(models.CheckpointError, match='is a fasternet_t0 deploy file, the model YAML names fasternet_t1'):
        DeployBackbone('fasternet_t1', [1, 2, 3], str(fn_file))


def test_cfg_must_be_a_model_yaml(s12_deploy, tiny_data, tmp_path, capsys):
    (tmp_path / 'last.pt').write_bytes(bytes(range(256)))
    (tmp_path / 'binary.yaml').write_bytes(bytes(range(128, 256)))
    for cfg, message in [('last.pt', 'a model YAML (.yaml) is needed here, got .pt; to fine-tune a trained '
                                     'detector pass --weights'),
                         ('binary.yaml', 'not a text file')]:
        assert detect.main(['train', '--cfg', str(tmp_path / cfg), '--data', str(tiny_data),
                            '--project', str(tmp_path / 'runs')]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and message in err and err.count('\n') == 1, err
    assert detect.main(['train', '--cfg', str(RECIPES / 'yolov8-riformer_s12.yaml'), '--weights',
                        str(tmp_path / 'last.pt'), '--data', str(tiny_data)]) == 2
    assert 'one of --cfg' in capsys.readouterr().err


def test_registration_is_a_name_in_ultralytics_parser():
    import ultralytics.nn.tasks as tasks
    from models.handoff import RIFormerNeckBlock
    assert tasks.DeployBackbone is DeployBackbone and tasks.RIFormerBlock is RIFormerNeckBlock
