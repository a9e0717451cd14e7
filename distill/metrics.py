"""Classification metrics in one place: top-k hits (device-side, for the trainer's running
sums), top-k accuracy and student/teacher agreement in percent. Targets < 0 mark unlabelled
samples (a recipe's `label_fraction`) and are skipped by the accuracy metrics."""
import torch


def topk_stats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[labelled samples, top-1 hits, top-5 hits] as a float64 tensor on the logits' device
    (targets < 0 are unlabelled and skipped). Stays on the device: no sync per step."""
    keep = targets >= 0
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices
    hits = top.eq(targets[:, None]) & keep[:, None]
    return torch.stack([keep.sum(), hits[:, :1].any(dim=1).sum(), hits.any(dim=1).sum()]).double()


def accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int = 1) -> float:
    """Top-k accuracy in percent over the labelled samples (k is capped at the class count)."""
    keep = targets >= 0
    top = logits[keep].topk(min(k, logits.shape[1]), dim=1).indices
    return 100. * float(top.eq(targets[keep][:, None]).any(dim=1).float().mean())


def agreement_hits(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """How many samples two models give the same top-1 class (a tensor: no device sync)."""
    return logits_a.argmax(1).eq(logits_b.argmax(1)).sum()


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """Share of samples, in percent, where two models predict the same class."""
    return 100. * float(agreement_hits(logits_a, logits_b)) / max(logits_a.shape[0], 1)
