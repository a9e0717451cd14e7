"""YOLOv9 code base (the `yolo9` 1.0.x package) around a deploy backbone via the same shim.
Skipped where `yolo9` is not importable (it is not a project dependency: it pulls ipython,
albumentations, pycocotools, ...); verified with yolo9 1.0.18 installed on the side
(docs/DETECTORS.md). GELAN head with one DDetect (recipes/detect/yolov9-riformer_s12.yaml)."""
import importlib.util
from pathlib import Path

import pytest

from models.handoff.detector import load_pickled
import torch
import yaml

import models

yolo = pytest.importorskip('yolo9.models.yolo')
# yolo9 1.0.18's utils/loss_tal.py imports the top-level `utils` (their yolo.py appends the yolo9
# folder to sys.path). Where another code base's root came first on sys.path (the `yolov5` package
# does the same append, so after tests/test_detect_yolov5.py in one process), that `utils` wins.
_utils = importlib.util.find_spec('utils')
if _utils is None or Path(_utils.origin).resolve().parents[1] != Path(yolo.__file__).resolve().parents[1]:
    pytest.skip(f"top-level `utils` is {_utils and _utils.origin}, not yolo9's (yolov5 imported first?): "
                'run this file in its own process', allow_module_level=True)
from yolo9.models.experimental import attempt_load  # noqa: E402
from yolo9.utils.loss_tal import ComputeLoss  # noqa: E402

from helpers import deploy_checkpoint  # noqa: E402
from models.handoff.yolov5 import Pick, build_detection_model  # noqa: E402

RECIPE = Path(models.__file__).resolve().parents[1] / 'recipes' / 'detect' / 'yolov9-riformer_s12.yaml'
HYP = Path(yolo.__file__).resolve().parents[1] / 'data' / 'hyps' / 'hyp.scratch-high.yaml'


@pytest.fixture(scope='module')
def s12_deploy(tmp_path_factory):
    return deploy_checkpoint(tmp_path_factory.mktemp('ckpt') / 's12.deploy.safetensors')


def test_yolov9_detection_model_with_deploy_backbone(s12_deploy, tmp_path):
    net = build_detection_model(RECIPE, 'yolo9.models.yolo', nc=3, backbone=str(s12_deploy)).eval()
    assert isinstance(net, yolo.DetectionModel) and isinstance(net.model[1], Pick)
    assert isinstance(net.model[-1], yolo.DDetect)
    assert net.stride.tolist() == [8., 16., 32.]
    x = torch.randn(2, 3, 64, 64)
    reference = models.load_deploy(s12_deploy, features_only=True, out_indices=(1, 2, 3))
    with torch.no_grad():
        for a, b in zip(reference(x), net.model[0](x)):
            assert models.relative_error(a, b) == 0
        y, maps = net(x)          # eval: (boxes + class scores per anchor point, raw maps)
        assert y.shape == (2, 4 + 3, 8 * 8 + 4 * 4 + 2 * 2)
        assert [tuple(m.shape[-2:]) for m in maps] == [(8, 8), (4, 4), (2, 2)]

    # Their training loss (utils/loss_tal.ComputeLoss, as their train.py) reaches the backbone.
    net.train()
    net.hyp = yaml.safe_load(HYP.read_text())
    loss, items = ComputeLoss(net)(net(x), torch.tensor([[0, 1, .5, .5, .4, .4], [1, 2, .3, .6, .3, .5]]))
    assert torch.isfinite(loss) and (items > 0).all()
    loss.backward()
    grads = [p.grad for p in net.model[0].parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)

    # A checkpoint as their train.py writes it loads with their attempt_load (detect.py / val.py).
    torch.save({'model': net}, tmp_path / 'last.pt')
    loaded = attempt_load(tmp_path / 'last.pt', fuse=True)
    net.eval()
    with torch.no_grad():
        assert models.relative_error(net(x)[0], loaded(x)[0]) < 1e-5


def test_yolov9_channel_check():
    with pytest.raises(models.HandoffError, match='Index declares 128 channels, the backbone gives 80'):
        build_detection_model(RECIPE, 'yolo9.models.yolo', backbone='fasternet_t0')


def test_yolov9_summary_gflops_count_the_fused_deploy_blocks(s12_deploy):
    """Their summary counts FLOPs with thop's module hooks, which the fused CPU path of deploy
    blocks bypassed (20.2 GFLOPs reported for 45.8 computed)."""
    import logging
    import re
    from torch.utils.flop_counter import FlopCounterMode
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    yolo.LOGGER.addHandler(handler)
    try:
        net = build_detection_model(RECIPE, 'yolo9.models.yolo', nc=80, backbone=str(s12_deploy))
    finally:
        yolo.LOGGER.removeHandler(handler)
    reported = float(re.search(r'([\d.]+) GFLOPs', '\n'.join(lines)).group(1))
    with models.reference_forward(net), FlopCounterMode(display=False) as counter, torch.no_grad():
        net.eval()(torch.zeros(1, 3, 640, 640))
    assert reported == pytest.approx(counter.get_total_flops() / 1e9, rel=0.05), lines


NECK = RECIPE.with_name('yolov9-riformer_s12-neck.yaml')


def test_yolov9_neck_blocks_train_fold_and_predict(s12_deploy, tmp_path, capsys):
    import copy
    from helpers import randomize
    from distill.cli import reparam
    from models.handoff import RIFormerNeckBlock
    from yolo9.utils.general import non_max_suppression
    net = build_detection_model(NECK, 'yolo9.models.yolo', nc=2, backbone=str(s12_deploy))
    blocks = [m for m in net.modules() if isinstance(m, RIFormerNeckBlock)]
    assert [b.dim for b in blocks] == [192, 128, 192, 256] and [b.i for b in blocks] == [8, 12, 16, 20]

    # One epoch on four synthetic images (batch 2) with their loss, as their train.py would.
    net.train()
    net.hyp = yaml.safe_load(HYP.read_text())
    loss_fn = ComputeLoss(net)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 64, 64, generator=g)
    targets = torch.tensor([[0, 0, .5, .5, .4, .4], [1, 1, .3, .6, .3, .5], [0, 1, .6, .3, .2, .2], [1, 0, .4, .4, .5, .3]])
    before = copy.deepcopy(blocks[0].token_mixer.affine.bias)
    for start in (0, 2):
        batch = targets[(targets[:, 0] >= start) & (targets[:, 0] < start + 2)].clone()
        batch[:, 0] -= start
        loss, _ = loss_fn(net(images[start:start + 2]), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, blocks[0].token_mixer.affine.bias)

    # Saved as their train.py saves it (half), non-trivial blocks; folded by tools/reparam.py.
    for i, block in enumerate(blocks):
        randomize(block, seed=30 + i)
    net.eval()
    torch.save({'model': copy.deepcopy(net).half(), 'opt': {'imgsz': 64}}, tmp_path / 'last.pt')
    capsys.readouterr()
    assert reparam.main([str(tmp_path / 'last.pt')]) == 0
    assert 'yolo9 DetectionModel: folded 4 of 16 RIFormer blocks' in capsys.readouterr().out

    reference = attempt_load(tmp_path / 'last.pt', fuse=False)
    folded = attempt_load(tmp_path / 'last.deploy.pt', fuse=True)       # their loader (detect.py / val.py)
    assert all(m.form == 'deploy' for m in folded.modules() if isinstance(m, RIFormerNeckBlock))
    x = torch.rand(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        ref, got = reference(x), folded(x)
        assert models.relative_error(ref[0], got[0]) <= 1e-5
        detections = non_max_suppression(got[0], conf_thres=0.0, max_det=10)
    assert len(detections) == 2 and all(d.shape[1] == 6 for d in detections)

    # The stored YAML rebuilds (through the shim) deploy-form blocks that take every tensor.
    stored = load_pickled(tmp_path / 'last.deploy.pt')['model']      # restricted unpickling, as the loaders do
    assert stored.yaml['head'][4][3][-1] == 'deploy' and stored.yaml['backbone'][0][3] == ['riformer_s12', [1, 2, 3]]
    rebuilt = build_detection_model(stored.yaml, 'yolo9.models.yolo', nc=2)
    assert all(m.form == 'deploy' for m in rebuilt.modules() if isinstance(m, RIFormerNeckBlock))
    have, want = stored.state_dict(), rebuilt.state_dict()
    assert have.keys() == want.keys() and all(have[k].shape == want[k].shape for k in have)
