"""EfficientViT / FasterNet deploy forms: BN folded, equal to the training forms in eval mode."""
import pytest
import torch

import models
from models import efficient
from models.handoff import DeployBackbone
from distill.cli import export
from helpers import randomize


@pytest.mark.parametrize('name, kwargs', [
    ('efficientvit_m0', {}),
    ('fasternet_t0', {'layer_scale_init_value': 1.}),   # layer scale folded too
])
def test_deploy_equals_training(name, kwargs, tmp_path):
    training = randomize(efficient.create_training(name, num_classes=10, **kwargs)).eval()
    deploy = efficient.to_deploy(name, training)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in deploy.modules())
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert models.relative_error(training(x), deploy(x)) < 1e-5
        stages = training.forward_intermediates(x, intermediates_only=True)
    # Through a deploy file and the detector hand-off, by path.
    efficient.save_efficient_deploy(tmp_path / 'd.safetensors', name, deploy)
    backbone = DeployBackbone(str(tmp_path / 'd.safetensors'))
    with torch.no_grad():
        for a, b in zip(stages, backbone(x)):
            assert models.relative_error(a, b) < 1e-5
    assert backbone.strides == ([16, 32, 64] if 'vit' in name else [4, 8, 16, 32])


def test_export_tool_writes_checked_deploy_file(tmp_path, capsys):
    training = randomize(efficient.create_training('fasternet_t0', num_classes=1000)).eval()
    torch.save(training.state_dict(), tmp_path / 'fn.pth')
    code = export.main(['fasternet_t0', '--weights', str(tmp_path / 'fn.pth'), '--format', 'deploy',
                        '-o', str(tmp_path / 'fn.deploy.safetensors'), '--image-size', '64'])
    out, err = capsys.readouterr()
    assert code == 0, err
    deploy = DeployBackbone(str(tmp_path / 'fn.deploy.safetensors'), [1, 2, 3])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(training.forward_intermediates(x, indices=[1, 2, 3], intermediates_only=True), deploy(x)):
            assert models.relative_error(a, b) < 1e-5


def test_unknown_name():
    with pytest.raises(models.CheckpointError, match="unknown efficient backbone 'fasternet_x'"):
        efficient.create_training('fasternet_x')
