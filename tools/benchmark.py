#!/usr/bin/env python
"""Inference throughput and latency of RIFormer's forms next to PoolFormer and other backbones.

    python tools/benchmark.py --archs s12,s24 --batch-sizes 16 --img-size 224 --reps 9
    python tools/benchmark.py --archs s12,efficientvit_m0,fasternet_t0 --channels-last
    python tools/benchmark.py --smoke --markdown bench.md --csv bench.csv

Every row is measured in one process: all models are built first, warmed up, and then timed in
interleaved repetitions (one measurement of each row per repetition, the order rotated every
repetition), so that load from other processes spreads over all rows instead of hitting one.
A row reports the median over repetitions and the interquartile range.

Rows come from *case families* (`FAMILIES`): a family turns an architecture token from `--archs`
into a list of `Case`s, each of which builds one timed step. The `train_SIZE` family times
training steps: a plain student step vs a module-imitation step (teacher + recorders + losses),
so that the overhead of distillation is visible. To add rows, write a function
`token -> List[Case]` whose cases' `make(settings, batch)` return a zero-argument step, and add
a `Family` to `FAMILIES`.
"""
import argparse
import csv
import fnmatch
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import timm  # noqa: E402
import models  # noqa: E402  (registers riformer_* and poolformer_mini with timm)

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
RIFORMER_SIZES = [name[len('riformer_'):] for name in models.ARCHS]     # s12 ... m48, mini


class BenchmarkError(Exception):
    """Bad input: reported as one `error:` line and exit code 2."""


@dataclass
class Settings:
    """What every case is built and timed with (from the command line)."""
    img_size: int = 224
    device: str = 'cpu'
    dtype: str = 'fp32'
    channels_last: bool = False
    compile: bool = False
    threads: int = 1
    num_classes: int = 1000

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


Step = Callable[[], object]


@dataclass
class Case:
    """One table row: a model in one form. `make(settings, batch)` builds everything the row
    needs and returns the step to time (one call = one batch). Rows sharing a `group` share the
    speedup baselines: the case with role 'poolformer' and the one with role 'plain'."""
    model: str
    form: str
    group: str
    make: Callable[[Settings, int], Step]
    role: str = ''


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


def random_images(settings: Settings, batch: int) -> torch.Tensor:
    # Seeded, so that every row of a run sees the same batch.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, settings.img_size, settings.img_size, generator=g)
    x = x.to(settings.device, settings.torch_dtype)
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


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


# ---------------------------------------------------------------------------------------------
# Case families


def riformer_cases(size: str) -> List[Case]:
    """PoolFormer (timm); RIFormer in training form, plain deploy form (affine folded into norm1
    only, as mmpretrain), deploy form (every fold; oneDNN-fused forward on CPU), deploy-ref (the
    deploy weights through the reference forward, without the fused path) and the deploy form
    under ONNX Runtime ('deploy-ort')."""
    teacher, student = f'poolformer_{size}', f'riformer_{size}'

    def trained(settings):
        # Affine and layer-scale values away from their init (s=1, ls=1e-5), like a trained
        # model's, so that every fold has something to fold.
        model = timm.create_model(student, pretrained=False, num_classes=settings.num_classes)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if 'token_mixer' in name or 'layer_scale' in name:
                    noise = 0.1 * torch.randn(p.shape, generator=g)
                    p.copy_(1 + noise if name.endswith('affine.weight') else noise)
        return model

    def form(name, fused=True):
        def build(settings):
            model = models.reparameterize(trained(settings), name)
            for block in model.modules():
                if isinstance(block, models.RIFormerBlock):
                    block.fused = fused
            return model
        return build

    def poolformer(settings):
        return timm.create_model(teacher, pretrained=False, num_classes=settings.num_classes)

    return [
        Case(teacher, 'timm', size, torch_step(poolformer), role='poolformer'),
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


def training_cases(size: str) -> List[Case]:
    """One optimizer step of a RIFormer student (forward, backward, AdamW): 'student-step' with
    cross-entropy only, 'imitation-step' with the paper's module imitation (a frozen PoolFormer
    teacher under inference mode, recorders at the last block of each stage, soft KD + L'_in +
    L_out + L_rel) through the trainer's own criterion. img/s counts training images."""
    from distill.config import DistillConfig, SoftTermConfig, TermConfig
    from distill.criterion import DistillationCriterion, prepare_teacher
    from distill.recorders import default_imitated_blocks

    def make_step(imitation: bool):
        def make(settings: Settings, batch: int) -> Step:
            device = settings.device
            student = timm.create_model(f'riformer_{size}', num_classes=settings.num_classes).to(device).train()
            teacher = None
            on = TermConfig(weight=1.0)
            cfg = DistillConfig(ce=TermConfig(weight=1.0))
            if imitation:
                teacher = prepare_teacher(
                    timm.create_model(f'poolformer_{size}', num_classes=settings.num_classes), device)
                cfg = DistillConfig(soft=SoftTermConfig(weight=1.0), l_in_hidden=on, l_out=on, l_rel=on)
            if settings.channels_last:
                student = student.to(memory_format=torch.channels_last)
                teacher = teacher.to(memory_format=torch.channels_last) if teacher is not None else None
            criterion = DistillationCriterion(cfg, student, teacher, None, default_imitated_blocks(student))
            optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
            x = random_images(Settings(**{**settings.__dict__, 'dtype': 'fp32'}), batch)
            y = torch.randint(0, settings.num_classes, (batch,), generator=torch.Generator().manual_seed(0)).to(device)
            amp = settings.dtype != 'fp32'

            def step():
                with torch.autocast(device.split(':')[0], dtype=settings.torch_dtype, enabled=amp):
                    loss, _ = criterion(x, student(x), y, epoch=0)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            return step
        return make

    group = f'train-{size}'
    return [Case(f'riformer_{size}', 'student-step', group, make_step(False), role='plain'),
            Case(f'riformer_{size}', 'imitation-step', group, make_step(True))]


FAMILIES = [
    Family('riformer', lambda: list(RIFORMER_SIZES), riformer_cases,
           aliases={**{f'riformer_{s}': [s] for s in RIFORMER_SIZES},
                    **{f'poolformer_{s}': [s] for s in RIFORMER_SIZES}}),
    Family('efficientvit', lambda: timm.list_models('efficientvit_m*'), efficientvit_cases,
           aliases={'efficientvit': timm.list_models('efficientvit_m*')}),
    Family('fasternet', lambda: timm.list_models('fasternet_*'), fasternet_cases,
           aliases={'fasternet': timm.list_models('fasternet_*')}),
    # Training steps: `--archs train_s12` (or train_mini ...).
    Family('train', lambda: [f'train_{s}' for s in RIFORMER_SIZES], lambda name: training_cases(name[len('train_'):])),
]


def resolve_archs(spec: str) -> List[Case]:
    """`s12,s24,efficientvit_m*,fasternet` -> the cases of every token, in order, once each."""
    cases, seen = [], set()
    for token in [t.strip().lower() for t in spec.split(',') if t.strip()]:
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
        raise BenchmarkError('no architectures given')
    return cases


# ---------------------------------------------------------------------------------------------
# Timing


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)


def time_steps(steps: Dict[int, Step], reps: int, warmup: int, min_time: float, sync,
               log=print) -> Dict[int, List[float]]:
    """Seconds per call of every step: `warmup` untimed calls each, then `reps` interleaved
    repetitions. One measurement runs a step often enough to last about `min_time` (decided from
    the last warm-up call), so that fast models are not timed at the clock's resolution."""
    calls = {}
    for key, step in steps.items():
        elapsed = 0.
        for _ in range(max(warmup, 1)):
            sync()
            start = time.perf_counter()
            step()
            sync()
            elapsed = time.perf_counter() - start
        calls[key] = max(1, math.ceil(min_time / max(elapsed, 1e-6))) if min_time > 0 else 1
    samples = {key: [] for key in steps}
    keys = list(steps)
    for rep in range(reps):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:     # rotate: no row is always first or last
            step, n = steps[key], calls[key]
            sync()
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            samples[key].append((time.perf_counter() - start) / n)
        log(f'  repetition {rep + 1}/{reps} done (load {load_average()})')
    return samples


def summarize(case: Case, batch: int, settings: Settings, seconds: Sequence[float]) -> dict:
    t = np.asarray(seconds)
    rate = batch / t
    p25, p75 = np.percentile(rate, [25, 75])
    return {
        'model': case.model, 'form': case.form, 'group': case.group, 'role': case.role,
        'batch': batch, 'res': settings.img_size, 'reps': len(t),
        'img_s': float(np.median(rate)), 'img_s_p25': float(p25), 'img_s_p75': float(p75),
        'img_s_min': float(rate.min()), 'img_s_max': float(rate.max()),
        'latency_ms': float(np.median(t) * 1e3),
    }


def add_speedups(rows: List[dict]) -> None:
    """`vs_poolformer` and `vs_plain`: a row's median img/s over its group's baseline rows at
    the same batch size (None where the group has no such baseline)."""
    base = {(r['group'], r['batch'], r['role']): r['img_s'] for r in rows if r['role']}
    for r in rows:
        for column, role in (('vs_poolformer', 'poolformer'), ('vs_plain', 'plain')):
            ref = base.get((r['group'], r['batch'], role))
            r[column] = r['img_s'] / ref if ref else None


def run_benchmark(cases: List[Case], settings: Settings, batch_sizes: Sequence[int], reps: int,
                  warmup: int, min_time: float, log=print) -> List[dict]:
    rows = []
    for batch in batch_sizes:
        steps = {}
        for i, case in enumerate(cases):
            if case.form.endswith('-ort') and not ort_applicable(settings):
                log(f'  skip {case.model} {case.form}: ONNX Runtime rows run on CPU in fp32 only')
                continue
            log(f'  build {case.model} ({case.form}), batch {batch}')
            steps[i] = case.make(settings, batch)
        if not steps:
            continue
        log(f'timing {len(steps)} rows at batch {batch}: warm-up {warmup}, {reps} repetitions')
        samples = time_steps(steps, reps, warmup, min_time, synchronizer(settings.device), log)
        rows.extend(summarize(cases[i], batch, settings, s) for i, s in samples.items())
        del steps
    add_speedups(rows)
    return rows


def ort_applicable(settings: Settings) -> bool:
    return settings.device == 'cpu' and settings.dtype == 'fp32'


# ---------------------------------------------------------------------------------------------
# Output

COLUMNS = ['model', 'form', 'batch', 'res', 'img/s', 'IQR img/s', 'latency ms', 'vs PoolFormer', 'vs plain']


def _ratio(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.2f}x'


def table_cells(row: dict) -> List[str]:
    spread = '-' if row['reps'] < 2 else f'{row["img_s_p25"]:.1f}-{row["img_s_p75"]:.1f}'
    return [row['model'], row['form'], str(row['batch']), str(row['res']), f'{row["img_s"]:.1f}', spread,
            f'{row["latency_ms"]:.1f}', _ratio(row['vs_poolformer']), _ratio(row['vs_plain'])]


def format_table(rows: List[dict]) -> str:
    cells = [COLUMNS] + [table_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ['  '.join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)


def format_markdown(rows: List[dict], env: Dict[str, str], command: str) -> str:
    lines = [f'Command: `{command}`', '',
             'Machine: ' + ', '.join(f'{k} {v}' for k, v in env.items()), '',
             '| ' + ' | '.join(COLUMNS) + ' |',
             '|' + '|'.join('---' if i < 2 else '---:' for i in range(len(COLUMNS))) + '|']
    lines += ['| ' + ' | '.join(table_cells(r)) + ' |' for r in rows]
    return '\n'.join(lines) + '\n'


CSV_FIELDS = ['model', 'form', 'group', 'batch', 'res', 'reps', 'img_s', 'img_s_p25', 'img_s_p75', 'img_s_min',
              'img_s_max', 'latency_ms', 'vs_poolformer', 'vs_plain', 'device', 'dtype', 'threads',
              'channels_last', 'compile']


def write_csv(path: Path, rows: List[dict], settings: Settings) -> None:
    extra = {'device': settings.device, 'dtype': settings.dtype, 'threads': settings.threads,
             'channels_last': int(settings.channels_last), 'compile': int(settings.compile)}
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore')
        writer.writeheader()
        for r in rows:
            cells = {k: ('' if v is None else f'{v:.4f}' if isinstance(v, float) else v) for k, v in r.items()}
            writer.writerow({**cells, **extra})


def load_average() -> str:
    try:
        return ' '.join(f'{v:.2f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def environment(settings: Settings) -> Dict[str, str]:
    env = {'cpu': cpu_model(), 'nproc': str(os.cpu_count()), 'torch': torch.__version__, 'timm': timm.__version__,
           'threads': str(settings.threads), 'device': settings.device, 'dtype': settings.dtype,
           'channels_last': str(settings.channels_last), 'compile': str(settings.compile)}
    if settings.device.startswith('cuda'):
        env['gpu'] = torch.cuda.get_device_name(settings.device)
    return env


# ---------------------------------------------------------------------------------------------
# Command line


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line and exit 2, like every tool of this project (argparse would add its usage).
        print(f'error: {message}', file=sys.stderr)
        sys.exit(2)


def int_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a comma-separated list of integers') from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: give positive integers')
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: give a positive integer')
    return value


def build_parser() -> Parser:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--archs', default=None,
                   help='comma-separated: s12,s24,... (RIFormer vs PoolFormer rows), efficientvit_m0, '
                        'fasternet_t0, wildcards or family names (default s12; mini with --smoke)')
    p.add_argument('--forms', default=None,
                   help='only these forms, e.g. timm,plain,deploy (default: all)')
    p.add_argument('--batch-sizes', '-b', type=int_list, default=None, help='comma-separated (default 16)')
    p.add_argument('--img-size', '--res', type=positive_int, default=None, help='resolution (default 224)')
    p.add_argument('--threads', type=positive_int, default=None,
                   help='torch / ONNX Runtime intra-op threads (default: torch default)')
    p.add_argument('--channels-last', action='store_true', help='models and inputs in channels_last')
    p.add_argument('--compile', action='store_true', help='torch.compile every torch row (warm-up compiles)')
    p.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    p.add_argument('--dtype', default='fp32', choices=list(DTYPES), help='fp32 (default), bf16 or fp16')
    p.add_argument('--reps', type=positive_int, default=None, help='timed repetitions per row (default 7)')
    p.add_argument('--warmup', type=int, default=None, help='untimed calls per row first (default 2)')
    p.add_argument('--min-time', type=float, default=None,
                   help='seconds one measurement lasts at least (default 0.2; 0 = one call)')
    p.add_argument('--smoke', action='store_true',
                   help='tiny run for tests: mini models, batch 2, 32px, 1 repetition, 1 warm-up')
    p.add_argument('--markdown', type=Path, help='also write the table as markdown here')
    p.add_argument('--csv', type=Path, help='also write all numbers as CSV here')
    return p


def settings_from_args(args) -> Settings:
    device = args.device
    if device != 'cpu' and not device.startswith('cuda'):
        raise BenchmarkError(f'unknown device {device!r}; use cpu or cuda[:N]')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise BenchmarkError(f'device {device!r} asked for, but CUDA is not available here')
    if args.dtype == 'fp16' and device == 'cpu':
        raise BenchmarkError('fp16 needs --device cuda; use bf16 or fp32 on CPU')
    threads = args.threads or torch.get_num_threads()
    return Settings(img_size=args.img_size or (32 if args.smoke else 224), device=device, dtype=args.dtype,
                    channels_last=args.channels_last, compile=args.compile, threads=threads,
                    num_classes=10 if args.smoke else 1000)


def select_forms(cases: List[Case], forms: Optional[str]) -> List[Case]:
    if not forms:
        return cases
    wanted = {f.strip() for f in forms.split(',') if f.strip()}
    known = {c.form for c in cases}
    unknown = wanted - known
    if unknown:
        raise BenchmarkError(f'unknown form(s) {", ".join(sorted(unknown))}; these archs have {", ".join(sorted(known))}')
    return [c for c in cases if c.form in wanted]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        cases = select_forms(resolve_archs(args.archs or ('mini' if args.smoke else 's12')), args.forms)
        if args.warmup is not None and args.warmup < 0:
            raise BenchmarkError('--warmup must be >= 0')
        if args.min_time is not None and args.min_time < 0:
            raise BenchmarkError('--min-time must be >= 0')
        batch_sizes = args.batch_sizes or ([2] if args.smoke else [16])
        reps = args.reps or (1 if args.smoke else 7)
        warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
        min_time = args.min_time if args.min_time is not None else (0. if args.smoke else 0.2)
        for path in (args.markdown, args.csv):
            if path is not None and not path.parent.is_dir():
                raise BenchmarkError(f'{path}: folder {path.parent} does not exist')
    except BenchmarkError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2

    torch.set_num_threads(settings.threads)
    env = environment(settings)
    command = 'python tools/benchmark.py ' + ' '.join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print('machine: ' + ', '.join(f'{k} {v}' for k, v in env.items()))
    env['load at start'] = load_average()
    print(f'load average at start: {env["load at start"]}')
    if os.cpu_count() and os.getloadavg()[0] > 0.5 * os.cpu_count():
        print('warning: the machine is busy; absolute numbers will be low (the interleaving keeps ratios fairer)')
    rows = run_benchmark(cases, settings, batch_sizes, reps, warmup, min_time)
    env['load at end'] = load_average()
    print()
    print(format_table(rows))
    print(f'\nload average at end: {env["load at end"]}')
    if args.markdown:
        args.markdown.write_text(format_markdown(rows, env, command))
        print(f'markdown -> {args.markdown}')
    if args.csv:
        write_csv(args.csv, rows, settings)
        print(f'csv -> {args.csv}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
