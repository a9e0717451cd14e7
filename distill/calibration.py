"""Calibration images for int8 post-training quantization (`models.quantize`): a few hundred
images of the user's own data, preprocessed exactly as evaluation preprocesses them.

    batches = calibration_batches('recipes/clutter/imitation.yaml', count=256)   # a recipe's data
    batches = calibration_batches('/data/my_images', count=256, image_size=224)   # a folder

A recipe gives its training split (never the validation split the accuracy is measured on)
through its *evaluation* transform: calibration must see the activations deployment sees, not
augmented ones. A folder is any tree of image files (ImageNet-style class folders or flat),
resized and centre-cropped as the model's timm config says, with ImageNet's mean and std.
The images are drawn with a fixed seed, so two calibrations of one model give one int8 model.
"""
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

import torch

from models.errors import UsageError

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.ppm', '.tif', '.tiff')


def calibration_batches(source, count: int = 256, batch_size: int = 32, image_size: Optional[int] = None,
                        arch: Optional[str] = None, seed: int = 0) -> List[torch.Tensor]:
    """`count` preprocessed images of `source` (a recipe YAML file or a folder of images) in
    fp32 batches of `batch_size`. `image_size` overrides the recipe's (required for a folder);
    `arch` picks the evaluation protocol (default: the recipe's student)."""
    path = Path(source)
    if count < 1 or batch_size < 1:
        raise UsageError('calibration needs at least one image and a positive batch size')
    if path.is_file() and path.suffix in ('.yaml', '.yml'):
        dataset = _recipe_images(path, image_size, arch)
    elif path.is_dir():
        if image_size is None:
            raise UsageError(f'{path}: calibrating on a folder needs the image size (--image-size)')
        dataset = _folder_images(path, image_size, arch)
    else:
        raise UsageError(f'{source}: calibration data must be a recipe (.yaml) or a folder of images')
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=g)[:count].tolist()
    images = [dataset[i][0] for i in order]
    return [torch.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]


def _recipe_images(path: Path, image_size, arch):
    from .config import load_recipe
    from .data import build_datasets, build_transforms
    recipe = load_recipe(path)
    data = replace(recipe.data, label_fraction=1.0)
    if image_size is not None:
        data = replace(data, image_size=image_size)
    arch = arch or recipe.student.arch
    train, _, _ = build_datasets(data, recipe.train.seed, arch)
    # The training split through the evaluation transform: deployment's activations.
    train.transform = build_transforms(data, False, arch)
    if len(train) == 0:
        raise UsageError(f'{path}: the recipe\'s training split is empty')
    return train


class _ImageFiles(torch.utils.data.Dataset):
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from .images import open_rgb
        return self.transform(open_rgb(self.files[i])), -1


def _folder_images(root: Path, image_size: int, arch):
    from .config import DataConfig
    from .data import build_transforms
    files = sorted(p for p in root.rglob('*') if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UsageError(f'{root}: no image files ({", ".join(IMAGE_SUFFIXES)}) under this folder')
    transform = build_transforms(DataConfig(source='folder', image_size=image_size), False, arch)
    return _ImageFiles(files, transform)
