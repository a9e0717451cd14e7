"""The loss-term registry (distill/terms.py) drives the recipe section, the criterion and the README."""
import dataclasses
from pathlib import Path

import timm

import models  # noqa: F401  (registers riformer_mini / poolformer_mini)
from distill.config import DistillConfig
from distill.criterion import DistillationCriterion
from distill.recorders import default_imitated_blocks
from distill.terms import TERMS, TermConfig, feature_modules, markdown_table, recorded_modules

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_term_is_a_recipe_section_and_a_criterion_loss():
    fields = [f.name for f in dataclasses.fields(DistillConfig)]
    assert fields[:len(TERMS)] == list(TERMS) and fields[len(TERMS):] == ['blocks', 'feature_reduction']
    criterion = DistillationCriterion(DistillConfig(ce=TermConfig(weight=1.0)), timm.create_model('riformer_mini'),
                                      None, None, [])
    assert {name: type(loss) for name, loss in criterion.losses.items()} == {n: t.loss for n, t in TERMS.items()}


def test_recorded_modules_follow_the_registry():
    cfg = DistillConfig(l_in=TermConfig(weight=1.0), l_out=TermConfig(weight=1.0), l_rel=TermConfig(weight=1.0))
    names = feature_modules(cfg, ['stages.0.blocks.1'])
    assert names == {'l_in': ['stages.0.blocks.1.norm1'], 'l_out': ['stages.0.blocks.1.token_mixer'],
                     'l_rel': ['stages.0.blocks.1']}
    assert recorded_modules(names) == ['stages.0.blocks.1', 'stages.0.blocks.1.norm1', 'stages.0.blocks.1.token_mixer']
    student, teacher = timm.create_model('riformer_mini'), timm.create_model('poolformer_mini')
    blocks = default_imitated_blocks(student)
    criterion = DistillationCriterion(cfg, student, teacher, None, blocks)
    assert criterion.recorded_names == recorded_modules(feature_modules(cfg, blocks))
    criterion.remove_hooks()


def test_readme_has_the_registrys_table():
    assert markdown_table() in (ROOT / 'README.md').read_text()


def test_each_loss_docstring_shows_its_recipe_lines():
    for name, term in TERMS.items():
        assert f'{name}: {{weight:' in term.loss.__doc__, name
