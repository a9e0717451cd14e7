"""YOLOv5 code base (the `yolov5` 7.0.x package) around a deploy backbone via the shim.
Skipped where `yolov5` is not installed (it is not a project dependency: it pulls roboflow,
sahi, boto3, ...); verified with yolov5 7.0.14 installed on the side (docs/DETECTORS.md)."""
import pytest
import torch

import models
from helpers import deploy_checkpoint

yolo = pytest.importorskip('yolov5.models.yolo')
from models.handoff.yolov5 import Pick, build_detection_model, load_detection_model  # noqa: E402

RECIPE = models.__file__.rsplit('/', 2)[0] + '/recipes/detect/yolov5-riformer_s12.yaml'


def test_yolov5_detection_model_with_deploy_backbone(tmp_path):
    path = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=4)
    net = build_detection_model(RECIPE, 'yolov5.models.yolo', nc=3, backbone=str(path)).eval()
    assert isinstance(net, yolo.DetectionModel) and isinstance(net.model[1], Pick)
    assert net.stride.tolist() == [8., 16., 32.]
    x = torch.randn(1, 3, 64, 64)
    reference = models.load_deploy(path, features_only=True, out_indices=(1, 2, 3))
    with torch.no_grad():
        for a, b in zip(reference(x), net.model[0](x)):
            assert models.relative_error(a, b) == 0
        assert net(x)[0].shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 3 + 5)
    with pytest.raises(models.HandoffError, match='Index declares 128 channels, the backbone gives 80'):
        build_detection_model(RECIPE, 'yolov5.models.yolo', backbone='fasternet_t0')


def test_yolov5_loss_reaches_the_backbone(tmp_path):
    import yaml
    from pathlib import Path
    from yolov5.utils.loss import ComputeLoss
    path = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=5)
    net = build_detection_model(RECIPE, 'yolov5.models.yolo', nc=3, backbone=str(path)).train()
    hyp_file = Path(yolo.__file__).parents[1] / 'data' / 'hyps' / 'hyp.scratch-low.yaml'
    net.hyp = yaml.safe_load(hyp_file.read_text())
    x = torch.randn(2, 3, 64, 64)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 2, 0.3, 0.6, 0.2, 0.2]])   # image, class, xywh
    loss, _ = ComputeLoss(net)(net(x), targets)
    loss.sum().backward()
    grads = [p.grad for p in net.model[0].parameters()]
    assert torch.isfinite(loss).all() and all(g is not None and g.abs().sum() > 0 for g in grads)


def build_logged(*args, **kwargs):
    """build_detection_model(...) and the lines their logger printed meanwhile."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    collect = Collect()
    yolo.LOGGER.addHandler(collect)
    try:
        return build_detection_model(*args, **kwargs), '\n'.join(collect.lines)
    finally:
        yolo.LOGGER.removeHandler(collect)


def test_yolov5_summary_is_the_real_model_and_saved_model_loads(tmp_path):
    path = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=6)
    net, text = build_logged(RECIPE, 'yolov5.models.yolo', nc=3, backbone=str(path))
    net.eval()
    total = sum(p.numel() for p in net.parameters())
    assert f'{total} parameters' in text and text.count('summary') == 1        # 14.9M, not the stand-ins' 4.4M
    assert 'torch.nn.modules.linear.Identity' not in text                      # no stand-in layer table

    # Saved as their train.py saves it; their attempt_load fails here, ours loads and fuses.
    torch.save({'model': net}, tmp_path / 'last.pt')
    loaded = load_detection_model(tmp_path / 'last.pt')
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert models.relative_error(net(x)[0], loaded(x)[0]) < 1e-5


def test_yolov5_summary_gflops_count_the_fused_deploy_blocks(tmp_path):
    """Their summary counts FLOPs with thop's module hooks, which the fused CPU path of deploy
    blocks bypassed (10.6 GFLOPs reported for 36.2 computed)."""
    import re
    from torch.utils.flop_counter import FlopCounterMode
    path = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=7)
    net, text = build_logged(RECIPE, 'yolov5.models.yolo', nc=80, backbone=str(path))
    reported = float(re.search(r'([\d.]+) GFLOPs', text).group(1))
    with models.reference_forward(net), FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(torch.zeros(1, 3, 640, 640))
    assert reported == pytest.approx(counter.get_total_flops() / 1e9, rel=0.05), text


def test_yolov5_yaml_with_riformer_block_in_the_neck(tmp_path):
    import yaml
    from models.handoff import RIFormerNeckBlock
    path = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=8)
    cfg = yaml.safe_load(open(RECIPE))
    cfg['head'].insert(-1, [-1, 1, 'RIFormerBlock', [512]])      # row 19, after the last C3
    cfg['head'][-1][0] = [12, 15, 19]
    net = build_detection_model(cfg, 'yolov5.models.yolo', nc=3, backbone=str(path)).eval()
    assert isinstance(net.model[19], RIFormerNeckBlock) and net.model[19].form == 'train'
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64))[0].shape == (1, 3 * (8 * 8 + 4 * 4 + 2 * 2), 3 + 5)
    cfg['head'][-2][3] = [256]
    with pytest.raises(models.HandoffError, match=r'row 19: RIFormerBlock declares 256 channels but its input has 512'):
        build_detection_model(cfg, 'yolov5.models.yolo', nc=3, backbone=str(path))
    cfg['head'].insert(-1, [-1, 1, 'RIFormerBlock', [128]])     # a second wrong row: both in one error
    cfg['head'][-1][0] = [12, 15, 20]
    with pytest.raises(models.HandoffError, match=r'row 19: RIFormerBlock declares 256 .*; row 20: RIFormerBlock '
                                                  r'declares 128 channels but its input has 512'):
        build_detection_model(cfg, 'yolov5.models.yolo', nc=3, backbone=str(path))


def test_yolov5_checkpoint_with_neck_block_folds(tmp_path, capsys):
    import copy
    import yaml
    from helpers import randomize
    from models.handoff import RIFormerNeckBlock
    from distill.cli import reparam
    path = deploy_checkpoint(tmp_path / 's12.deploy.safetensors', seed=9)
    cfg = yaml.safe_load(open(RECIPE))
    cfg['head'].insert(-1, [-1, 1, 'RIFormerBlock', [512]])
    cfg['head'][-1][0] = [12, 15, 19]
    net = build_detection_model(cfg, 'yolov5.models.yolo', nc=3, backbone=str(path)).eval()
    randomize(net.model[19], seed=3)
    torch.save({'model': copy.deepcopy(net).half(), 'opt': {'imgsz': 64}}, tmp_path / 'last.pt')
    capsys.readouterr()
    assert reparam.main([str(tmp_path / 'last.pt')]) == 0
    assert 'yolov5 DetectionModel: folded 1 of 13 RIFormer blocks' in capsys.readouterr().out
    reference = load_detection_model(tmp_path / 'last.pt', fuse=False)
    folded = load_detection_model(tmp_path / 'last.deploy.pt')
    assert isinstance(folded.model[19], RIFormerNeckBlock) and folded.model[19].form == 'deploy'
    assert folded.yaml['head'][-2][3][-1] == 'deploy'
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert models.relative_error(reference(x)[0], folded(x)[0]) <= 1e-5
