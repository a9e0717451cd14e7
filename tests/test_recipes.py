"""Recipe parsing: types, unknown keys, overrides, cross-field checks, shipped recipes."""
from pathlib import Path

import pytest
import timm

import models  # noqa: F401
from distill.config import RecipeError, flatten, load_recipe
from distill.recorders import check_pairs, default_imitated_blocks

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / 'recipes').rglob('*.yaml')
                 if 'detect' not in p.parts and p.name != 'ablation.yaml')


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: str(p.relative_to(ROOT / 'recipes')))
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.train.epochs >= 1
    flat = flatten(recipe.to_dict())
    assert all(v is not None and not isinstance(v, (dict, list)) for v in flat.values())


@pytest.mark.parametrize('size', ['s12', 'm36'])
def test_paper_recipes_follow_table_10_and_pair_up(size):
    recipe = load_recipe(ROOT / f'recipes/riformer_{size}.yaml')
    assert recipe.distill.ce.weight == 0 and recipe.student.init_from_teacher
    assert (recipe.distill.l_in_hidden.end, recipe.distill.l_rel.end, recipe.train.epochs) == (400, 100, 600)
    assert recipe.optim.lr == 1e-3 and recipe.optim.weight_decay == 0.05 and recipe.data.re_prob == 0.25
    student = timm.create_model(recipe.student.arch, num_classes=10)
    teacher = timm.create_model(recipe.teacher.arch, num_classes=10)
    blocks = default_imitated_blocks(student)
    check_pairs(student, teacher, blocks + [b + '.token_mixer' for b in blocks], 64)


def write(tmp_path, text):
    p = tmp_path / 'r.yaml'
    p.write_text(text)
    return p


@pytest.mark.parametrize('text,overrides,message', [
    ('train: {epoch: 3}\ndistill: {ce: {weight: 1}}', [], r"unknown recipe key 'train.epoch'; did you mean epochs"),
    ('distill: {ce: {weight: 1}}', ['train.batch_size=abc'], r'train.batch_size: expected int'),
    ('distill: {ce: {weight: 1}}', ['train.epochs=2.5'], r'train.epochs: expected int'),
    ('distill: {ce: {weight: 1}}\ndata: {source: folder}', [], 'data.path is required'),
    ('distill: {soft: {weight: 1}}', [], 'need a teacher'),
    ('distill: {ce: {weight: 0}}', [], 'every loss weight is 0'),
    ('- a\n- b', [], 'a recipe is a mapping'),
    ('distill: {ce: {weight: 1}}', ['train.epochs'], 'expected key.sub=value'),
    ('distill: [1', [], 'not valid YAML'),
    ('distill: {ce: {weight: 1}}', ['data.label_fraction=0.1', 'data.mixup=0.8'], 'cannot be combined'),
])
def test_bad_recipes(tmp_path, text, overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text), overrides)


def test_overrides_are_typed_yaml_values(tmp_path):
    r = load_recipe(write(tmp_path, 'distill: {ce: {weight: 1}}'),
                    ['optim.lr=3e-4', 'train.epochs=7', 'data.scale=[0.5, 1.0]', 'distill.l_rel.end=null',
                     'teacher.arch=poolformer_mini', 'teacher.checkpoint=/tmp/t.safetensors'])
    assert r.optim.lr == 3e-4 and r.train.epochs == 7 and r.data.scale == [0.5, 1.0]
    assert r.distill.l_rel.end is None and r.teacher.checkpoint == '/tmp/t.safetensors'


def test_recipe_cannot_execute_code(tmp_path):
    with pytest.raises(RecipeError, match='not valid YAML'):
        load_recipe(write(tmp_path, "train: !!python/object/apply:os.system ['echo hacked']"))
