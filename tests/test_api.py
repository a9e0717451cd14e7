"""models' public API: every function in models.__all__ documents its arguments, return value and an
example, the examples run, and the timm-style conveniences (reparameterize(inplace=), set_fused)."""
import doctest
import inspect

import pytest
import timm
import torch

import models


def test_public_functions_have_args_returns_and_an_example():
    for name in models.__all__:
        obj = getattr(models, name)
        if inspect.isfunction(obj):
            doc = inspect.getdoc(obj) or ''
            assert all(part in doc for part in ('Args:', 'Returns:', 'Example')), name


@pytest.mark.parametrize('module', ['models.fold', 'models.student', 'models.poolformer_fused', 'models.layouts',
                                    'models.teachers', 'models.checkpoint_io', 'models.riformer'])
def test_docstring_examples_run(module):
    import importlib
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


def test_reparameterize_inplace_false_folds_a_copy():
    torch.manual_seed(0)
    model = timm.create_model('riformer_mini').eval()
    folded = models.reparameterize(model, inplace=False)
    assert folded is not model and model.form == 'train' and folded.form == 'deploy'
    x = torch.randn(2, 3, 32, 32)
    assert models.relative_error(model(x), folded(x)) < 1e-5
    assert models.reparameterize(model) is model and model.form == 'deploy'


def test_set_fused_toggles_the_fused_path_of_every_block():
    model = models.reparameterize(timm.create_model('riformer_mini').eval())
    assert model.set_fused(False) is model
    blocks = [m for m in model.modules() if isinstance(m, models.RIFormerBlock)]
    assert blocks and not any(b.fused for b in blocks)
    teacher = timm.create_model('poolformer_mini').eval()
    assert models.fuse_poolformer(teacher) == models.set_fused(teacher, False) > 0
    assert not any(b.fused for b in teacher.modules() if isinstance(b, models.PoolFormerInferenceBlock))


def test_console_scripts_point_at_command_mains():
    import configparser
    import importlib
    from pathlib import Path
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / 'setup.cfg')
    lines = [line for line in cfg['options.entry_points']['console_scripts'].splitlines() if line.strip()]
    assert len(lines) >= 7
    for line in lines:
        name, target = (part.strip() for part in line.split('='))
        module, func = target.split(':')
        assert name.startswith('riformer-') and callable(getattr(importlib.import_module(module), func)), line
