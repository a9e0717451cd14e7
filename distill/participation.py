"""Which trainable parameters an epoch's loss terms reach, and freezing the others.

DDP with `find_unused_parameters` searches the autograd graph from the model's OUTPUT, the
logits, which reach every parameter. When no logit term is active (feature terms alone, or soft
KD windowed off), the head and the blocks after the last imitated one are in that graph but not
in the loss: DDP waits for their gradients and the run stops ("Expected to have finished
reduction in the prior iteration"). Freezing them for such epochs takes them out of the graph:
DDP then finds them unused, and AdamW skips them, just as on one process, where they simply get
no gradient. The set is found once per set of active terms by a probe forward and backward on
zeros (no randomness drawn, eval mode so no running statistics move).
"""
from typing import Dict, FrozenSet, Tuple

import torch
import torch.nn as nn


class GradientParticipation:
    def __init__(self, model: nn.Module, criterion, image_size: int, device):
        self.model, self.criterion = model, criterion
        self.image_size, self.device = image_size, device
        # Parameters frozen by design (e.g. an identity student's mixers) stay frozen.
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._unused: Dict[Tuple[str, ...], FrozenSet[str]] = {}

    def unused(self, epoch: int) -> FrozenSet[str]:
        """Names of trainable parameters that the loss of `epoch` does not reach."""
        terms = tuple(self.criterion.active_terms(epoch))
        if terms not in self._unused:
            self._unused[terms] = self._probe(epoch)
        return self._unused[terms]

    def apply(self, epoch: int) -> FrozenSet[str]:
        unused = self.unused(epoch)
        for name, p in self.trainable.items():
            p.requires_grad_(name not in unused)
        return unused

    def _probe(self, epoch: int) -> FrozenSet[str]:
        was_training = self.model.training
        for p in self.trainable.values():
            p.requires_grad_(True)
            p.grad = None
        self.model.eval()
        try:
            x = torch.zeros(1, 3, self.image_size, self.image_size, device=self.device)
            loss, _ = self.criterion(x, self.model(x), torch.zeros(1, dtype=torch.long, device=self.device), epoch)
            loss.backward()
            unused = frozenset(n for n, p in self.trainable.items() if p.grad is None)
        finally:
            for p in self.trainable.values():
                p.grad = None
            self.model.train(was_training)
        return unused
