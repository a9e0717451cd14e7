#!/usr/bin/env python
"""The loss balance of a recipe at its real shapes, without its data or downloaded weights.

    python tools/balance.py recipes/riformer_s12.yaml --processes 8        # S12, 224 px, 1000 classes, global batch 1024
    python tools/balance.py recipes/riformer_s12.yaml --processes 8 --readings   # every candidate reading of Table 10
    python tools/balance.py recipes/clutter/imitation.yaml distill.l_rel.reduction=mean

A proxy: the recipe's student and teacher architectures at its image size and class count, the
teacher with random non-trivial weights (layer scales around 0.5, norm weights 1 +- 0.3, logits
of std about 3) and the student initialised from it as the recipe says, on synthetic images
with a natural images' 1/f spectrum; the reading factors use the recipe's global batch
(train.batch_size x --processes x optim.grad_accum). For the balance on the real data and
teacher, run `distill/train.py RECIPE --check`. Shares are of the gradient norm on the
student's backbone (distill/balance.py).
"""
import math
import sys

from . import Parser, int_between, one_line_errors


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


def readings_table(path, overrides, classes, processes, batch) -> str:
    """One line per (reading, window): each term's gradient share."""
    from distill import balance
    from distill.config import load_recipe
    lines = [f'{"reading":<16} {"epochs":<10} ' + ' '.join(f'{"grad % " + t:>16}' for t in ('soft', 'l_in_hidden', 'l_out', 'l_rel'))]
    for name, reading_overrides in balance.READINGS.items():
        recipe = load_recipe(path, [*overrides, *reading_overrides])
        for epoch, rows in measure_windows(recipe, classes, processes, batch):
            shares = {r.term: f'{100 * r.grad_share:.2f}' for r in rows}
            lines.append(f'{name:<16} {window(recipe, epoch):<10} '
                         + ' '.join(f'{shares.get(t, "-"):>16}' for t in ('soft', 'l_in_hidden', 'l_out', 'l_rel')))
    return '\n'.join(lines)


def window(recipe, epoch) -> str:
    from distill.terms import TERMS
    active = [t for t in TERMS if getattr(recipe.distill, t).active(epoch)]
    end = next((e for e in range(epoch + 1, recipe.train.epochs)
                if [t for t in TERMS if getattr(recipe.distill, t).active(e)] != active), recipe.train.epochs)
    return f'{epoch + 1}-{end}'


def measure_windows(recipe, classes, processes, batch):
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


@one_line_errors
def main(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('recipe', help='the recipe whose loss balance to print (e.g. recipes/riformer_s12.yaml)')
    p.add_argument('overrides', nargs='*', help='key.sub=value, as for distill/train.py')
    p.add_argument('--processes', type=int_between(1, 65536), default=1,
                   help='processes the recipe runs on (its global batch: batch_size x processes x grad_accum)')
    p.add_argument('--classes', type=int_between(1, 100_000), help='class count (default: the embedded data\'s, else 1000)')
    p.add_argument('--batch', type=int_between(1, 4096), default=4, help='images in the measured batch (default 4)')
    p.add_argument('--readings', action='store_true', help='every candidate reading of Table 10, one line each')
    args = p.parse_args(argv)
    from models import UsageError
    from distill import balance
    from distill.config import EMBEDDED_SOURCES, load_recipe
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.teacher is None and recipe.logit_teacher is None:
        raise UsageError(f'{args.recipe}: no teacher, so no distillation terms to balance')
    classes = args.classes or (10 if recipe.data.source in EMBEDDED_SOURCES else 1000)
    global_batch = recipe.train.batch_size * args.processes * recipe.optim.grad_accum
    print(f'proxy: {recipe.student.arch} student, {recipe.teacher.arch if recipe.teacher else "-"} teacher with random '
          f'non-trivial weights, {classes} classes, {recipe.data.image_size} px 1/f-noise images (batch {args.batch}), '
          f'global batch {global_batch}')
    if args.readings:
        print(readings_table(args.recipe, args.overrides, classes, args.processes, args.batch))
        return 0
    for epoch, rows in measure_windows(recipe, classes, args.processes, args.batch):
        print(balance.table(rows, f'loss balance, epochs {window(recipe, epoch)}'))
        for line in balance.warnings(rows, global_batch, epoch):
            print(line, file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
