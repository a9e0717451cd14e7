"""What the benchmark times: the families that turn an architecture token into rows (`Case`
and `Settings` live in case.py, which every family imports).

Rows come from *case families* (`FAMILIES`): a family turns an architecture token from `--archs`
into a list of `Case`s, each of which builds one timed step. The `train_SIZE` family times
training steps: a plain student step vs a module-imitation step (teacher + recorders + losses),
so that the overhead of distillation is visible. To add rows, write a function
`token -> List[Case]` whose cases' `make(settings, batch)` return a zero-argument step, and add
a `Family` to `FAMILIES`.
"""
import fnmatch
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import timm
import torch
import torch.nn as nn

import models  # registers riformer_* and poolformer_mini with timm

from .case import DTYPES, BenchmarkError, Case, Settings, Step, random_images  # noqa: F401  (also importable from here)
from .deploy import deploy_cases, trained_like
from .training import training_cases

RIFORMER_SIZES = [name[len('riformer_'):] for name in models.ARCHS]     # s12 ... m48, mini


@dataclass
class Family:
    """Architecture tokens a family accepts (timm-style wildcards allowed) and its rows."""
    name: str
    names: Callable[[], List[str]]
    cases: Callable[[str], List[Case]]
    aliases: Dict[str, List[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Steps: an eval-mode torch model, or an ONNX Runtime session


def prepare_model(model: nn.Module, settings: Settings) -> nn.Module:
    model = model.eval().requires_grad_(False).to(settings.device, settings.torch_dtype)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if settings.compile else model


def torch_step(build: Callable[[Settings], nn.Module]) -> Callable[[Settings, int], Step]:
    def make(settings: Settings, batch: int) -> Step:
        model = prepare_model(build(settings), settings)
        x = random_images(settings, batch)

        def step():
            with torch.inference_mode():
                return model(x)
        return step
    return make


def onnxruntime_step(build: Callable[[Settings], nn.Module]) -> Callable[[Settings, int], Step]:
    """Export the model (fp32, dynamic batch) to a temporary file and time an ORT CPU session."""
    def make(settings: Settings, batch: int) -> Step:
        import onnxruntime as ort
        model = build(settings).eval().float()
        sample = torch.randn(1, 3, settings.img_size, settings.img_size)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter('ignore')   # the TorchScript exporter's deprecation notice
            path = os.path.join(tmp, 'model.onnx')
            torch.onnx.export(
                model, (sample,), path, dynamo=False, input_names=['images'], output_names=['logits'],
                dynamic_axes={'images': {0: 'batch'}, 'logits': {0: 'batch'}})
            options = ort.SessionOptions()
            options.intra_op_num_threads = settings.threads
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # ORT's pool busy-waits after each run; that would steal the next row's cores.
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
            session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        x = random_images(Settings(img_size=settings.img_size), batch).numpy()
        return lambda: session.run(None, {'images': x})
    return make


def ort_applicable(settings: Settings) -> bool:
    return settings.device == 'cpu' and settings.dtype == 'fp32'


# ---------------------------------------------------------------------------------------------
# Case families


def riformer_cases(size: str) -> List[Case]:
    """PoolFormer (timm's, and as the trainer's teacher on the fused inference path); RIFormer in
    training form, plain deploy form (affine folded into norm1 only, as mmpretrain), deploy form (every fold; oneDNN-fused forward on CPU), deploy-ref (the
    deploy weights through the reference forward, without the fused path) and the deploy form
    under ONNX Runtime ('deploy-ort')."""
    teacher, student = f'poolformer_{size}', f'riformer_{size}'

    def trained(settings):
        return trained_like(student, settings.num_classes)

    def form(name, fused=True):
        def build(settings):
            return models.reparameterize(trained(settings), name).set_fused(fused)
        return build

    def poolformer(settings):
        return timm.create_model(teacher, pretrained=False, num_classes=settings.num_classes)

    def as_teacher(settings):
        # The trainer's frozen teacher: PoolFormer on its fused inference path (CPU, fp32/bf16);
        # with --channels-last in the trainer's layout, with --compile what teacher.compile times.
        model = poolformer(settings)
        models.fuse_poolformer(model)
        return model

    return [
        Case(teacher, 'timm', size, torch_step(poolformer), role='poolformer'),
        Case(teacher, 'teacher', size, torch_step(as_teacher)),
        Case(student, 'train', size, torch_step(trained)),
        Case(student, 'plain', size, torch_step(form('plain')), role='plain'),
        Case(student, 'deploy', size, torch_step(form('deploy'))),
        Case(student, 'deploy-ref', size, torch_step(form('deploy', fused=False))),
        Case(student, 'deploy-ort', size, onnxruntime_step(form('deploy'))),
    ]


def efficientvit_cases(name: str) -> List[Case]:
    """timm EfficientViT (MSRA) as built, and with its BatchNorms fused (timm's
    reparameterize_model calls every module's fuse())."""
    from timm.utils.model import reparameterize_model

    def build(settings):
        return timm.create_model(name, pretrained=False, num_classes=settings.num_classes,
                                 img_size=settings.img_size)

    def fused(settings):
        return reparameterize_model(build(settings).eval())

    return [Case(name, 'timm', name, torch_step(build)), Case(name, 'fused', name, torch_step(fused))]


def fasternet_cases(name: str) -> List[Case]:
    """timm FasterNet, with the default split/cat partial conv and the in-place 'slicing'
    variant meant for inference (it has no fuse())."""
    def build(fw_type):
        return lambda settings: timm.create_model(
            name, pretrained=False, num_classes=settings.num_classes, pconv_fw_type=fw_type)

    return [Case(name, 'timm', name, torch_step(build('split_cat'))),
            Case(name, 'slicing', name, torch_step(build('slicing')))]


FAMILIES = [
    Family('riformer', lambda: list(RIFORMER_SIZES), riformer_cases,
           aliases={**{f'riformer_{s}': [s] for s in RIFORMER_SIZES},
                    **{f'poolformer_{s}': [s] for s in RIFORMER_SIZES}}),
    Family('efficientvit', lambda: timm.list_models('efficientvit_m*'), efficientvit_cases,
           aliases={'efficientvit': timm.list_models('efficientvit_m*')}),
    Family('fasternet', lambda: timm.list_models('fasternet_*'), fasternet_cases,
           aliases={'fasternet': timm.list_models('fasternet_*')}),
    # Deploy routes on CPUs: `--archs deploy_s12` (distill/benchmark/deploy.py).
    Family('deploy', lambda: [f'deploy_{s}' for s in RIFORMER_SIZES], lambda name: deploy_cases(name[len('deploy_'):])),
    # Training steps: `--archs train_s12` (or train_mini ...).
    Family('train', lambda: [f'train_{s}' for s in RIFORMER_SIZES], lambda name: training_cases(name[len('train_'):])),
]


def resolve_archs(spec: str) -> List[Case]:
    """`s12,s24,efficientvit_m*,fasternet` -> the cases of every token, in order, once each.
    A token of wildcards alone (`*`) is refused: it would time every row of every family."""
    cases, seen = [], set()
    for token in [t.strip().lower() for t in spec.split(',') if t.strip()]:
        if not any(ch.isalnum() for ch in token):
            raise BenchmarkError(
                f'--archs {token!r} would time every architecture of every family (hours); name sizes '
                f'(s12), families (efficientvit) or a pattern within one (efficientvit_m*, train_s*)')
        matched = False
        for family in FAMILIES:
            known = family.names()
            names = family.aliases.get(token) or fnmatch.filter(known, token)
            for name in names:
                matched = True
                if (family.name, name) not in seen:
                    seen.add((family.name, name))
                    cases.extend(family.cases(name))
        if not matched:
            raise BenchmarkError(
                f'unknown architecture {token!r}; use {", ".join(RIFORMER_SIZES)} (or riformer_/poolformer_ '
                f'names), train_SIZE (training steps), efficientvit_m0..m5, fasternet_t0..l, or a family name (efficientvit, fasternet)')
    if not cases:
        raise BenchmarkError('--archs names no architecture; give sizes such as s12, or leave it out for the default')
    return cases


def select_forms(cases: List[Case], forms: Optional[str]) -> List[Case]:
    """Only the cases whose form is in the comma-separated `forms` (all when empty)."""
    if not forms:
        return cases
    wanted = {f.strip() for f in forms.split(',') if f.strip()}
    known = {c.form for c in cases}
    unknown = wanted - known
    if unknown:
        raise BenchmarkError(f'unknown form(s) {", ".join(sorted(unknown))}; these archs have {", ".join(sorted(known))}')
    return [c for c in cases if c.form in wanted]
