"""Recipe parsing: types, unknown keys, overrides, cross-field checks, shipped recipes."""
from pathlib import Path

import pytest
import timm
import yaml

import models  # noqa: F401
from distill.config import RecipeError, flat_keys, flatten, load_recipe
from distill.recorders import check_pairs, default_imitated_blocks

ROOT = Path(__file__).resolve().parents[1]


def study_config(path: Path) -> bool:
    """Ablation configs (`variants`) and teacher tables (`arms`) live beside the recipes."""
    raw = yaml.safe_load(path.read_text()) or {}
    return 'variants' in raw or 'arms' in raw


YAMLS = sorted(p for p in (ROOT / 'recipes').rglob('*.yaml') if 'detect' not in p.parts)
SHIPPED = [p for p in YAMLS if not study_config(p)]
STUDIES = [p for p in YAMLS if study_config(p)]


@pytest.mark.parametrize('path', STUDIES, ids=lambda p: str(p.relative_to(ROOT / 'recipes')))
def test_shipped_study_configs_validate(path):
    """Every study config loads with its own checks, and each of its recipes with its overrides."""
    from distill.ablation import load_ablation_config
    from distill.ablation.teachers import load_config
    if 'arms' in yaml.safe_load(path.read_text()):
        for arm in load_config(path).arms:
            load_recipe(arm.recipe, arm.overrides)
        return
    config = load_ablation_config(path)
    for variant in config.variants:
        load_recipe(variant.recipe, config.overrides + variant.overrides)


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: str(p.relative_to(ROOT / 'recipes')))
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.train.epochs >= 1
    flat = flatten(recipe.to_dict())
    assert all(v is not None and not isinstance(v, (dict, list)) for v in flat.values())


# Table 10 of the paper: (lambda_1 for L'_in, lambda_2 for L_out, lambda_3 for L_rel) and the
# global batch size, per model size.
TABLE_10 = {
    's12': ((1e-4, 1e-3, 1.0), 1024),
    's24': ((3e-4, 5e-3, 4.0), 1024),
    's36': ((1e-4, 1e-3, 1.0), 1024),
    'm36': ((1e-4, 1e-3, 1.0), 1024),
    'm48': ((1e-4, 1e-3, 1.0), 512),
}
PAPER_RECIPES = [ROOT / f'recipes/riformer_{size}.yaml' for size in TABLE_10]


@pytest.mark.parametrize('size', list(TABLE_10))
def test_paper_recipes_follow_table_10(size):
    r = load_recipe(ROOT / f'recipes/riformer_{size}.yaml')
    d, lambdas, batch = r.distill, *TABLE_10[size]
    assert (r.student.arch, r.student.mixer, r.student.init_from_teacher, r.student.drop_path) == \
        (f'riformer_{size}', 'affine', True, 0.1)
    assert r.teacher.arch.split('.')[0] == f'poolformer_{size}'
    # Loss: L_soft (DeiT's normalisation) + the lambdas under the `mixed` reading (L'_in and L_out
    # x global batch, L_rel a per-element mean: docs/FIDELITY.md); no CE, no hard KD, L'_in for L_in.
    assert (d.l_in_hidden.weight, d.l_out.weight, d.l_rel.weight) == lambdas
    assert d.ce.weight == d.hard.weight == d.l_in.weight == 0
    assert (d.soft.weight, d.soft.start, d.soft.end, d.soft.normalize) == (1.0, 0, None, 'numel')
    assert d.feature_reduction == 'batch_sum' and d.blocks is None
    assert (d.l_in_hidden.reduction, d.l_out.reduction, d.l_rel.reduction) == (None, None, 'mean')
    # Windows: (L'_in, L_out) 400 and L_rel 100 of 600 epochs.
    assert r.train.epochs == 600
    assert [t.end - t.start for t in (d.l_in_hidden, d.l_out, d.l_rel)] == [400, 400, 100]
    # Optimisation and data (Table 10); the global batch on the 8 processes of the launch line.
    assert r.train.batch_size * 8 * r.optim.grad_accum == batch
    assert (r.optim.lr, r.optim.weight_decay, r.optim.warmup_epochs, r.optim.clip_grad) == (1e-3, 0.05, 5, None)
    data = r.data
    assert (data.image_size, data.auto_augment, data.re_prob, data.mixup, data.cutmix, data.label_smoothing) == \
        (224, 'original', 0.25, 0.8, 1.0, 0.1)
    assert (data.re_mode, data.re_count, data.eval_crop_pct, data.eval_interpolation) == ('pixel', 1, None, None)


@pytest.mark.parametrize('path', PAPER_RECIPES, ids=lambda p: p.stem)
def test_paper_recipes_say_where_the_paper_is_ambiguous(path):
    text = path.read_text()
    for topic in ('no temperature is given', 'not placement', '"lambda x batch size"',
                  'average over the imitated blocks', 'timm has no GFNet'):
        assert topic in text, topic


@pytest.mark.parametrize('size', ['s12', 'm36'])
def test_paper_recipes_pair_up(size):
    """Four imitated blocks (one per stage, Table 4) whose outputs match in shape."""
    recipe = load_recipe(ROOT / f'recipes/riformer_{size}.yaml')
    student = timm.create_model(recipe.student.arch, num_classes=10)
    teacher = timm.create_model(recipe.teacher.arch.split('.')[0], num_classes=10)
    blocks = default_imitated_blocks(student)
    assert len(blocks) == 4
    check_pairs(student, teacher, blocks + [b + '.token_mixer' for b in blocks], 64)


def test_fidelity_table_covers_every_key_of_the_paper_recipes():
    doc = (ROOT / 'docs' / 'FIDELITY.md').read_text()
    for path in PAPER_RECIPES:
        for key in flat_keys(load_recipe(path).to_dict()):
            parts = key.split('.')
            wildcards = [f'`{".".join(parts[:i])}.*`' for i in range(1, len(parts))]
            assert f'`{key}`' in doc or any(w in doc for w in wildcards), f'{path.name}: {key} not in docs/FIDELITY.md'


def write(tmp_path, text):
    p = tmp_path / 'r.yaml'
    p.write_text(text)
    return p


@pytest.mark.parametrize('text,overrides,message', [
    ('train: {epoch: 3}\ndistill: {ce: {weight: 1}}', [], r"unknown recipe key 'train.epoch' \(did you mean train.epochs\?\)"),
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
