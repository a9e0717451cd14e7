"""Loss terms, each a small module with one job (DeiT's losses.py style).

Feature terms take lists of (student, teacher) tensors, one pair per imitated block, and
average over blocks. Teacher tensors may be inference-mode tensors: no term saves them for
backward (MSE is computed as (s - t)^2, whose graph keeps only the difference).

Every term computes in float32 whatever the autocast setting (`float32_loss`): under bf16
autocast the relation matrices' products would run in bf16, and L_rel, a difference of two
nearly equal matrices, came out 8 % high with a gradient cosine of 0.975 to float64.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

SOFT_NORMALIZATIONS = ('batchmean', 'numel')


def _to_float32(x):
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() else x
    if isinstance(x, (list, tuple)):
        return [_to_float32(v) for v in x]
    return x


def _device_type(args):
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type
        if isinstance(a, (list, tuple)) and a:
            return _device_type(a)
    return 'cpu'


def float32_loss(forward):
    """Run a loss's forward with autocast off and floating inputs in float32."""
    @functools.wraps(forward)
    def wrapper(self, *args):
        with torch.autocast(_device_type(args), enabled=False):
            return forward(self, *map(_to_float32, args))
    return wrapper


class SoftTargetKD(nn.Module):
    """DeiT soft distillation: KL(teacher_T || student_T) * T^2, the KL of the softened
    teacher distribution to the student's.

    `normalize` divides the summed KL by N ('batchmean') or by N x classes ('numel', DeiT's
    `DistillationLoss`, whose soft distillation the paper says it follows; the paper does not
    say which size its lambdas assume). The two differ by the class count (1000x on ImageNet):
    which one a recipe uses decides how much of the gradient the term gets
    (distill/balance.py measures it).

    Recipe (term `soft`; a teacher or logit_teacher is needed):

        distill:
          soft: {weight: 1.0, temperature: 1.0, normalize: numel}
    """

    def __init__(self, temperature: float = 1.0, normalize: str = 'batchmean'):
        super().__init__()
        if normalize not in SOFT_NORMALIZATIONS:
            raise ValueError(f'normalize {normalize!r}: use one of {SOFT_NORMALIZATIONS}')
        self.temperature = temperature
        self.normalize = normalize

    @float32_loss
    def forward(self, student_logits, teacher_logits):
        T = self.temperature
        kl = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                      reduction='sum', log_target=True)
        divisor = student_logits.numel() if self.normalize == 'numel' else student_logits.shape[0]
        return kl * (T * T) / divisor


class HardTargetKD(nn.Module):
    """DeiT hard distillation: cross-entropy to the teacher's argmax.

    Recipe (term `hard`; a teacher or logit_teacher is needed):

        distill:
          hard: {weight: 1.0}
    """

    @float32_loss
    def forward(self, student_logits, teacher_logits):
        return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))


class LabelCE(nn.Module):
    """Cross-entropy with labels (hard or mixup-soft); samples labelled -1 are unlabelled and
    skipped (the low-label setting: distillation sees them, CE does not).

    Recipe (term `ce`; smoothing from the data section):

        data:
          label_smoothing: 0.1
        distill:
          ce: {weight: 1.0}
    """

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    @float32_loss
    def forward(self, logits, targets):
        if targets.ndim == 2:                     # mixup / cutmix soft targets
            return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        labelled = targets >= 0
        if not labelled.any():
            return logits.sum() * 0.
        return F.cross_entropy(logits[labelled], targets[labelled], label_smoothing=self.label_smoothing)


class FeatureMSE(nn.Module):
    """Mean squared error per imitated block (1/NCHW), averaged over blocks, times `scale`;
    with `per_sample`, each block's squared Frobenius norm per sample instead (the mean x CHW).
    The criterion sets `scale` to the global batch (per-process batch x processes x
    accumulation) for the `batch_sum` reading of Table 10's 'lambda x batch size', so a recipe
    means the same loss balance on any number of processes (distill/terms.py: the reductions).

    Recipe (terms `l_in`: norm1 outputs, `l_in_hidden`: block outputs, `l_out`: token-mixer
    outputs, at each imitated block; the module-imitation teacher is needed):

        teacher: {arch: poolformer_s12, pretrained: true}
        distill:
          l_in_hidden: {weight: 1.0e-4, start: 0, end: 400}
          l_out: {weight: 1.0e-3, start: 0, end: 400}
          l_in: {weight: 1.0e-4}          # the norm1 outputs (not in the paper recipes)
          blocks: null                  # default: the last block of each stage
          feature_reduction: batch_sum  # scale = the global batch
          # per term: l_out: {weight: 1.0e-3, reduction: mean}   (mean | batch_sum | sample_sum)
    """

    def __init__(self, scale: float = 1.0, per_sample: bool = False):
        super().__init__()
        self.scale, self.per_sample = scale, per_sample

    @float32_loss
    def forward(self, student_feats, teacher_feats):
        losses = [MeanSquaredError.apply(s, t.detach()) * (s[0].numel() if self.per_sample else 1)
                  for s, t in zip(student_feats, teacher_feats)]
        return torch.stack(losses).mean() * self.scale


class MeanSquaredError(torch.autograd.Function):
    """mean((s - t)^2), the value autograd's `(s - t).pow(2).mean()` gives, with the gradient
    2 (s - t) / n written out: one pass over the map in backward where autograd's graph takes
    three (expand and divide, 2 (s - t), the product), and one temporary fewer. At S12's first
    stage every pass is a 12.8 MB map. The result is bitwise autograd's: (g / n) * (2 d) =
    d * (2 (g / n)), since doubling is exact. Only the difference is saved, so the teacher's
    tensor may be an inference tensor; it gets no gradient."""

    @staticmethod
    def forward(ctx, s, t):
        diff = s - t
        ctx.save_for_backward(diff)
        return diff.pow(2).mean()

    @staticmethod
    def backward(ctx, grad):
        diff, = ctx.saved_tensors
        return diff * ((grad / diff.numel()) * 2), None


def relation_matrix(y: torch.Tensor) -> torch.Tensor:
    """R(Y) = Yn Yn^T per sample: tokens (HW of them, C features each) L2-normalised over C."""
    tokens = _tokens(y).transpose(1, 2)                                 # N, HW, C
    return tokens @ tokens.transpose(1, 2)                               # N, HW, HW


class RelationMSE(nn.Module):
    """MSE between token relation matrices (normaliser 1/(N H^2 W^2)), averaged over blocks,
    times `scale`; with `per_sample`, each sample's squared Frobenius norm (the mean x (HW)^2)
    (see FeatureMSE).

    Early stages have many tokens and few channels (3,136 x 64 at 224 px): there the HW x HW
    matrices are not built. With A, B the normalised tokens (C x HW), P = A + B, Q = A - B:
    A^T A - B^T B = (P^T Q + Q^T P) / 2, so
    ||A^T A - B^T B||_F^2 = (<P P^T, Q Q^T> + <P Q^T, Q P^T>) / 2, from C x C products only.
    Every term carries Q, so nothing large cancels and float32 suffices. Where HW <= C the
    explicit matrices are cheaper and are used directly.

    Recipe (term `l_rel`, on the block outputs of each imitated block; the module-imitation
    teacher is needed):

        teacher: {arch: poolformer_s12, pretrained: true}
        distill:
          l_rel: {weight: 1.0, start: 0, end: 100}
    """

    def __init__(self, scale: float = 1.0, per_sample: bool = False):
        super().__init__()
        self.scale, self.per_sample = scale, per_sample

    @float32_loss
    def forward(self, student_feats, teacher_feats):
        losses = []
        for s, t in zip(student_feats, teacher_feats):
            n, c, hw = s.shape[0], s.shape[1], s[0, 0].numel()
            if hw <= c:
                with torch.no_grad():
                    target = relation_matrix(t)
                loss = (relation_matrix(s) - target).pow(2).mean()
            else:
                loss = GramRelationDistance.apply(s, t.detach()) / (n * hw * hw)
            losses.append(loss * (hw * hw) if self.per_sample else loss)
        return torch.stack(losses).mean() * self.scale


class GramRelationDistance(torch.autograd.Function):
    """sum_n ||A^T A - B^T B||_F^2 over samples, A and B the student's and teacher's tokens
    (L2-normalised over C), from C x C products, with the gradient written out.

    With P = A + B, Q = A - B and M = A^T A - B^T B = (P^T Q + Q^T P) / 2:
    ||M||^2 = (<P P^T, Q Q^T> + <P Q^T, Q P^T>) / 2, and dL/dA = 4 A M
    = (P P^T + Q P^T) Q + (P Q^T + Q Q^T) P, which reuses the forward's three Gram matrices: five
    C x C x HW products in all where autograd's graph of the same formula takes nine, and no
    autograd passes over the wide P and Q (PoolFormer-S12 stage 1: 3,136 tokens of 64 channels).
    Every term carries Q, so nothing large cancels in float32. Tokens are laid out (N, HW, C): a
    view of channels_last maps, which is how the trainer runs."""

    @staticmethod
    def forward(ctx, s, t):
        x = _token_rows(s)
        norm = x.norm(dim=2, keepdim=True)
        scale = norm.clamp_min(NORMALIZE_EPS)            # F.normalize's max(||x||, eps)
        a = x / scale
        b = F.normalize(_token_rows(t), dim=2)
        p, q = a + b, a - b
        g_pp, g_qq, g_pq = _gram_rows(p, p), _gram_rows(q, q), _gram_rows(p, q)
        ctx.save_for_backward(a, p, q, scale, norm > NORMALIZE_EPS, g_pp, g_qq, g_pq)
        ctx.map_shape = s.shape
        return 0.5 * ((g_pp * g_qq).sum() + (g_pq * g_pq.transpose(1, 2)).sum())

    @staticmethod
    def backward(ctx, grad):
        a, p, q, scale, scaled, g_pp, g_qq, g_pq = ctx.saved_tensors
        # Token rows: dL/dA^T = Q^T (G_pp + G_pq) + P^T (G_pq^T + G_qq) (the Grams are C x C).
        g_a = torch.baddbmm(q @ (g_pp + g_pq), p, g_pq.transpose(1, 2) + g_qq).mul_(grad)
        # Through the normalisation a = x / max(||x||, eps): the radial part goes where ||x|| > eps.
        radial = (a * g_a).sum(2, keepdim=True).mul_(scaled)
        g_x = (g_a - a * radial).div_(scale)
        n, c, h, w = ctx.map_shape
        return g_x.view(n, h, w, c).permute(0, 3, 1, 2), None


NORMALIZE_EPS = 1e-12                    # F.normalize's default


def _tokens(y):
    # N, C, HW: each token (a column) L2-normalised over C.
    return F.normalize(y.float().flatten(2), dim=1)


def _token_rows(y):
    # N, HW, C: one row per token; a view for channels_last maps, one copy for NCHW.
    n, c = y.shape[:2]
    return y.permute(0, 2, 3, 1).reshape(n, -1, c)


def _gram_rows(a, b):
    return a.transpose(1, 2) @ b                                         # N, C, C
