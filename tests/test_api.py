"""models' public API: every function in models.__all__ documents its arguments, return value and an
example, the examples run, and the timm-style conveniences (reparameterize(inplace=), set_fused)."""
import doctest
import inspect
import re

import pytest
import timm
import torch

import models


def sections_it_needs(func) -> set:
    """Example always; Args where the function takes arguments; Returns where it returns a value
    (a `-> None` annotation says it does not). Sections without content are filler."""
    sig = inspect.signature(func)
    needed = {'Example'}
    if sig.parameters:
        needed.add('Args:')
    if sig.return_annotation is not None and sig.return_annotation != 'None':
        needed.add('Returns:')
    return needed


def test_public_functions_document_what_they_take_and_give_with_an_example():
    for name in models.__all__:
        obj = getattr(models, name)
        if inspect.isfunction(obj):
            doc = inspect.getdoc(obj) or ''
            assert all(part in doc for part in sections_it_needs(obj)), name
            assert not re.search(r'(Args|Returns):\s*\n\s*(none|None)\.\s*\n', doc), f'{name}: a section with no content'
            if 'Returns:' not in sections_it_needs(obj):
                assert 'Returns:' not in doc, f'{name} returns nothing: drop its Returns section'


def test_the_docstring_rule_asks_only_for_sections_with_content():
    def takes_nothing() -> int: ...
    def gives_nothing(x) -> None: ...
    assert sections_it_needs(takes_nothing) == {'Example', 'Returns:'}
    assert sections_it_needs(gives_nothing) == {'Example', 'Args:'}


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
