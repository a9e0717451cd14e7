"""Datasets and loaders: the embedded digits set, an image folder, or a `datasets` dataset.

Digits (scikit-learn's 1,797 8x8 handwritten digits, shipped inside the package) is the CPU
default: upsampled to `image_size` RGB images, split into train/val with a fixed seed.
"""
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
import timm
from timm.data import DEFAULT_CROP_PCT, Mixup, create_transform
from torch.utils.data import Dataset

from .clutter import ClutteredDigits, ClutterSpec
from .config import EMBEDDED_SOURCES, DataConfig, RecipeError

# Digits is not ImageNet: its images are centred grey strokes; these are its own statistics
# after scaling to [0, 1] (so the network sees zero-mean, unit-variance inputs).
DIGITS_MEAN, DIGITS_STD = (0.3, 0.3, 0.3), (0.38, 0.38, 0.38)
# Cluttered digits are mostly black canvas: measured over 2,000 training images.
CLUTTER_MEAN, CLUTTER_STD = (0.15, 0.15, 0.15), (0.28, 0.28, 0.28)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DigitsDataset(Dataset):
    """scikit-learn's digits as PIL images; `split` is 'train' or 'val'."""
    num_classes = 10

    def __init__(self, split: str, image_size: int, val_fraction: float = 0.2, seed: int = 0, transform=None):
        from sklearn.datasets import load_digits
        digits = load_digits()
        order = np.random.RandomState(seed).permutation(len(digits.target))
        n_val = int(round(len(order) * val_fraction))
        index = order[:n_val] if split == 'val' else order[n_val:]
        # 0..16 grey levels -> 0..255, upsampled once here rather than per epoch.
        self.images = [Image.fromarray((digits.images[i] * (255 / 16)).astype(np.uint8))
                       .resize((image_size, image_size), Image.BILINEAR).convert('RGB') for i in index]
        self.targets = [int(digits.target[i]) for i in index]
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        image = self.images[i]
        return (self.transform(image) if self.transform else image), self.targets[i]


class HFDataset(Dataset):
    """A `datasets` split with an image column and a label column."""

    def __init__(self, split, image_column, label_column, transform=None):
        self.split, self.image_column, self.label_column = split, image_column, label_column
        missing = {image_column, label_column} - set(split.column_names)
        if missing:
            raise RecipeError(f'dataset has no column(s) {sorted(missing)} (columns: {split.column_names}); '
                              f'set data.image_column / data.label_column')
        self.targets = list(split[label_column])
        feature = split.features[label_column]
        self.num_classes = getattr(feature, 'num_classes', None) or (max(self.targets) + 1)
        self.transform = transform

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        image = self.split[i][self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        image = image.convert('RGB')
        return (self.transform(image) if self.transform else image), self.targets[i]


class LabelMasked(Dataset):
    """Hides the labels of all but `fraction` of the images (label -1): CE skips them,
    distillation still sees the image. The labelled subset is fixed by `seed`."""

    def __init__(self, dataset, fraction: float, seed: int):
        self.dataset = dataset
        n = len(dataset)
        keep = np.random.RandomState(seed).permutation(n)[:max(1, int(round(n * fraction)))]
        self.labelled = np.zeros(n, dtype=bool)
        self.labelled[keep] = True

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, target = self.dataset[i]
        return image, (target if self.labelled[i] else -1)


def normalization(cfg: DataConfig):
    return {'digits': (DIGITS_MEAN, DIGITS_STD), 'clutter_digits': (CLUTTER_MEAN, CLUTTER_STD)}.get(
        cfg.source, (IMAGENET_MEAN, IMAGENET_STD))


def eval_protocol(cfg: DataConfig, arch: Optional[str]) -> Tuple[float, str]:
    """(crop_pct, interpolation) of evaluation: the recipe's if set; else the model's pretrained
    config in timm (PoolFormer / RIFormer: 0.9 for S sizes, 0.95 for M, bicubic); embedded
    sources are drawn at their size and not cropped."""
    pretrained = timm.models.get_pretrained_cfg(arch) if arch else None
    crop_pct = cfg.eval_crop_pct
    if crop_pct is None:
        crop_pct = 1.0 if cfg.source in EMBEDDED_SOURCES else getattr(pretrained, 'crop_pct', None) or DEFAULT_CROP_PCT
    interpolation = cfg.eval_interpolation or getattr(pretrained, 'interpolation', None) or 'bicubic'
    return crop_pct, interpolation


def build_transforms(cfg: DataConfig, training: bool, arch: Optional[str] = None):
    """timm transforms; evaluation follows `eval_protocol` for the model `arch`."""
    mean, std = normalization(cfg)
    if not training:
        crop_pct, interpolation = eval_protocol(cfg, arch)
        return create_transform(cfg.image_size, is_training=False, mean=mean, std=std,
                                crop_pct=crop_pct, interpolation=interpolation)
    return create_transform(
        cfg.image_size, is_training=True, mean=mean, std=std, hflip=cfg.hflip,
        scale=tuple(cfg.scale), auto_augment=cfg.auto_augment, re_prob=cfg.re_prob,
        re_mode=cfg.re_mode, re_count=cfg.re_count, interpolation='bicubic')


def clutter_spec(cfg: DataConfig) -> ClutterSpec:
    c = cfg.clutter
    return ClutterSpec(cfg.image_size, tuple(c.digit_size), c.clutter, tuple(c.fragment_cells), tuple(c.fragment_size))


def build_datasets(cfg: DataConfig, seed: int, arch: Optional[str] = None) -> Tuple[Dataset, Dataset, int]:
    """(train, val, num_classes); train labels masked when label_fraction < 1; the validation
    transform follows the evaluation protocol of the model `arch` (`eval_protocol`)."""
    train_tf, val_tf = build_transforms(cfg, True), build_transforms(cfg, False, arch)
    if cfg.source == 'digits':
        train = DigitsDataset('train', cfg.image_size, cfg.val_fraction, cfg.split_seed, transform=train_tf)
        val = DigitsDataset('val', cfg.image_size, cfg.val_fraction, cfg.split_seed, transform=val_tf)
        num_classes = DigitsDataset.num_classes
    elif cfg.source == 'clutter_digits':
        spec, c = clutter_spec(cfg), cfg.clutter
        train = ClutteredDigits('train', c.train_images, spec, cfg.val_fraction, cfg.split_seed, transform=train_tf)
        val = ClutteredDigits('val', c.val_images, spec, cfg.val_fraction, cfg.split_seed, transform=val_tf)
        num_classes = ClutteredDigits.num_classes
    elif cfg.source == 'folder':
        train, val, num_classes = _folder(cfg, train_tf, val_tf)
    else:
        train, val, num_classes = _hf(cfg, train_tf, val_tf)
    train, val = fixed_subset(train, cfg.max_train_images), fixed_subset(val, cfg.max_val_images)
    if cfg.label_fraction < 1:
        train = LabelMasked(train, cfg.label_fraction, seed)
    return train, val, num_classes


def fixed_subset(dataset: Dataset, size: Optional[int]) -> Dataset:
    """`size` images of `dataset`, the same ones for every seed and process (a draw of seed 0,
    in dataset order); the dataset itself when `size` is None or not smaller."""
    if size is None or size >= len(dataset):
        return dataset
    keep = np.sort(np.random.RandomState(0).permutation(len(dataset))[:size])
    return torch.utils.data.Subset(dataset, keep.tolist())


def data_path_problems(cfg: DataConfig) -> List[str]:
    """What is wrong with data.path, all at once, before anything is loaded."""
    if cfg.source not in ('folder', 'hf_disk') or not cfg.path:
        return []
    root = Path(cfg.path)
    wanted = (f'a folder with {cfg.train_split}/ and {cfg.val_split}/ class subfolders (ImageNet layout)'
              if cfg.source == 'folder' else 'a `datasets` DatasetDict saved with save_to_disk')
    if not root.exists():
        return [f'data.path {root} does not exist; set data.path=DIR to {wanted}']
    if not root.is_dir():
        return [f'data.path {root} is not a directory; set data.path=DIR to {wanted}']
    if cfg.source == 'hf_disk':
        return []
    problems = []
    for split in (cfg.train_split, cfg.val_split):
        if not (root / split).is_dir():
            there = sorted(p.name for p in root.iterdir() if p.is_dir())[:6]
            problems.append(f'data.path {root}: no {split}/ folder of class subfolders (folders there: '
                            f'{", ".join(there) or "none"}; set data.train_split / data.val_split)')
        elif not any(p.is_dir() for p in (root / split).iterdir()):
            problems.append(f'data.path {root}: {split}/ has no class subfolders (one folder of images per class)')
    return problems


def _folder(cfg, train_tf, val_tf):
    from torchvision.datasets import ImageFolder
    root = Path(cfg.path)
    for split in (cfg.train_split, cfg.val_split):
        if not (root / split).is_dir():
            raise RecipeError(f'data.path {root}: no {split}/ folder of class subfolders '
                              f'(set data.train_split / data.val_split)')
    from .images import open_rgb
    train = ImageFolder(str(root / cfg.train_split), transform=train_tf, loader=open_rgb)
    val = ImageFolder(str(root / cfg.val_split), transform=val_tf, loader=open_rgb)
    if train.classes != val.classes:
        raise RecipeError(f'data.path {root}: train and val class folders differ')
    return train, val, len(train.classes)


def _hf(cfg, train_tf, val_tf):
    import datasets
    if cfg.source == 'hf_disk':
        if not Path(cfg.path).is_dir():
            raise RecipeError(f'data.path {cfg.path}: no such directory (a dataset saved with save_to_disk)')
        ds = datasets.load_from_disk(cfg.path)
    else:
        ds = datasets.load_dataset(cfg.path)
    if not isinstance(ds, datasets.DatasetDict):
        raise RecipeError(f'data.path {cfg.path}: need a DatasetDict with {cfg.train_split}/{cfg.val_split} splits')
    for split in (cfg.train_split, cfg.val_split):
        if split not in ds:
            raise RecipeError(f'data.path {cfg.path}: no split {split!r} (splits: {list(ds)})')
    train = HFDataset(ds[cfg.train_split], cfg.image_column, cfg.label_column, train_tf)
    val = HFDataset(ds[cfg.val_split], cfg.image_column, cfg.label_column, val_tf)
    return train, val, train.num_classes


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle that depends only on (seed, epoch): a resumed run draws the same order."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def loader_settings(cfg: DataConfig, device: torch.device) -> dict:
    """The DataLoader keywords of the recipe's data section: workers, and pinned memory only
    when the batches go to a CUDA device (on a CPU there is no host-to-device copy to overlap)."""
    settings = {'num_workers': cfg.num_workers, 'pin_memory': cfg.pin_memory and device.type == 'cuda'}
    if cfg.num_workers > 0:
        settings['persistent_workers'] = cfg.persistent_workers
        if cfg.prefetch_factor is not None:
            settings['prefetch_factor'] = cfg.prefetch_factor
    return settings


def worker_shortfall(cfg: DataConfig, local_processes: int, cores: int) -> Optional[str]:
    """A note when the loader workers of this machine's training processes, and the processes
    themselves, want more cores than it has: the workers then share cores and feed fewer images/s
    than the recipe assumes (docs/RESULTS.md, the ImageNet-scale rehearsal: how many worker cores
    one GPU needs)."""
    wanted = local_processes * (cfg.num_workers + 1)
    if cfg.num_workers == 0 or wanted <= cores:
        return None
    fit = cores // local_processes - 1
    advice = (f'data.num_workers={fit} fits' if fit >= 1 else
              'not even one worker per process fits, so the steps will wait for data')
    return (f'note: {local_processes} training process(es) x {cfg.num_workers} loader workers want {wanted} cores with '
            f'the processes themselves, this machine has {cores}: the workers share cores and deliver fewer images/s; '
            f'{advice}')


def build_mixup(cfg: DataConfig, num_classes: int):
    if not (cfg.mixup or cfg.cutmix):
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                 num_classes=num_classes)
