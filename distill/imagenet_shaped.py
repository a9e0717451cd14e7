"""An ImageNet-shaped image folder on demand: rehearsal data, never accuracy data.

`write_folder` writes `train/` and `val/` class folders of JPEGs (the layout the trainer's
`data.source: folder` reads) whose sizes, aspect ratios and JPEG qualities spread like
ImageNet-1k's, so that decoding and augmenting them costs what ImageNet's do. Their content is
smooth multi-scale colour noise with grain (not trivially compressible: about 85 kB a file on
average, ImageNet's train files about 110 kB),
and their labels are the folder names only: nothing in an image says its class, so a model
trained on them learns nothing. Use them to time and size a run (input pipeline, memory,
checkpoints, resume), never to report an accuracy.

The size model (ImageNet-like, not a fit to ImageNet's own table): the long side is 500 px for
70 % of the images (as in ImageNet, whose photos were mostly stored at 500 px), otherwise
log-normal around 400 px within [120, 1600]; the aspect ratio (width / height) is 4:3 for 45 %,
3:2 for 15 %, 1:1 for 10 %, 3:4 for 15 %, 2:3 for 7 % and log-uniform in [1/2, 2] for the rest;
the JPEG quality is uniform in [75, 95] with 4:2:0 chroma subsampling. A 500 x 375 image is the
most common single size.

Every image is drawn from its own generator seeded by (seed, split, index), so a folder is the
same for the same arguments on any machine and number of jobs.
"""
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, List, Tuple

import numpy as np
from PIL import Image

MANIFEST = 'imagenet_shaped.json'
NOTE = 'README.txt'
QUALITY = (75, 95)
LONG_SIDE = (120, 1600)
# (width / height, probability); the remainder is log-uniform in [1/2, 2]
ASPECTS = ((4 / 3, 0.45), (3 / 2, 0.15), (1.0, 0.10), (3 / 4, 0.15), (2 / 3, 0.07))
SPLITS = ('train', 'val')


class ShapeError(ValueError):
    """Arguments that cannot make a folder (one line)."""


@dataclass(frozen=True)
class FolderSpec:
    train_images: int = 2000
    val_images: int = 1000
    classes: int = 1000
    seed: int = 0

    def check(self) -> 'FolderSpec':
        if self.classes < 1:
            raise ShapeError(f'--classes {self.classes}: give at least 1')
        for split, n in (('train', self.train_images), ('val', self.val_images)):
            if n < self.classes:
                # an image folder reader refuses a class folder without images
                raise ShapeError(f'--{split}-images {n}: every class needs at least one image, give at least '
                                 f'{self.classes} (--classes) or fewer classes')
        if self.seed < 0:
            raise ShapeError(f'--seed {self.seed}: give a non-negative integer')
        return self

    def count(self, split: str) -> int:
        return self.train_images if split == 'train' else self.val_images


def class_names(classes: int) -> List[str]:
    """ImageNet-like folder names (n00000000, n00000001, ...), sorted as an image folder sorts them."""
    return [f'n{i:08d}' for i in range(classes)]


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


def draw_shape(rng: np.random.Generator) -> Tuple[int, int, int]:
    """(width, height, JPEG quality) of one image, from the size model in the module docstring."""
    u = rng.random()
    aspect = None
    for ratio, p in ASPECTS:
        if u < p:
            aspect = ratio
            break
        u -= p
    if aspect is None:
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    if rng.random() < 0.70:
        long_side = 500
    else:
        long_side = int(np.clip(round(400 * math.exp(0.35 * rng.standard_normal())), *LONG_SIDE))
    if aspect >= 1:
        width, height = long_side, max(1, round(long_side / aspect))
    else:
        width, height = max(1, round(long_side * aspect)), long_side
    quality = int(rng.integers(QUALITY[0], QUALITY[1] + 1))
    return width, height, quality


def draw_pixels(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Smooth colour noise over three scales plus a little pixel grain: structure at every
    frequency, so that JPEG cannot shrink it to nothing and decoding costs as a photo's does."""
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    for cell, amplitude in ((48, 0.5), (12, 0.3), (2, 0.2)):
        w, h = max(2, width // cell + 2), max(2, height // cell + 2)
        coarse = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        layer = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        canvas += amplitude * np.asarray(layer, dtype=np.float32)
    canvas += rng.normal(0, 14, size=(height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def plan(spec: FolderSpec, split: str) -> Iterator[Tuple[int, str]]:
    """(index, class name) of each image of a split: classes in turn, so every class gets
    images and the counts differ by at most one."""
    names = class_names(spec.classes)
    for index in range(spec.count(split)):
        yield index, names[index % spec.classes]


def relative_path(split: str, name: str, index: int) -> str:
    return f'{split}/{name}/{name}_{index}.JPEG'


def write_image(root: Path, spec: FolderSpec, split: str, index: int, name: str) -> Tuple[int, int, int, int]:
    """Write one image; (width, height, quality, bytes)."""
    rng = image_rng(spec.seed, split, index)
    width, height, quality = draw_shape(rng)
    path = root / relative_path(split, name, index)
    draw_pixels(rng, width, height).save(path, 'JPEG', quality=quality, subsampling='4:2:0')
    return width, height, quality, path.stat().st_size


def _write_chunk(args):
    root, spec, split, items = args
    return [write_image(Path(root), spec, split, index, name) for index, name in items]


def existing_spec(root: Path):
    """The FolderSpec a complete folder at `root` was written with, None if it holds none."""
    try:
        return FolderSpec(**json.loads((root / MANIFEST).read_text())['spec'])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_folder(root, spec: FolderSpec, jobs: int = 1, log=None) -> dict:
    """Write the folder (train/ and val/ class folders, README.txt, and the manifest last, which
    marks it complete); returns the manifest. A complete folder of the same spec is left as it
    is; any other non-empty folder is refused."""
    spec.check()
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ShapeError(f'{root} is a file; give a folder to write')
    if root.is_dir() and any(root.iterdir()):
        if existing_spec(root) == spec:
            return json.loads((root / MANIFEST).read_text())
        raise ShapeError(f'{root} is not empty (and not a folder of these arguments); give a new or empty folder')
    for split in SPLITS:
        for name in class_names(spec.classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in SPLITS:
        items = list(plan(spec, split))
        chunks = [(str(root), spec, split, items[i:i + 64]) for i in range(0, len(items), 64)]
        if jobs > 1:
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(jobs) as pool:
                rows = [r for chunk in pool.map(_write_chunk, chunks) for r in chunk]
        else:
            rows = []
            for chunk in chunks:
                rows += _write_chunk(chunk)
                if log:
                    log(f'{split}: {len(rows)}/{len(items)} images')
        stats[split] = summarize(rows)
    (root / NOTE).write_text(
        'Rehearsal data, never accuracy data: ImageNet-shaped JPEGs (sizes, aspect ratios, JPEG quality)\n'
        'of smooth colour noise, written by tools/imagenet_shaped.py. The class of an image is its\n'
        'folder name only; nothing in the pixels says it. Use it to time and size a run, not to\n'
        'measure what a model learns.\n')
    manifest = {'spec': asdict(spec), 'stats': stats, 'note': 'rehearsal data, never accuracy data'}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def summarize(rows) -> dict:
    """Sizes, qualities and file sizes of written images: (width, height, quality, bytes) rows."""
    a = np.asarray(rows, dtype=np.float64)
    pixels = a[:, 0] * a[:, 1]
    return {'images': len(rows), 'mean_width': round(float(a[:, 0].mean()), 1),
            'mean_height': round(float(a[:, 1].mean()), 1),
            'median_pixels': int(np.median(pixels)),
            'share_500x375': round(float(np.mean((a[:, 0] == 500) & (a[:, 1] == 375))), 3),
            'quality_range': [int(a[:, 2].min()), int(a[:, 2].max())],
            'mean_kb': round(float(a[:, 3].mean() / 1024), 1),
            'total_mb': round(float(a[:, 3].sum() / 2 ** 20), 1)}
