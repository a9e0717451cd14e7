"""YOLOv9 code base (the `yolo9` 1.0.x package) around a deploy backbone via the same shim.
Skipped where `yolo9` is not importable (it is not a project dependency: it pulls ipython,
albumentations, pycocotools, ...); verified with yolo9 1.0.18 installed on the side
(docs/DETECTORS.md). GELAN head with one DDetect (recipes/detect/yolov9-riformer_s12.yaml)."""
import importlib.util
from pathlib import Path

import pytest
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
    with pytest.raises(models.CheckpointError, match='Index declares 128 channels, the backbone gives 80'):
        build_detection_model(RECIPE, 'yolo9.models.yolo', backbone='fasternet_t0')
