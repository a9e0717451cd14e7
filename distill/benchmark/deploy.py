"""Deploy routes on CPUs (`--archs deploy_SIZE`): PoolFormer and the RIFormer deploy form in
every precision and runtime a CPU user deploys with, in one table, with paired ratios and,
from trained checkpoints (`--accuracy`), each route's top-1 and agreement with fp32.

| form | what runs |
|---|---|
| `fp32` | eager PyTorch (RIFormer: the oneDNN-fused deploy path) |
| `bf16` | eager PyTorch, bf16 weights and inputs, channels_last (`models.to_bf16`) |
| `compiled` | fp32, `torch.compile` (Inductor) with freezing |
| `int8` | PT2E int8 (torchao, X86 Inductor quantizer) compiled by Inductor with freezing |
| `ort` / `ort-int8` | ONNX Runtime on the exported graph, fp32 / static QDQ int8 |
| `openvino` / `openvino-bf16` / `openvino-int8` | OpenVINO CPU: fp32 (f32 hint), bf16 hint, NNCF int8 |
| `fp32:one-pass`, `bf16:one-pass`, `compiled:two-norms`, `int8:two-norms` | RIFormer only: the form with the other deploy-block norm path (`RIFormer.set_norm_path`) |

RIFormer's deploy blocks compute their two GroupNorms by the model's default norm path ('auto':
one statistics pass where torch.compile / torch.export trace them, the two GroupNorms in eager
PyTorch; models/deploy_norms.py); the `:one-pass` / `:two-norms` rows time the other path in the
same form, so the table and `--profile`'s operator breakdown show both.

The int8 rows say which instructions their kernels ran on and what they quantized to
(`int8 ISA`: `avx512_vnni/8-bit`, or `avx2/7-bit` on CPUs without VNNI, where the routes
quantize for saturating 16-bit pair sums: models/quantize.py).

PoolFormer gets the PyTorch forms (fp32, bf16, compiled, int8), so RIFormer's lead is read in
the same precision and layout. A route is a function (fp32 model, calibration batches, example
batch, threads) -> callable images -> logits; the speed rows build it on a model of the size's
real shapes (random weights), the accuracy columns on the trained checkpoints.
"""
import copy
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import timm
import torch
import torch.nn as nn

import models
from models import quantize as q

from .table import render_table

Runner = Callable[[torch.Tensor], torch.Tensor]

# form -> (precision, runtime)
FORMS = {
    'fp32': ('fp32', 'pytorch'), 'bf16': ('bf16', 'pytorch'), 'compiled': ('fp32', 'inductor'),
    'int8': ('int8', 'inductor'), 'ort': ('fp32', 'onnxruntime'), 'ort-int8': ('int8', 'onnxruntime'),
    'openvino': ('fp32', 'openvino'), 'openvino-bf16': ('bf16', 'openvino'), 'openvino-int8': ('int8', 'openvino'),
}
# RIFormer rows with the other norm path than the default: form -> (base form, norm path).
NORM_PATH_FORMS = {'fp32:one-pass': ('fp32', 'one-pass'), 'bf16:one-pass': ('bf16', 'one-pass'),
                   'compiled:two-norms': ('compiled', 'two-norms'), 'int8:two-norms': ('int8', 'two-norms')}
FORMS.update({form: FORMS[base] for form, (base, _) in NORM_PATH_FORMS.items()})
POOLFORMER_FORMS = ('fp32', 'bf16', 'compiled', 'int8')
# Each norm-path row next to its form's.
DEPLOY_FORMS = tuple(f for base in FORMS if base not in NORM_PATH_FORMS
                     for f in [base] + [v for v, (b, _) in NORM_PATH_FORMS.items() if b == base])
# The int8 forms' runtime in models.quantize's terms (whose kernels, which ISA).
INT8_RUNTIMES = {'int8': 'pt2e', 'ort-int8': 'onnxruntime', 'openvino-int8': 'openvino'}


def int8_isa(form: str) -> str:
    """For an int8 form: the instructions its kernels ran on and the bits it quantized to
    ('avx512_vnni/8-bit', 'avx2/7-bit': no VNNI, made for 16-bit pair sums); '-' otherwise."""
    runtime = INT8_RUNTIMES.get(form)
    if runtime is None:
        return '-'
    target = q.int8_target(runtime)
    return f'{q.int8_isa(runtime)}/{"8-bit" if target == "vnni" else "7-bit"}'



def trained_like(arch: str, num_classes: int) -> nn.Module:
    """A RIFormer with affine and layer-scale values away from their init (s=1, ls=1e-5), like a
    trained model's, so that every fold has something to fold."""
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if 'token_mixer' in name or 'layer_scale' in name:
                noise = 0.1 * torch.randn(p.shape, generator=g)
                p.copy_(1 + noise if name.endswith('affine.weight') else noise)
    return model


def _eager(model: nn.Module) -> Runner:
    def run(x):
        with torch.inference_mode():
            return model(x).float()
    return run


def build_route(form: str, model: nn.Module, calib: Sequence[torch.Tensor], example: torch.Tensor,
                threads: int, workdir: Path) -> Runner:
    """The runner of `form` for the fp32 eval-mode `model` (a copy is changed, never `model`)."""
    model = copy.deepcopy(model).eval().float()
    if form in NORM_PATH_FORMS:
        form, path = NORM_PATH_FORMS[form]
        model.set_norm_path(path)
    if form == 'fp32':
        return _eager(model)
    if form == 'bf16':
        return _eager(models.to_bf16(model, warn=False))
    if form == 'compiled':
        return _float(q.Frozen(q._reference(model)))
    if form == 'int8':
        return _float(q.compile_int8(q.quantize_pt2e(model, calib)))
    size = example.shape[-1]
    fp32_onnx = q.export_onnx(model, workdir / f'{id(model)}.onnx', size)
    if form == 'ort':
        return q.ort_runner(q.ort_session(fp32_onnx, threads))
    if form == 'ort-int8':
        return q.ort_runner(q.ort_session(q.quantize_onnx(fp32_onnx, workdir / f'{id(model)}.int8.onnx', calib), threads))
    ov_model = q.to_openvino(fp32_onnx)
    if form == 'openvino':
        return q.openvino_runner(ov_model, threads, 'fp32')
    if form == 'openvino-bf16':
        return q.openvino_runner(ov_model, threads, 'bf16')
    if form == 'openvino-int8':
        return q.openvino_runner(q.quantize_openvino(ov_model, calib), threads, None)
    raise ValueError(f'unknown deploy form {form!r}')


def _float(fn) -> Runner:
    return lambda x: fn(x).float()


# ---------------------------------------------------------------------------------------------
# Speed rows


def deploy_cases(size: str) -> list:
    from .case import Case
    teacher, student = f'poolformer_{size}', f'riformer_{size}'
    group = f'deploy-{size}'

    def poolformer(settings):
        return timm.create_model(teacher, num_classes=settings.num_classes)

    def deploy(settings):
        # Layer scales and affines away from their init, as in the riformer rows.
        return models.reparameterize(trained_like(student, settings.num_classes).eval())

    def make(build, form):
        def step_maker(settings, batch):
            x = _images(settings.img_size, batch)
            calib = [_images(settings.img_size, batch, seed=s) for s in range(1, 5)]
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                run = build_route(form, build(settings), calib, x, settings.threads, Path(tmp))
                run(x)                                # compiles, for the compiled forms
            step = lambda: run(x)              # noqa: E731
            step.build_seconds = time.perf_counter() - start
            step.int8_isa = int8_isa(form)
            return step
        return step_maker

    cases = [Case(teacher, f, group, make(poolformer, f), role='poolformer' if f == 'fp32' else '')
             for f in POOLFORMER_FORMS]
    cases += [Case(student, f, group, make(deploy, f), role='deploy' if f == 'fp32' else '') for f in DEPLOY_FORMS]
    return cases


def _images(size: int, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def paired(rows: List[dict]) -> None:
    """Per deploy row: paired ratios (median, p25, p75 of the per-repetition time ratios; the
    rows of a repetition run back to back, so a slow spell of a shared machine cancels out) to
    PoolFormer fp32, to the deploy form in fp32 and, for RIFormer rows, to PoolFormer in the
    same form (its lead in the same precision and runtime)."""
    by = {(r['group'], r['batch'], r['model'], r['form']): r for r in rows if r['group'].startswith('deploy-')}
    for (group, batch, model, form), r in by.items():
        size = group[len('deploy-'):]
        same = NORM_PATH_FORMS.get(form, (form,))[0]          # fp32:one-pass is read against PoolFormer fp32
        refs = {'vs_poolformer_fp32': (f'poolformer_{size}', 'fp32'), 'vs_deploy_fp32': (f'riformer_{size}', 'fp32'),
                'vs_poolformer_same': None if model.startswith('poolformer') else (f'poolformer_{size}', same)}
        for key, ref in refs.items():
            base = by.get((group, batch) + ref) if ref else None
            if base is None or len(base['seconds']) != len(r['seconds']):
                r[key] = None
                continue
            ratio = np.asarray(base['seconds']) / np.asarray(r['seconds'])
            r[key] = tuple(float(v) for v in (np.median(ratio), *np.percentile(ratio, [25, 75])))


def _ratio(value, reps) -> str:
    if value is None:
        return '-'
    median, p25, p75 = value
    return f'{median:.2f}x' if reps < 2 else f'{median:.2f}x ({p25:.2f}-{p75:.2f})'


DEPLOY_COLUMNS = ['model', 'form', 'precision', 'runtime', 'int8 ISA', 'batch', 'img/s', 'IQR img/s', 'latency ms',
                  'build s', 'vs PoolFormer fp32', 'vs deploy fp32', 'vs PoolFormer same form',
                  'top-1', 'agree fp32', 'rel err fp32']


def deploy_cells(r: dict) -> List[str]:
    precision, runtime = FORMS[r['form']]
    spread = '-' if r['reps'] < 2 else f'{r["img_s_p25"]:.1f}-{r["img_s_p75"]:.1f}'
    acc = r.get('accuracy') or {}
    build = r.get('build_seconds')
    isa = r.get('int8_isa') or int8_isa(r['form'])
    return [r['model'], r['form'], precision, runtime, isa, str(r['batch']), f'{r["img_s"]:.1f}', spread,
            f'{r["latency_ms"]:.1f}', '-' if build is None else f'{build:.1f}',
            _ratio(r.get('vs_poolformer_fp32'), r['reps']), _ratio(r.get('vs_deploy_fp32'), r['reps']),
            _ratio(r.get('vs_poolformer_same'), r['reps']),
            f'{acc["top1"]:.2f}' if 'top1' in acc else '-', f'{acc["agreement"]:.2f}' if 'agreement' in acc else '-',
            f'{acc["rel_err"]:.1e}' if 'rel_err' in acc else '-']


def format_deploy_table(rows: List[dict], markdown: bool = False) -> str:
    """The deploy routes' table ('' when the run has no deploy rows)."""
    rows = [r for r in rows if r['group'].startswith('deploy-')]
    if not rows:
        return ''
    return render_table([DEPLOY_COLUMNS] + [deploy_cells(r) for r in rows], 4, markdown)


# ---------------------------------------------------------------------------------------------
# Where the time goes: operator categories of the PyTorch rows (torch.profiler)

CATEGORIES = (
    ('group norm', ('group_norm', 'native_group_norm')),     # Inductor's kernels that fuse one count here
    ('compiled-graph overhead', ('compiledfxgraph', 'dynamo', 'aotdispatcher', 'pregraph', 'compiled region')),
    ('layer norm', ('layer_norm',)),
    # The deploy blocks' one-pass norms: Inductor's statistics kernels (..._rsqrt_...) and the
    # pointwise pass that writes both outputs (..._unbind_...), eager or inside a compiled graph.
    ('one-pass norms', ('rsqrt', 'unbind')),
    ('int8 conv/linear', ('qconv', 'qlinear')),
    ('conv/linear', ('convolution', 'conv2d', 'mkldnn', 'linear', 'addmm', 'matmul', 'mm')),
    ('layout copies', ('copy_', 'contiguous', 'clone', 'to_dense', 'reorder', '_to_copy')),
    ('elementwise', ('add', 'mul', 'gelu', 'sub', 'div', 'erf')),
    ('quant/dequant', ('quantize', 'dequantize')),
    ('other inductor kernels', ('graph_', 'cpp_fused', 'kernel')),
    ('pooling', ('pool', 'mean')),
)


def categorize(name: str) -> str:
    low = name.lower()
    for category, keys in CATEGORIES:
        if any(k in low for k in keys):
            return category
    return 'other'


def name_inductor_kernels() -> None:
    """Have Inductor's generated CPU kernels show in torch.profiler under names that list the
    ops they fuse (graph_0_cpp_fused_add_native_group_norm_quantize_per_tensor_1), so that the
    compiled rows' time can be split by operator too. Set before compiling; costs one
    record-function check per kernel call."""
    import torch._inductor.config as inductor_config
    inductor_config.cpp.enable_kernel_profile = True
    inductor_config.cpp.descriptive_names = 'original_aten'


def op_breakdown(step: Callable, calls: int = 3) -> Dict[str, float]:
    """Self CPU milliseconds per call by operator category, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            step()
    out: Dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith('ProfilerStep') or event.key.startswith('['):
            continue
        ms = event.self_cpu_time_total / 1e3 / calls
        if ms > 0:
            out[categorize(event.key)] = out.get(categorize(event.key), 0.) + ms
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def format_ops(rows: List[dict], markdown: bool = False) -> str:
    """The profiled rows' milliseconds per operator category ('' when none was profiled)."""
    rows = [r for r in rows if r.get('ops')]
    if not rows:
        return ''
    categories = [c for c, _ in CATEGORIES] + ['other']
    categories = [c for c in categories if any(c in r['ops'] for r in rows)]
    header = ['model', 'form', 'batch'] + categories + ['sum']
    cells = [header] + [[r['model'], r['form'], str(r['batch'])] + [f'{r["ops"].get(c, 0.):.1f}' for c in categories]
                        + [f'{sum(r["ops"].values()):.1f}'] for r in rows]
    return render_table(cells, 2, markdown)


# ---------------------------------------------------------------------------------------------
# Accuracy of every route on trained checkpoints


def route_accuracy(forms: Sequence[str], model: nn.Module, val_batches: Sequence[tuple],
                   calib: Sequence[torch.Tensor], threads: int, log=print, name: str = '') -> Dict[str, dict]:
    """Per form: top-1, agreement with the fp32 model's predictions (%) and the relative error
    of its logits against fp32's, over `val_batches` of (images, labels) of one batch size
    (the last one padded, so that compiled forms see one shape)."""
    from distill.metrics import accuracy, agreement
    full = val_batches[0][0].shape[0]
    images = [_pad(x, full) for x, _ in val_batches]
    counts = [len(y) for _, y in val_batches]
    targets = torch.cat([y for _, y in val_batches])

    def logits_of(run):
        return torch.cat([run(x)[:n].float() for x, n in zip(images, counts)])

    fp32 = logits_of(_eager(copy.deepcopy(model).eval()))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for form in forms:
            start = time.perf_counter()
            logits = logits_of(build_route(form, model, calib, images[0], threads, Path(tmp)))
            out[form] = {'top1': accuracy(logits, targets, 1), 'agreement': agreement(logits, fp32),
                         'rel_err': models.relative_error(fp32, logits), 'fp32_top1': accuracy(fp32, targets, 1)}
            log(f'  accuracy {name or type(model).__name__} {form}: top-1 {out[form]["top1"]:.2f} '
                f'(fp32 {out[form]["fp32_top1"]:.2f}), agreement {out[form]["agreement"]:.2f} % '
                f'({time.perf_counter() - start:.0f} s)')
    return out


def format_accuracy(results: Dict[str, List[dict]], markdown: bool = False) -> str:
    """Per checkpoint and route: fp32 top-1, the route's top-1, the difference, agreement with
    fp32's predictions and the logits' relative error ('' without results)."""
    header = ['checkpoint', 'form', 'fp32 top-1', 'top-1', 'delta', 'agree fp32 %', 'rel err']
    cells = [header]
    for name, per_form in results.items():
        for form, a in per_form.items():
            cells.append([name, form, f'{a["fp32_top1"]:.2f}', f'{a["top1"]:.2f}', f'{a["top1"] - a["fp32_top1"]:+.2f}',
                          f'{a["agreement"]:.2f}', f'{a["rel_err"]:.1e}'])
    if len(cells) == 1:
        return ''
    return render_table(cells, 2, markdown)


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    if len(x) == n:
        return x
    return torch.cat([x, x[-1:].expand(n - len(x), *x.shape[1:])])


def validation_batches(recipe_path, batch_size: int = 100):
    """The recipe's validation split as (images, labels) batches, and calibration batches
    (256 images of its training split, through the evaluation transform)."""
    from torch.utils.data import DataLoader
    from distill.calibration import calibration_batches
    from distill.config import load_recipe
    from distill.data import build_datasets
    recipe = load_recipe(recipe_path)
    _, val, _ = build_datasets(recipe.data, recipe.train.seed, recipe.student.arch)
    batches = [(x, y) for x, y in DataLoader(val, batch_size=batch_size)]
    return batches, calibration_batches(recipe_path, count=256, batch_size=32)
