"""Data transforms: the evaluation protocol of the model and DeiT's random erasing."""
import pytest
from torchvision import transforms as T

import models  # noqa: F401  (registers the RIFormer configs)
from distill.config import DataConfig, RecipeError, load_recipe
from distill.data import build_transforms

IMAGENET = dict(source='folder', path='/data/imagenet', image_size=224)


def _resize_and_crop(transform):
    resize = next(t for t in transform.transforms if isinstance(t, T.Resize))
    crop = next(t for t in transform.transforms if isinstance(t, T.CenterCrop))
    return resize.size, resize.interpolation.value, crop.size


@pytest.mark.parametrize('arch,resize', [
    ('riformer_s12', 248), ('riformer_s36', 248), ('riformer_m36', 235), ('riformer_m48', 235),   # 224 / 0.9, 224 / 0.95
    ('poolformer_s24', 248), ('poolformer_m36', 235)])
def test_evaluation_follows_the_models_own_protocol(arch, resize):
    """PoolFormer / RIFormer evaluate bicubic with crop_pct 0.9 (S) or 0.95 (M), not the
    ImageNet default 256 / 224 bilinear."""
    size, interpolation, crop = _resize_and_crop(build_transforms(DataConfig(**IMAGENET), False, arch))
    assert (size, interpolation, crop) == (resize, 'bicubic', (224, 224))


def test_recipe_overrides_the_evaluation_protocol():
    cfg = DataConfig(**IMAGENET, eval_crop_pct=0.875, eval_interpolation='bilinear')
    assert _resize_and_crop(build_transforms(cfg, False, 'riformer_s12')) == (256, 'bilinear', (224, 224))
    # Embedded sources are drawn at their size: not cropped, whatever the model.
    digits = DataConfig(source='digits', image_size=32)
    assert _resize_and_crop(build_transforms(digits, False, 'riformer_s12'))[0] == 32


def test_random_erasing_is_deits_pixel_mode():
    transform = build_transforms(DataConfig(**IMAGENET, re_prob=0.25), True)
    erasing = transform.transforms[-1]
    assert type(erasing).__name__ == 'RandomErasing'
    assert (erasing.probability, erasing.mode, erasing.max_count) == (0.25, 'pixel', 1)


@pytest.mark.parametrize('override,message', [
    ('data.re_mode=noise', "data.re_mode 'noise': use pixel"), ('data.eval_crop_pct=1.5', 'must be in'),
    ('data.eval_interpolation=cubic', 'use bicubic, bilinear or nearest')])
def test_bad_protocol_values(tmp_path, override, message):
    path = tmp_path / 'r.yaml'
    path.write_text('distill: {ce: {weight: 1}}')
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, [override])
