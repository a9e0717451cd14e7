"""The loss-balance proxy: a recipe's student and teachers at its real shapes without its data or
downloaded weights (what `tools/balance.py` prints and the readings study measures).

The teachers get random non-trivial weights (layer scales around 0.5, norm weights 1 +- 0.3,
logits of std about 3) and the student is initialised from them as the recipe says; the batch
is synthetic images with a natural images' 1/f spectrum. torch and the models load on first
use, so a command that imports this module answers --help at once.
"""
import math


def natural_images(n: int, size: int, seed: int = 0):
    """n x 3 x size x size images with a 1/f amplitude spectrum and random phases, standardised
    per channel (what a normalised ImageNet batch looks like to a network, statistically)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).abs()[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / torch.sqrt(fx ** 2 + fy ** 2).clamp_min(1.0 / size)
    phase = torch.rand(n, 3, size, size // 2 + 1, generator=g) * 2 * math.pi
    images = torch.fft.irfft2(amplitude * torch.exp(1j * phase), s=(size, size))
    return (images - images.mean((2, 3), keepdim=True)) / images.std((2, 3), keepdim=True)


def nontrivial_weights(model, seed: int = 0, logit_std: float = 3.0):
    """Random weights far from the init values: layer scales N(0.5, 0.25) (trained PoolFormers
    carry O(0.1-1) scales, not the 1e-5 init), norm weights N(1, 0.3), biases N(0, 0.1), other
    weights at He scale; the classifier scaled so that the logits have about `logit_std`."""
    import torch
    with torch.no_grad():
        return _nontrivial_weights(model, seed, logit_std)


def _nontrivial_weights(model, seed, logit_std):
    import torch
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if 'layer_scale' in name:
            p.copy_(0.5 + 0.25 * torch.randn(p.shape, generator=g))
        elif 'norm' in name and name.endswith('weight'):
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
        elif name.endswith('bias'):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim > 1:
            p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / p[0].numel()))
    classifier = model.get_classifier() if hasattr(model, 'get_classifier') else None
    if isinstance(classifier, torch.nn.Linear):
        logits = model(natural_images(4, 64, seed))
        classifier.weight.mul_(logit_std / logits.std().clamp_min(1e-6))
        classifier.bias.zero_()
    return model


def build(recipe, classes: int, processes: int):
    """(student, criterion) of the recipe with proxy teachers."""
    import timm
    import torch
    import models
    from distill.criterion import DistillationCriterion
    from distill.recorders import default_imitated_blocks
    from distill.teacher import prepare_teacher

    def teacher_of(cfg, seed):
        if cfg is None:
            return None
        t = nontrivial_weights(timm.create_model(cfg.arch.split('.')[0], num_classes=classes), seed)
        prepare_teacher(t, torch.device('cpu'), 'fp32', torch.contiguous_format)
        return t
    teacher, logit_teacher = teacher_of(recipe.teacher, 1), teacher_of(recipe.logit_teacher, 2)
    s = recipe.student
    weights = teacher.state_dict() if s.init_from_teacher and teacher is not None else None
    student = models.create_student(s.arch, classes, s.drop_path, s.mixer, weights, None, s.layer_scale_init)
    blocks = recipe.distill.blocks or (default_imitated_blocks(student) if teacher is not None else [])
    global_batch = recipe.train.batch_size * processes * recipe.optim.grad_accum
    criterion = DistillationCriterion(recipe.distill, student, teacher, logit_teacher, blocks,
                                      recipe.data.label_smoothing, global_batch)
    return student, criterion


def measure_windows(recipe, classes, processes, batch):
    """[(epoch, balance rows)] of the proxy of `recipe` at each epoch where its active terms change
    (distill/balance.py: epochs_to_measure), on `batch` 1/f-noise images; the same numbers every time."""
    import torch
    from distill import balance
    torch.manual_seed(0)         # drop path draws from it: the same proxy numbers every time
    student, criterion = build(recipe, classes, processes)
    images = natural_images(batch, recipe.data.image_size)
    targets = torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(0))
    student.train()
    out = []
    for epoch in balance.epochs_to_measure(criterion, 0, recipe.train.epochs):
        out.append((epoch, balance.measure(student, criterion, images, targets, epoch)))
    criterion.remove_hooks()
    return out
