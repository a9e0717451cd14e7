"""Input-pipeline throughput per worker core: decode and the recipe's train augmentation, and the
trainer's DataLoader settings next to timm's own loader on the same transforms.

Two kinds of rows, all on an image folder (an ImageNet-shaped one from tools/imagenet_shaped.py
times what ImageNet would):

- per image, in this process with one torch thread (one core): decoding alone with Pillow
  (the trainer's `distill.images.open_rgb`) or `torchvision.io.decode_jpeg`; decode + the
  recipe's train transform as the trainer builds it (`distill.data.build_transforms`: random
  resized crop, flip, AutoAugment/RandAugment, to tensor, normalize, random erasing), from
  files or from a `datasets` Arrow copy of them (the trainer's hf_disk source); and the share of
  it a worker keeps under timm's prefetcher (normalize and random erasing move to the device:
  `create_transform(..., use_prefetcher=True)`).
- whole loaders with ONE worker process (so images/s is one worker core's rate) over the same
  images: the trainer's `DataLoader` with its settings, with a deeper prefetch or persistent
  workers, and timm's `create_loader` with and without its prefetcher. The first batch of an
  epoch includes starting the worker (unless it persists); the last column leaves it out.

The rows take turns (a chunk of images, or one epoch, each) and report the median and range
over the turns: on a machine other processes keep busy every rate is lower than on an idle
core and drifts with the load, which the turns spread over all rows alike.
"""
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .config import DataConfig


@dataclass
class Row:
    """One row: its rate in each round (images/s), and for loaders each epoch's wait for its
    first batch and its rate without that batch."""
    name: str
    what: str
    images: int = 0
    rates: List[float] = field(default_factory=list)
    first_batch_s: List[float] = field(default_factory=list)
    steady_rates: List[float] = field(default_factory=list)
    cpu_rates: List[float] = field(default_factory=list)    # per-image rows: images per CPU-second

    @property
    def images_per_cpu_s(self) -> Optional[float]:
        return median(self.cpu_rates) if self.cpu_rates else None

    @property
    def images_per_s(self) -> float:
        return median(self.rates)

    @property
    def steady_images_per_s(self) -> Optional[float]:
        return median(self.steady_rates) if self.steady_rates else None


def median(values: List[float]) -> float:
    return float(sorted(values)[len(values) // 2]) if len(values) % 2 else (
        float(sum(sorted(values)[len(values) // 2 - 1:len(values) // 2 + 1]) / 2) if values else math.nan)


def spread(values: List[float]) -> str:
    return f'{min(values):.0f}-{max(values):.0f}' if values else '-'


def folder_files(root: Path, split: str = 'train') -> List[str]:
    from torchvision.datasets import ImageFolder
    return [path for path, _ in ImageFolder(str(root / split)).samples]


def train_transform(cfg: DataConfig, prefetcher: bool = False):
    """The trainer's train transform (`distill.data.build_transforms`); with `prefetcher`, the
    same arguments as timm builds them for its prefetching loader (no normalize, no erasing)."""
    from timm.data import create_transform
    from .data import build_transforms, normalization
    if not prefetcher:
        return build_transforms(cfg, True)
    mean, std = normalization(cfg)
    return create_transform(cfg.image_size, is_training=True, mean=mean, std=std, hflip=cfg.hflip,
                            scale=tuple(cfg.scale), auto_augment=cfg.auto_augment, re_prob=cfg.re_prob,
                            re_mode=cfg.re_mode, re_count=cfg.re_count, interpolation='bicubic',
                            use_prefetcher=True)


def decode_pil(path):
    from .images import open_rgb
    return open_rgb(path)


def decode_tv(path):
    from torchvision.io import ImageReadMode, decode_jpeg, read_file
    return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)


def decode_tv_to_pil(path):
    from torchvision.transforms.functional import to_pil_image
    return to_pil_image(decode_tv(path))


def arrow_copy(files: List[str], folder: Path, transform):
    """`files` as a `datasets` Arrow dataset saved in `folder` (the JPEG bytes, not decoded), read
    back as the trainer's hf_disk source reads it (`distill.data.HFDataset`); and {file: index}."""
    import datasets
    from .data import HFDataset
    datasets.disable_progress_bars()
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.Value('int64')})
    rows = {'image': [{'bytes': Path(f).read_bytes(), 'path': None} for f in files], 'label': [0] * len(files)}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))
    return HFDataset(datasets.load_from_disk(str(folder)), 'image', 'label', transform), {f: i for i, f in enumerate(files)}


def per_image_rows(cfg: DataConfig, files: List[str], rounds: int = 3, arrow_folder: Optional[Path] = None) -> List[Row]:
    """Rows of work per image, in this process (run it with one torch thread); the rows take
    turns over `rounds` chunks of `files`, so that a load that changes meanwhile hits all alike.
    With `arrow_folder`, also the same images from a `datasets` Arrow copy written there."""
    torch.manual_seed(0)
    trainer_tf, prefetch_tf = train_transform(cfg), train_transform(cfg, prefetcher=True)
    work = [
        (Row('decode: Pillow', 'open_rgb (the trainer\'s loader)'), decode_pil),
        (Row('decode: torchvision', 'torchvision.io.decode_jpeg, CPU'), decode_tv),
        (Row('decode + train transform: Pillow', 'the trainer\'s worker, per image'),
         lambda p: trainer_tf(decode_pil(p))),
        (Row('decode + train transform: torchvision', 'decode_jpeg, then to PIL for timm\'s transform'),
         lambda p: trainer_tf(decode_tv_to_pil(p))),
        (Row('decode + transform, prefetcher share', 'timm prefetcher: normalize and erasing on the device'),
         lambda p: prefetch_tf(decode_pil(p))),
    ]
    if arrow_folder is not None:
        arrow, index = arrow_copy(files, arrow_folder, trainer_tf)
        work.append((Row('decode + train transform: datasets Arrow', 'the trainer\'s hf_disk source: JPEG bytes '
                         'in an Arrow file'), lambda p: arrow[index[p]]))
    for _, fn in work:
        fn(files[0])                      # warm caches and lazy imports
    chunk = max(1, len(files) // rounds)
    for r in range(rounds):
        part = files[r * chunk:(r + 1) * chunk]
        for row, fn in work:
            start, cpu = time.perf_counter(), time.process_time()
            for path in part:
                fn(path)
            row.images += len(part)
            row.rates.append(len(part) / (time.perf_counter() - start))
            row.cpu_rates.append(len(part) / (time.process_time() - cpu))
    return [row for row, _ in work]


def run_epoch(row: Row, loader):
    """One pass over `loader`, added to `row`."""
    images, steady_images, steady_s = 0, 0, 0.
    start = t = time.perf_counter()
    for i, (batch, _) in enumerate(loader):
        now = time.perf_counter()
        if i == 0:
            row.first_batch_s.append(now - t)
        else:
            steady_images += batch.shape[0]
            steady_s += now - t
        images += batch.shape[0]
        t = now
    row.images += images
    row.rates.append(images / (time.perf_counter() - start))
    if steady_s:
        row.steady_rates.append(steady_images / steady_s)


def loader_rows(cfg: DataConfig, root: Path, batch_size: int, batches: int, epochs: int = 4) -> List[Row]:
    """Loader rows with one worker over the first batch_size x batches images of train/; the
    rows take turns, one epoch each, `epochs` times."""
    from timm.data import create_loader
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from .data import EpochSampler, normalization
    from .images import open_rgb

    def dataset(transform):
        """The first batch_size x batches images of train/ (in folder order)."""
        folder = ImageFolder(str(root / cfg.train_split), transform=transform, loader=open_rgb)
        folder.samples = folder.imgs = folder.samples[:batch_size * batches]
        folder.targets = folder.targets[:batch_size * batches]
        return folder

    def trainer_loader(**settings):
        def make():
            images = dataset(train_transform(cfg))
            return DataLoader(images, batch_size, sampler=EpochSampler(len(images), 0), drop_last=True,
                              num_workers=1, **settings)
        return make

    mean, std = normalization(cfg)

    def timm_loader(prefetcher: bool):
        def make():       # create_loader builds the transform itself from the same arguments
            return create_loader(
                dataset(None), cfg.image_size, batch_size, is_training=True, re_prob=cfg.re_prob,
                re_mode=cfg.re_mode, re_count=cfg.re_count, scale=tuple(cfg.scale), hflip=cfg.hflip,
                auto_augment=cfg.auto_augment, interpolation='bicubic', mean=mean, std=std, num_workers=1,
                use_prefetcher=prefetcher, device=torch.device('cpu'), persistent_workers=True)
        return make

    rows = [
        (Row('trainer DataLoader', 'the trainer\'s settings: pin off, workers per epoch, prefetch 2'),
         trainer_loader()),
        (Row('trainer + prefetch_factor 4', 'four batches in flight per worker instead of two'),
         trainer_loader(prefetch_factor=4)),
        (Row('trainer + persistent_workers', 'the worker lives across epochs'),
         trainer_loader(persistent_workers=True)),
        (Row('timm create_loader, prefetcher off', 'the same transforms in the worker; timm\'s sampler, '
             'collate, persistent workers'), timm_loader(False)),
        (Row('timm create_loader, prefetcher on', 'uint8 batches; normalize and erasing in the consumer '
             '(on the GPU in a GPU run)'), timm_loader(True)),
    ]
    loaders = [(row, make()) for row, make in rows]
    for epoch in range(epochs):          # the rows take turns, one epoch each
        for row, loader in loaders:
            if isinstance(loader.sampler, EpochSampler):
                loader.sampler.set_epoch(epoch)
            run_epoch(row, loader)
    return [row for row, _ in loaders]


def workers_needed(rate_per_core: float, targets=(1000., 1500.)) -> Dict[float, int]:
    """Worker cores one GPU needs to be fed `target` images/s at `rate_per_core` each."""
    return {t: math.ceil(t / rate_per_core) for t in targets}


def table(rows: List[Row]) -> str:
    lines = ['| row | what | images | images/s, median (range) | images per CPU-second | first batch of each '
             'epoch (s) | images/s after the first batch |', '|---|---|---:|---:|---:|---|---:|']
    for r in rows:
        first = ', '.join(f'{s:.2f}' for s in r.first_batch_s) or '-'
        steady = (f'{r.steady_images_per_s:.0f} ({spread(r.steady_rates)})' if r.steady_images_per_s is not None
                  else '-')
        cpu = f'{r.images_per_cpu_s:.0f}' if r.images_per_cpu_s is not None else '-'
        lines.append(f'| {r.name} | {r.what} | {r.images} | {r.images_per_s:.0f} ({spread(r.rates)}) | {cpu} | {first} | '
                     f'{steady} |')
    return '\n'.join(lines)


def arithmetic(rows: List[Row]) -> str:
    """How many worker cores one GPU needs at the imitation step's rate: a worker core's rate is
    the per-image rows' images per CPU-second (what one core does with nothing else on it) times
    the loader's efficiency (the trainer's DataLoader row over the in-process row of the same
    work, both wall-clock under the same load: collation, moving batches between processes)."""
    by_name = {r.name: r for r in rows}
    loader, alone = by_name.get('trainer DataLoader'), by_name.get('decode + train transform: Pillow')
    efficiency = min(1., loader.images_per_s / alone.images_per_s) if loader and alone else 1.
    lines = [f'loader efficiency {efficiency:.2f} (trainer DataLoader {loader.images_per_s:.0f} img/s / the same work '
             f'in-process {alone.images_per_s:.0f} img/s)' if loader and alone else 'loader efficiency: not measured', '',
             '| worker does | images per CPU-second | x efficiency | cores for 1,000 img/s | cores for 1,500 img/s |',
             '|---|---:|---:|---:|---:|']
    for name in ('decode + train transform: Pillow', 'decode + train transform: torchvision',
                 'decode + train transform: datasets Arrow', 'decode + transform, prefetcher share'):
        if name in by_name and by_name[name].images_per_cpu_s:
            rate = by_name[name].images_per_cpu_s * efficiency
            need = workers_needed(rate)
            lines.append(f'| {name} | {by_name[name].images_per_cpu_s:.0f} | {rate:.0f} | {need[1000.]} | {need[1500.]} |')
    return '\n'.join(lines)
