"""A weight EMA of the student (timm's ModelEmaV3), evaluated, kept as best and saved in its
place, and checkpointed as plain tensors so that a resumed run continues it exactly.

The decay ramps up with the update count (timm's warmup, power 3/4), so the first epochs'
average is not dominated by the initial weights: decay_t = min(decay, 1 - (1 + t)^-3/4).
"""
import copy
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from timm.utils import ModelEmaV3

from models.errors import CheckpointError

EMA_FILE = 'ema.safetensors'
WARMUP_POWER = 0.75       # timm's advice for runs of fewer than ~10k updates


def copy_without_hooks(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` with none of its hooks: the recorders hooked on the student must
    not record (or keep alive) anything when the average runs."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks,
                      module._backward_pre_hooks, module._forward_hooks_with_kwargs,
                      module._forward_pre_hooks_with_kwargs, module._forward_hooks_always_called):
            hooks.clear()
    return clone


class StudentEma:
    """The average of the student's weights (parameters and float buffers) after each optimizer
    update. Build it from the student before anything hooks or compiles that."""

    def __init__(self, student: torch.nn.Module, decay: float):
        self.average = ModelEmaV3(copy_without_hooks(student), decay=decay, use_warmup=True,
                                  warmup_power=WARMUP_POWER)
        # ModelEmaV3 copies the model it is given once more; the hook-free copy above is dropped.
        self.module.requires_grad_(False)

    @property
    def module(self) -> torch.nn.Module:
        return self.average.module

    def to(self, device, memory_format=torch.contiguous_format):
        self.module.to(device=device, memory_format=memory_format)
        return self

    def update(self, student: torch.nn.Module, num_updates: int):
        """Fold in the student's weights after optimizer update number `num_updates` (from 1)."""
        self.average.update(student, step=num_updates)

    def save(self, folder: Path):
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.module.state_dict().items()}
        save_file(tensors, str(folder / EMA_FILE))

    def load(self, folder: Path):
        """The average saved in `folder` (a checkpoint); CheckpointError when it is missing or
        does not fit the student."""
        path = folder / EMA_FILE
        if not path.is_file():
            raise CheckpointError(f'{folder}: no {EMA_FILE}, but the recipe averages the weights (optim.ema_decay); '
                                  f'resume with the recipe the run was started with')
        try:
            self.module.load_state_dict(load_file(str(path), device='cpu'))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f'{path}: does not fit the student ({first[:120]})') from None
