"""The cluttered-digits generator: deterministic, split by source digit, correctly labelled."""
import numpy as np
import pytest
from PIL import Image

from distill.clutter import ClutteredDigits, source_split
from distill.config import DataConfig, RecipeError, load_recipe
from distill.data import build_datasets, clutter_spec


def spec(**clutter):
    cfg = DataConfig(source='clutter_digits', image_size=64)
    for key, value in clutter.items():
        setattr(cfg.clutter, key, value)
    return clutter_spec(cfg)


def test_same_seed_same_images_in_any_order():
    a = ClutteredDigits('train', 40, spec(), seed=3)
    b = ClutteredDigits('train', 40, spec(), seed=3)
    forward = [a.draw(i)[0] for i in range(40)]
    backward = [b.draw(i)[0] for i in reversed(range(40))][::-1]
    for x, y in zip(forward, backward):
        np.testing.assert_array_equal(x, y)
    other = ClutteredDigits('train', 40, spec(), seed=4)
    assert any((x != other.draw(i)[0]).any() for i, x in enumerate(forward))


def test_val_never_shares_a_source_digit_with_train():
    train_pool, val_pool = source_split(1797, 0.2, seed=0)
    assert not set(train_pool) & set(val_pool)
    assert len(train_pool) + len(val_pool) == 1797
    train, val = ClutteredDigits('train', 300, spec()), ClutteredDigits('val', 300, spec())
    train_used = {s for i in range(300) for s in train.sources(i)}
    val_used = {s for i in range(300) for s in val.sources(i)}
    assert train_used <= set(train_pool) and val_used <= set(val_pool)
    assert not train_used & val_used
    assert len(val_used) > 200            # val draws from many source digits, not a few


def test_label_is_the_class_of_the_drawn_digit():
    from sklearn.datasets import load_digits
    digits = load_digits()
    clean = ClutteredDigits('val', 50, spec(clutter=0))
    for i in range(50):
        canvas, p = clean.draw(i)
        # Without clutter the canvas holds exactly the labelled digit, in its box.
        box = canvas[p.top:p.top + p.size, p.left:p.left + p.size]
        assert canvas.sum() == box.sum() > 0
        # ... and it is that source digit: shrunk back to 8x8 it is closest to its source image.
        small = np.asarray(Image.fromarray(box).resize((8, 8), Image.BILINEAR), np.float64) * 16 / 255
        distances = ((digits.images - small) ** 2).sum(axis=(1, 2))
        assert np.abs(small - digits.images[p.source]).mean() < 2.5
        assert distances[p.source] <= np.partition(distances, 5)[5]
        assert clean[i][1] == digits.target[p.source]
    cluttered = ClutteredDigits('val', 50, spec())
    labels = [cluttered[i][1] for i in range(50)]
    assert labels == [int(digits.target[cluttered.draw(i)[1].source]) for i in range(50)]
    assert labels == cluttered.targets


def test_clutter_adds_strokes_outside_the_digit():
    ds = ClutteredDigits('train', 20, spec(clutter=6))
    outside = []
    for i in range(20):
        canvas, p = ds.draw(i)
        mask = np.ones_like(canvas, bool)
        mask[p.top:p.top + p.size, p.left:p.left + p.size] = False
        outside.append(canvas[mask].sum())
    assert np.mean(np.array(outside) > 0) > 0.9


def test_recipe_source_builds_both_splits(tmp_path):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('data: {source: clutter_digits, image_size: 64, clutter: {train_images: 30, val_images: 10}}\n'
                      'distill: {ce: {weight: 1.0}}\n')
    cfg = load_recipe(recipe)
    train, val, classes = build_datasets(cfg.data, seed=0)
    assert (len(train), len(val), classes) == (30, 10, 10)
    image, label = val[0]
    assert tuple(image.shape) == (3, 64, 64) and 0 <= label < 10


@pytest.mark.parametrize('override, message', [
    ('data.clutter.digit_size=[30, 90]', 'larger than the canvas'),
    ('data.clutter.fragment_cells=[3, 9]', '8x8 cells'),
    ('data.clutter.fragment_size=[20, 10]', 'low <= high'),
])
def test_bad_clutter_settings_name_the_key(tmp_path, override, message):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('data: {source: clutter_digits, image_size: 64}\ndistill: {ce: {weight: 1.0}}\n')
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe, [override])


def test_items_are_drawn_once_and_stay_the_same():
    data = ClutteredDigits('train', 5, spec())
    first = [np.asarray(data[i][0]) for i in range(5)]
    assert len(data._canvases) == 5
    for i in range(5):
        np.testing.assert_array_equal(np.asarray(data[i][0]), first[i])
        np.testing.assert_array_equal(first[i][..., 0], data.draw(i)[0])
