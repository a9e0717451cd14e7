"""One training epoch and one evaluation pass (DeiT's engine.py, on Accelerate)."""
import math
import sys
import time
from typing import Dict, List, Optional

import torch
from tqdm.auto import tqdm

from .config import TrainConfig
from .metrics import agreement_hits, topk_stats
from .train_state import TrainState
from .teacher import run_teacher


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN or inf; the message names the term."""


def train_one_epoch(accelerator, student, criterion, loader, optimizer, scheduler, mixup, epoch,
                    state: TrainState, train: TrainConfig, clip_grad: Optional[float], ema=None) -> Dict[str, float]:
    """One epoch of the recipe's `train` section (layout, epochs, progress, log_every), gradients
    clipped at `clip_grad` (optim.clip_grad), the weight average `ema` (distill.ema) updated after
    each optimizer update. Nothing here waits for the device per step: running
    sums, top-k counts and the finite-loss check stay on the device and are read at logging
    intervals and at the end."""
    student.train()
    sums, count, seen = {}, 0, 0
    stats = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
    guard = FiniteGuard(accelerator.device)
    layout = torch.channels_last if train.channels_last else torch.contiguous_format
    start = time.perf_counter()
    weights = accelerator.unwrap_model(student)
    progress = Progress(loader, epoch, train.epochs, enabled=accelerator.is_local_main_process and train.progress)
    for images, targets in progress:
        labels = targets
        if mixup is not None:
            images, targets = mixup(images, targets)
        # Once per step for student and teacher alike (both run in the student's layout).
        images = images.contiguous(memory_format=layout)
        with accelerator.accumulate(student):
            with accelerator.autocast():
                logits = student(images)
                loss, terms = criterion(images, logits, targets, epoch)
            guard.observe(loss, terms, state.num_updates)
            accelerator.backward(loss)
            if accelerator.sync_gradients and clip_grad:
                accelerator.clip_grad_norm_(student.parameters(), clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if accelerator.sync_gradients:
            state.num_updates += 1
            scheduler.step_update(state.num_updates)
            if ema is not None:
                ema.update(weights, state.num_updates)

        # Running sums stay tensors: converting to Python numbers here would sync every step.
        for name, value in [('total', loss), *terms.items()]:
            sums[name] = sums.get(name, 0.) + value.detach().double()
        count += 1
        seen += images.shape[0]
        stats += topk_stats(logits.detach(), labels)
        if accelerator.sync_gradients and state.num_updates % train.log_every == 0:
            guard.check(accelerator, epoch)          # every process reaches this at the same update
            logged = mean_over_processes(accelerator, {'total': loss, **terms})
            # Under step/: the x axis of these is the optimizer update, not the epoch.
            accelerator.log({f'step/loss/{k}': v for k, v in logged.items()}
                            | {'step/lr': optimizer.param_groups[0]['lr']}, step=state.num_updates)
            progress.report(logged['total'], optimizer.param_groups[0]['lr'])
    guard.check(accelerator, epoch)                  # before anything of this epoch is saved

    elapsed = time.perf_counter() - start
    labelled, top1, top5 = accelerator.reduce(stats, 'sum').tolist()
    seen_all = float(accelerator.reduce(torch.tensor(float(seen), device=accelerator.device), 'sum'))
    means = mean_over_processes(accelerator, {k: v / max(count, 1) for k, v in sums.items()})
    return {
        **{f'loss/{k}': v for k, v in means.items()},
        'train/top1': 100. * top1 / max(labelled, 1.),
        'train/top5': 100. * top5 / max(labelled, 1.),
        'train/images_per_sec': seen_all / elapsed,
        # seconds this process waited for the loader: near 0 when the workers keep up
        'train/data_wait': progress.waited,
        'epoch_time': elapsed,
    }


class Progress:
    """Per-step progress of one epoch: a tqdm bar on a terminal; in a redirected log (no
    terminal), one plain line per log interval instead of tqdm's carriage-return frames.
    Epochs count from 1, as in the epoch line."""

    def __init__(self, loader, epoch: int, epochs: int, enabled: bool):
        self.loader, self.steps = loader, len(loader)
        self.label = f'epoch {epoch + 1}/{epochs}'
        self.bar = tqdm(loader, desc=self.label, leave=False) if enabled and sys.stderr.isatty() else None
        self.lines = enabled and self.bar is None
        self.step = 0
        self.waited = 0.       # seconds spent waiting for the next batch

    def __iter__(self):
        items = iter(self.bar if self.bar is not None else self.loader)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            self.waited += time.perf_counter() - start
            self.step += 1
            yield item

    def report(self, loss: float, lr: float):
        if self.bar is not None:
            self.bar.set_postfix(loss=f'{loss:.4f}', lr=f'{lr:.2e}')
        elif self.lines:
            print(f'{self.label} step {self.step}/{self.steps} loss {loss:.4f} lr {lr:.2e}', flush=True)


def mean_over_processes(accelerator, values: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """Loss values averaged over processes (every process sees its own share of the batch), in
    one collective; every process must call it at the same step."""
    stacked = torch.stack([v.detach().double().reshape(()).to(accelerator.device) for v in values.values()])
    return dict(zip(values, accelerator.reduce(stacked, 'mean').tolist()))


class FiniteGuard:
    """The finite-loss check without a host sync per step. `observe` flags a non-finite loss on
    the device and keeps the term values and the update of the first one; `check`, called by
    every process at the same points (logging intervals, epoch end), reduces the flag across
    processes so that all of them stop together, and raises NonFiniteLoss naming the terms.
    Steps between the bad one and the check still run; nothing is saved before the check."""

    def __init__(self, device):
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.update = torch.zeros((), dtype=torch.int64, device=device)
        self.values: Optional[torch.Tensor] = None
        self.names: List[str] = []

    def observe(self, loss, terms, update: int):
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in terms.values())])
        if self.values is None or self.values.shape != values.shape:
            self.values, self.names = torch.zeros_like(values), ['total', *terms]
        now = ~torch.isfinite(values).all()
        first = now & ~self.bad
        self.values = torch.where(first, values, self.values)
        self.update = torch.where(first, torch.full_like(self.update, update), self.update)
        self.bad = self.bad | now

    def check(self, accelerator, epoch):
        bad = self.bad.float()
        if accelerator.num_processes > 1:
            bad = accelerator.reduce(bad, 'sum')
        if float(bad) == 0:
            return
        if not bool(self.bad):
            raise NonFiniteLoss(f'non-finite loss at epoch {epoch} on another process')
        values = dict(zip(self.names, self.values.tolist()))
        culprits = [n for n, v in values.items() if n != 'total' and not math.isfinite(v)] or ['total']
        text = ', '.join(f'{n}={values[n]}' for n in culprits)
        raise NonFiniteLoss(f'non-finite loss at epoch {epoch}, update {int(self.update)}: {text}')


@torch.no_grad()
def evaluate(accelerator, model, loader, teacher=None) -> Dict[str, float]:
    """Top-1/top-5 on the validation set, gathered across processes; with a teacher, also the
    share of images where student and teacher predict the same class."""
    model.eval()
    stats, agree = torch.zeros(3, dtype=torch.float64, device=accelerator.device), 0
    for images, targets in loader:
        with accelerator.autocast():
            logits = model(images)
            t_logits = run_teacher(teacher, images) if teacher is not None else None
        gathered = accelerator.gather_for_metrics((logits, targets) if t_logits is None else (logits, targets, t_logits))
        stats += topk_stats(gathered[0].float(), gathered[1])
        if t_logits is not None:
            agree += agreement_hits(gathered[0], gathered[2])
    total, top1, top5 = stats.tolist()
    metrics = {'val/top1': 100. * top1 / max(total, 1), 'val/top5': 100. * top5 / max(total, 1)}
    if teacher is not None:
        metrics['val/teacher_agreement'] = 100. * float(agree) / max(total, 1)
    return metrics
