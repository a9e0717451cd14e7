"""One benchmark row (`Case`), what every row is built and timed with (`Settings`), and the
seeded input batch they share. A module of its own so that the row families (cases.py,
deploy.py, training.py) all import it and none imports another."""
from dataclasses import dataclass
from typing import Callable

import torch

from models.errors import UsageError
from models.precision import DTYPES as DEPLOY_DTYPES

# The deploy forms' precisions, and fp16 for GPU rows (no fp16 deploy form is saved on a CPU).
DTYPES = {**DEPLOY_DTYPES, 'fp16': torch.float16}


class BenchmarkError(UsageError):
    """Bad input: reported as one `error:` line and exit code 2."""


@dataclass
class Settings:
    """What every case is built and timed with (from the command line)."""
    img_size: int = 224
    device: str = 'cpu'
    dtype: str = 'fp32'
    channels_last: bool = False
    compile: bool = False
    threads: int = 1
    num_classes: int = 1000
    teacher_precision: str = 'auto'         # training rows' 'imitation-step' teacher: fp32 | bf16 | auto
    train_layout: str = 'channels_last'     # training rows: channels_last (the trainer's default) | nchw

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def check(self) -> 'Settings':
        """Raise BenchmarkError for a device / dtype pair that cannot run here."""
        device = self.device
        if device != 'cpu' and not device.startswith('cuda'):
            raise BenchmarkError(f'unknown device {device!r}; use cpu or cuda[:N]')
        if device.startswith('cuda') and not torch.cuda.is_available():
            raise BenchmarkError(f'device {device!r} asked for, but CUDA is not available here')
        if self.dtype == 'fp16' and device == 'cpu':
            raise BenchmarkError('fp16 needs --device cuda; use bf16 or fp32 on CPU')
        if self.teacher_precision not in ('fp32', 'bf16', 'auto'):
            raise BenchmarkError(f'teacher precision {self.teacher_precision!r}: use fp32, bf16 or auto')
        if self.train_layout not in ('channels_last', 'nchw'):
            raise BenchmarkError(f'train layout {self.train_layout!r}: use channels_last or nchw')
        return self


Step = Callable[[], object]


@dataclass
class Case:
    """One table row: a model in one form. `make(settings, batch)` builds everything the row
    needs and returns the step to time (one call = one batch). Rows sharing a `group` share the
    speedup baselines: the case with role 'poolformer' and the one with role 'plain'."""
    model: str
    form: str
    group: str
    make: Callable[[Settings, int], Step]
    role: str = ''


def random_images(settings: Settings, batch: int) -> torch.Tensor:
    # Seeded, so that every row of a run sees the same batch.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, settings.img_size, settings.img_size, generator=g)
    x = x.to(settings.device, settings.torch_dtype)
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x
