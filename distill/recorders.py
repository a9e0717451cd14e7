"""Feature recorders (mmrazor's idea): module outputs captured by forward hooks, by name.

The recorded tensors are the modules' own outputs, kept by reference (no copies). That is
safe because RIFormer/PoolFormer blocks never modify a tensor in place after producing it;
`check_not_modified` in the tests guards that assumption.
"""
import difflib
from typing import Dict, List, Sequence

import torch
import torch.nn as nn

from .config import RecipeError


class FeatureRecorder:
    """Keeps the latest output of each named submodule of `model`."""

    def __init__(self, model: nn.Module, names: Sequence[str], owner: str = 'model'):
        modules = dict(model.named_modules())
        for name in names:
            if name not in modules:
                close = difflib.get_close_matches(name, list(modules), n=3, cutoff=0.6)
                hint = f'; close matches: {", ".join(close)}' if close else ''
                raise RecipeError(f'{owner} has no module {name!r}{hint}')
        self.names = list(names)
        self.outputs: Dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name):
        def hook(module, args, output):
            self.outputs[name] = output
        return hook

    def clear(self):
        self.outputs = {}

    def take(self) -> List[torch.Tensor]:
        """The recorded outputs in declaration order; clears the recorder."""
        missing = [n for n in self.names if n not in self.outputs]
        if missing:
            raise RuntimeError(f'no output recorded for {missing}: the forward pass skipped them')
        out = [self.outputs[n] for n in self.names]
        self.clear()
        return out

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def default_imitated_blocks(model: nn.Module) -> List[str]:
    """The paper's best setting: the last block of each stage (4 layers for 4 stages)."""
    names = []
    for i, stage in enumerate(model.stages):
        names.append(f'stages.{i}.blocks.{len(stage.blocks) - 1}')
    return names


@torch.no_grad()
def check_pairs(student: nn.Module, teacher: nn.Module, names: Sequence[str], image_size: int, in_chans=3):
    """Validate imitated module names on both models at start-up: they must exist and record
    tensors of equal shape on a probe image (not discovered at step 1000)."""
    probe = torch.zeros(1, in_chans, image_size, image_size)
    with FeatureRecorder(student, names, 'student') as rs, FeatureRecorder(teacher, names, 'teacher') as rt:
        was = student.training
        student.eval()
        student(probe)
        teacher(probe)
        student.train(was)
        for name, s, t in zip(names, rs.take(), rt.take()):
            if s.shape != t.shape:
                raise RecipeError(
                    f'imitated module {name}: student output {list(s.shape)} vs teacher {list(t.shape)}; '
                    f'student and teacher need the same widths and depths at the imitated blocks')
