"""Inference throughput and latency of RIFormer's forms next to PoolFormer and other backbones,
and the cost of a module-imitation training step (`tools/benchmark.py` is its command line).

Every row is measured in one process: all models are built first, warmed up, and then timed in
interleaved repetitions (one measurement of each row per repetition, the order rotated every
repetition), so that load from other processes spreads over all rows instead of hitting one.
A row reports the median over repetitions and the interquartile range.

    case.py    one row (`Case`) and the settings every row is built with
    cases.py   the case families behind `--archs`
    training.py  plain vs module-imitation training steps, timed per phase
    timing.py  the interleaved timer (also used by tools/pipeline.py)
    report.py  medians, speedups, table / markdown / CSV
"""
from typing import List, Sequence

from models.quantize import openvino_refusal

from .cases import (
    DTYPES, FAMILIES, RIFORMER_SIZES, BenchmarkError, Case, Family, Settings, ort_applicable, resolve_archs,
    select_forms)
from .report import (
    COLUMNS, CSV_FIELDS, add_speedups, environment, format_breakdown, format_markdown, format_table, phase_stats,
    summarize, write_csv)
from . import deploy
from .timing import load_average, synchronizer, time_steps
from .training import PHASES


def run_benchmark(cases: List[Case], settings: Settings, batch_sizes: Sequence[int], reps: int,
                  warmup: int, min_time: float, log=print, profile: bool = False) -> List[dict]:
    """Build every case at each batch size, time them interleaved, and return one row each.
    `profile`: the deploy rows run in PyTorch also get their time per operator category."""
    rows = []
    if profile:
        deploy.name_inductor_kernels()
    for batch in batch_sizes:
        steps = {}
        for i, case in enumerate(cases):
            if case.form.endswith('-ort') and not ort_applicable(settings):
                log(f'  skip {case.model} {case.form}: ONNX Runtime rows run on CPU in fp32 only')
                continue
            if deploy.FORMS.get(case.form, ('', ''))[1] == 'openvino' and openvino_refusal():
                log(f'  skip {case.model} {case.form}: {openvino_refusal()}')
                continue
            log(f'  build {case.model} ({case.form}), batch {batch}')
            steps[i] = case.make(settings, batch)
        if not steps:
            continue
        log(f'timing {len(steps)} rows at batch {batch}: warm-up {warmup}, {reps} repetitions')
        labels = {i: f'{cases[i].model} ({cases[i].form})' for i in steps}
        samples = time_steps(steps, reps, warmup, min_time, synchronizer(settings.device), log, labels)
        for i, s in samples.items():
            row = summarize(cases[i], batch, settings, s)
            if hasattr(steps[i], 'phases'):          # training steps: where the time went
                row['phases'] = phase_stats(steps[i].phases[max(warmup, 1):])
                flops = steps[i].count_flops()
                row['gflop'] = flops / 1e9 if flops else None
            if hasattr(steps[i], 'build_seconds'):    # deploy rows: export / quantize / compile time
                row['build_seconds'] = steps[i].build_seconds
                row['int8_isa'] = getattr(steps[i], 'int8_isa', None)
                if profile and deploy.FORMS[cases[i].form][1] in ('pytorch', 'inductor'):
                    row['ops'] = deploy.op_breakdown(steps[i])
            rows.append(row)
        del steps
    add_speedups(rows)
    deploy.paired(rows)
    return rows


__all__ = [
    'BenchmarkError', 'COLUMNS', 'PHASES', 'CSV_FIELDS', 'Case', 'DTYPES', 'FAMILIES', 'Family', 'RIFORMER_SIZES',
    'Settings', 'add_speedups', 'environment', 'format_breakdown', 'format_markdown', 'format_table',
    'load_average', 'ort_applicable', 'phase_stats', 'resolve_archs', 'run_benchmark', 'select_forms', 'summarize', 'synchronizer',
    'time_steps', 'write_csv',
]
