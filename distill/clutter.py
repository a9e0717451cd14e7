"""Cluttered digits: a task built from scikit-learn's digits in which spatial aggregation matters.

Each image is a `canvas` x `canvas` grey picture holding one whole digit (the label) at a random
position and size, over `clutter` fragments cut from other digits: random sub-rectangles of
other digit images, rescaled and pasted at random places. A fragment is a piece of stroke that
looks locally like part of a digit, so no single small patch tells the class: the model has to
gather evidence over the digit's whole extent and tell the whole digit from the pieces.

Everything is deterministic: the source digits are split into train / val by `seed` (a val
image never reuses a source digit of train, neither as the labelled digit nor as clutter), and
image `i` of a split depends only on (seed, split, i), not on the order images are read in.
"""
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

SPLIT_IDS = {'train': 0, 'val': 1}


@dataclass(frozen=True)
class ClutterSpec:
    """How an image is drawn (a recipe's `data.clutter` section and `data.image_size`, whose
    defaults are in distill/config.py). Sizes in pixels, ranges inclusive."""
    canvas: int                      # image side
    digit_size: Tuple[int, int]      # side of the labelled digit
    clutter: int                     # fragments per image
    fragment_cells: Tuple[int, int]  # fragment side in digit cells (a digit is 8x8 cells)
    fragment_size: Tuple[int, int]   # side of a pasted fragment


@dataclass
class Placement:
    """Where the labelled digit went (its source index in scikit-learn's digits and its box),
    and the source indices the clutter fragments were cut from."""
    source: int
    top: int
    left: int
    size: int
    clutter_sources: List[int]


def source_split(n: int, val_fraction: float, seed: int):
    """Indices of scikit-learn's digits for (train, val): disjoint, fixed by `seed`."""
    order = np.random.RandomState(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _paste_max(canvas: np.ndarray, piece: np.ndarray, top: int, left: int):
    """Draw `piece` onto `canvas` keeping the brighter pixel (strokes are bright on black),
    so a later piece never erases an earlier stroke and no paste order hides the digit."""
    h, w = piece.shape
    region = canvas[top:top + h, left:left + w]
    np.maximum(region, piece, out=region)


def _resize(cells: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """8x8 grey levels (0..16) -> uint8 picture of (height, width) by bilinear upsampling."""
    image = Image.fromarray((cells * (255 / 16)).astype(np.uint8))
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR))


def render(index: int, split: str, pool: np.ndarray, images: np.ndarray, spec: ClutterSpec,
           seed: int) -> Tuple[np.ndarray, Placement]:
    """Draw image `index` of `split` from the source digits `pool` (indices into `images`)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    canvas = np.zeros((spec.canvas, spec.canvas), np.uint8)
    clutter_sources = []
    for _ in range(spec.clutter):
        clutter_sources.append(int(pool[rng.integers(len(pool))]))
        cells = images[clutter_sources[-1]]
        ch, cw = rng.integers(spec.fragment_cells[0], spec.fragment_cells[1] + 1, size=2)
        r0, c0 = rng.integers(0, 8 - ch + 1), rng.integers(0, 8 - cw + 1)
        side = int(rng.integers(spec.fragment_size[0], spec.fragment_size[1] + 1))
        # Keep the fragment's cell aspect so a stroke piece is not stretched into a new shape.
        size = (max(2, round(side * ch / max(ch, cw))), max(2, round(side * cw / max(ch, cw))))
        piece = _resize(cells[r0:r0 + ch, c0:c0 + cw], size)
        top = int(rng.integers(0, spec.canvas - size[0] + 1))
        left = int(rng.integers(0, spec.canvas - size[1] + 1))
        _paste_max(canvas, piece, top, left)
    source = int(pool[rng.integers(len(pool))])
    size = int(rng.integers(spec.digit_size[0], spec.digit_size[1] + 1))
    top, left = (int(v) for v in rng.integers(0, spec.canvas - size + 1, size=2))
    _paste_max(canvas, _resize(images[source], (size, size)), top, left)
    return canvas, Placement(source, top, left, size, clutter_sources)


class ClutteredDigits(Dataset):
    """`length` cluttered-digit images of `split` ('train' or 'val') as RGB PIL images."""
    num_classes = 10

    def __init__(self, split: str, length: int, spec: ClutterSpec, val_fraction: float = 0.2,
                 seed: int = 0, transform=None):
        if split not in SPLIT_IDS:
            raise ValueError(f'split {split!r}: use train or val')
        from sklearn.datasets import load_digits
        digits = load_digits()
        self.images, self.labels = digits.images, digits.target
        train_pool, val_pool = source_split(len(self.labels), val_fraction, seed)
        self.pool = train_pool if split == 'train' else val_pool
        self.split, self.length, self.spec, self.seed = split, length, spec, seed
        self.transform = transform
        # Drawn canvases, kept: an image depends only on its index, and drawing it costs as much as
        # the training transforms (64 px canvas: 4 KiB an image, 40 MiB for 10,000).
        self._canvases = {}

    def __len__(self):
        return self.length

    def draw(self, i: int) -> Tuple[np.ndarray, Placement]:
        """The grey canvas of image `i` and where its labelled digit is (drawn once, then kept)."""
        if not 0 <= i < self.length:
            raise IndexError(i)
        if i not in self._canvases:
            self._canvases[i] = render(i, self.split, self.pool, self.images, self.spec, self.seed)
        return self._canvases[i]

    def sources(self, i: int) -> List[int]:
        """Every source digit image `i` draws from (clutter and the labelled digit)."""
        placement = self.draw(i)[1]
        return placement.clutter_sources + [placement.source]

    @property
    def targets(self) -> List[int]:
        return [int(self.labels[self.draw(i)[1].source]) for i in range(self.length)]

    def __getitem__(self, i):
        canvas, placement = self.draw(i)
        image = Image.fromarray(canvas).convert('RGB')
        return (self.transform(image) if self.transform else image), int(self.labels[placement.source])
