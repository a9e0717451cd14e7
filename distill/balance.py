"""The loss balance: how much of the loss and of the student's gradient each active term has.

On one batch, for every active term: its raw size (feature terms: the per-element mean; soft
KD: the KL per sample x T^2; CE / hard KD: as computed), the factor its reading puts on that
(global batch, 1 / classes, CHW ...), its weight, the weighted value and its share of the
total, and the share of the gradient norm it sends to the student's parameters (all but the
classifier: the backbone, where the terms compete), from one backward per term.

Shares of the gradient are ||g_i|| / sum_j ||g_j||, g_i the gradient of weight_i x term_i. Nothing
is changed: no .grad is written (torch.autograd.grad), and every random number generator the
batch, mixup or drop path draws from is restored afterwards, so a run measured at step 0
trains exactly as one that is not (tests/test_balance.py).

The trainer measures at step 0 and wherever a term's window opens or closes (`train.loss_balance`),
`--check` on a real batch, and `tools/balance.py` on a recipe's real shapes without its data.
"""
import contextlib
import random
from dataclasses import asdict, dataclass
from typing import Dict, List

import numpy as np
import torch
from torch.utils.data import default_collate

from .data import EpochSampler
from .losses import SoftTargetKD
from .terms import TERMS, feature_reduction, feature_scale

LOW, HIGH = 0.01, 0.95         # a term outside [1 %, 95 %] of the gradient gets a warning

_FEATURE_DEFAULTS = [f'distill.{n}.reduction=null' for n, t in TERMS.items() if t.kind == 'feature']
# The candidate readings of Table 10's sizes (docs/FIDELITY.md), as recipe overrides.
READINGS = {
    'shipped': ['distill.soft.normalize=numel', 'distill.feature_reduction=batch_sum', *_FEATURE_DEFAULTS],
    'mean': ['distill.soft.normalize=numel', 'distill.feature_reduction=mean', *_FEATURE_DEFAULTS],
    'mixed': ['distill.soft.normalize=numel', 'distill.feature_reduction=batch_sum', *_FEATURE_DEFAULTS,
              'distill.l_rel.reduction=mean'],
    'sample_sum': ['distill.soft.normalize=batchmean', 'distill.feature_reduction=sample_sum', *_FEATURE_DEFAULTS],
    'batchmean_mean': ['distill.soft.normalize=batchmean', 'distill.feature_reduction=mean', *_FEATURE_DEFAULTS],
}


@dataclass
class TermBalance:
    term: str
    reading: str          # how the term is normalised, e.g. 'batch_sum x1024', 'numel /1000 classes'
    raw: float            # per-element mean (feature terms), KL per sample x T^2 (soft), else the value
    factor: float         # value / raw
    weight: float
    weighted: float
    loss_share: float     # weighted / sum of weighted
    grad_norm: float      # ||d(weight x term) / d(backbone parameters)||
    grad_share: float     # grad_norm / sum of grad_norms


@contextlib.contextmanager
def preserved_rng(device: torch.device):
    """Restore torch's (CPU and the device's), numpy's and Python's generators on exit."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [device] if device.type == 'cuda' else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else 'cuda'):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def probe_batch(dataset, batch_size: int, seed: int, epoch: int, mixup=None, device='cpu', layout=None):
    """The first batch of `epoch` in the trainer's order, mixed as the trainer mixes it. Call
    inside `preserved_rng`: augmentation and mixup draw random numbers."""
    sampler = EpochSampler(len(dataset), seed)
    sampler.set_epoch(epoch)
    order = list(iter(sampler))[:batch_size]
    images, targets = default_collate([dataset[i] for i in order])
    images, targets = images.to(device), targets.to(device)
    if mixup is not None:
        images, targets = mixup(images, targets)
    return images.contiguous(memory_format=layout or torch.contiguous_format), targets


def backbone_parameters(model) -> List[torch.nn.Parameter]:
    """Trainable parameters of everything but the classifier (timm's `pretrained_cfg['classifier']`)."""
    classifier = (getattr(model, 'pretrained_cfg', None) or {}).get('classifier') or 'head'
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(classifier + '.')]


def reading(name: str, criterion, num_classes: int) -> str:
    term, cfg = TERMS[name], getattr(criterion.cfg, name)
    if term.kind == 'feature':
        reduction = feature_reduction(cfg, criterion.context)
        scale = feature_scale(cfg, criterion.context)
        return reduction + (f' x{scale:g}' if scale != 1 else '')
    if name == 'soft':
        return cfg.normalize + (f' /{num_classes} classes' if cfg.normalize == 'numel' else '')
    return '-'


def raw_loss(name: str, criterion):
    """The term's loss with the reading taken out: per-element means, KL per sample."""
    term, cfg = TERMS[name], getattr(criterion.cfg, name)
    if term.kind == 'feature':
        return term.loss()
    if name == 'soft':
        return SoftTargetKD(cfg.temperature, 'batchmean')
    return criterion.losses[name]


def measure(student, criterion, images, targets, epoch: int, autocast=contextlib.nullcontext) -> List[TermBalance]:
    """The balance of the terms active at `epoch` on this batch (see the module docstring).
    `student` is the bare model (not DDP-wrapped); `autocast` the training step's context."""
    params = backbone_parameters(student)
    with preserved_rng(images.device):
        try:
            with autocast():
                logits = student(images)
                inputs = criterion.term_inputs(images, logits, targets, epoch)
                values = {n: criterion.losses[n](*args) for n, args in inputs.items()}
            with torch.no_grad():
                raws = {n: float(raw_loss(n, criterion)(*args)) for n, args in inputs.items()}
            norms = {}
            for n, value in values.items():
                weighted = getattr(criterion.cfg, n).weight * value
                grads = torch.autograd.grad(weighted, params, retain_graph=True, allow_unused=True)
                norms[n] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)
                                            if any(g is not None for g in grads) else torch.zeros(())))
        finally:
            criterion.clear_records()
    num_classes = logits.shape[-1]
    weighted = {n: getattr(criterion.cfg, n).weight * float(v.detach()) for n, v in values.items()}
    total_loss, total_grad = sum(abs(w) for w in weighted.values()), sum(norms.values())
    return [TermBalance(n, reading(n, criterion, num_classes), raws[n], float(values[n].detach()) / raws[n] if raws[n] else float('nan'),
                        getattr(criterion.cfg, n).weight, weighted[n],
                        abs(weighted[n]) / total_loss if total_loss else 0., norms[n],
                        norms[n] / total_grad if total_grad else 0.)
            for n in values]


def table(rows: List[TermBalance], title: str) -> str:
    lines = [title, f'  {"term":<12} {"reading":<22} {"raw":>10} {"x factor":>10} {"weight":>8} '
                    f'{"weighted":>10} {"loss %":>7} {"grad %":>7}']
    for r in rows:
        lines.append(f'  {r.term:<12} {r.reading:<22} {r.raw:>10.4g} {r.factor:>10.4g} {r.weight:>8.3g} '
                     f'{r.weighted:>10.4g} {100 * r.loss_share:>7.2f} {100 * r.grad_share:>7.2f}')
    return '\n'.join(lines)


def warnings(rows: List[TermBalance], global_batch: int, epoch: int) -> List[str]:
    """One line per term outside [LOW, HIGH] of the gradient, naming the keys that set its size."""
    if len(rows) < 2:
        return []
    out = []
    for r in rows:
        if LOW <= r.grad_share <= HIGH:
            continue
        where = 'under 1 %' if r.grad_share < LOW else 'over 95 %'
        keys = [f'distill.{r.term}.weight={r.weight:g}']
        kind = TERMS[r.term].kind
        if kind == 'feature':
            keys.append(f'distill.{r.term}.reduction (or distill.feature_reduction) = {r.reading}')
        elif r.term == 'soft':
            keys.append(f'distill.soft.normalize={r.reading}')
        factors = f'global batch {global_batch}'
        out.append(f'warning: {r.term} has {100 * r.grad_share:.2f} % of the gradient at epoch {epoch + 1} '
                   f'({where}); its size is set by {", ".join(keys)} ({factors})')
    return out


def scalars(rows: List[TermBalance]) -> Dict[str, float]:
    """TensorBoard scalars: balance/grad_share/TERM, balance/loss_share/TERM (percent)."""
    out = {}
    for r in rows:
        out[f'balance/grad_share/{r.term}'] = 100 * r.grad_share
        out[f'balance/loss_share/{r.term}'] = 100 * r.loss_share
    return out


def record(rows: List[TermBalance], epoch: int) -> dict:
    """summary.json's entry: the epoch (from 1) and every row."""
    return {'epoch': epoch + 1, 'terms': [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(r).items()}
                                          for r in rows]}


def epochs_to_measure(criterion, first: int, epochs: int) -> List[int]:
    """`first` (step 0 of this session) and every later epoch whose active terms differ from the
    epoch before (a window opens or closes)."""
    out = [first] if first < epochs else []
    for e in range(first + 1, epochs):
        if criterion.active_terms(e) != criterion.active_terms(e - 1):
            out.append(e)
    return out
