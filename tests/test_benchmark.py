"""distill.benchmark and tools/benchmark.py: smoke runs give well-formed tables and files, bad input one error line.
Speeds are never asserted here: they live in the benchmark's output (docs/RESULTS.md)."""
import copy
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import models
from distill import benchmark
from helpers import randomize
from distill.cli import benchmark as benchmark_tool

ROOT = Path(__file__).resolve().parents[1]

MINI_ROWS = [('poolformer_mini', 'timm'), ('poolformer_mini', 'teacher'), ('riformer_mini', 'train'), ('riformer_mini', 'plain'),
             ('riformer_mini', 'deploy'), ('riformer_mini', 'deploy-ref'), ('riformer_mini', 'deploy-ort')]


def run_main(capsys, *args):
    code = benchmark_tool.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out):
    """The printed table: header cells and one list of cells per row."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ['model', 'form'])
    rows = []
    for line in lines[start + 2:]:
        if not line.strip():
            break
        rows.append(line.split())
    return lines[start], rows


def test_smoke_run_table_markdown_csv(tmp_path, capsys):
    md, table_csv = tmp_path / 'bench.md', tmp_path / 'bench.csv'
    code, out, err = run_main(capsys, '--smoke', '--archs', 'mini', '--markdown', md, '--csv', table_csv)
    assert code == 0, err
    header, rows = table_rows(out)
    for column in benchmark.COLUMNS:
        assert column in header
    assert [tuple(r[:2]) for r in rows] == MINI_ROWS
    for r in rows:
        assert r[2:4] == ['2', '32'] and float(r[4]) > 0 and r[5] == '-'   # one repetition: no spread
    assert rows[0][-2] == '1.00x' and rows[0][-1].endswith('x') and rows[3][-1] == '1.00x'
    assert 'load average at start' in out and 'nproc' in out
    assert 'host malloc glibc malloc keeps freed memory' in out and 'cpu flags' in out

    lines = [line for line in md.read_text().splitlines() if line.startswith('|')]
    assert 'Command: `python tools/benchmark.py --smoke' in md.read_text()
    cells = [[c.strip() for c in line.strip('|').split('|')] for line in lines]
    assert cells[0] == benchmark.COLUMNS and all(set(c) <= set('-:') for c in cells[1])
    assert [tuple(c[:2]) for c in cells[2:]] == MINI_ROWS
    assert all(len(c) == len(benchmark.COLUMNS) for c in cells)

    with open(table_csv, newline='') as f:
        records = list(csv.DictReader(f))
    assert [(r['model'], r['form']) for r in records] == MINI_ROWS
    for r in records:
        assert float(r['img_s']) > 0 and float(r['latency_ms']) > 0 and r['device'] == 'cpu'
        assert float(r['img_s_min']) <= float(r['img_s']) <= float(r['img_s_max'])
    assert float(records[0]['vs_poolformer']) == pytest.approx(1.0)
    assert float(records[3]['vs_plain']) == pytest.approx(1.0)


def test_context_families_and_form_filter(capsys):
    code, out, err = run_main(capsys, '--smoke', '--archs', 'efficientvit_m0,fasternet_t0', '--img-size', 64,
                              '--forms', 'timm,fused', '--min-time', 0)
    assert code == 0, err
    _, rows = table_rows(out)
    assert [tuple(r[:2]) for r in rows] == [('efficientvit_m0', 'timm'), ('efficientvit_m0', 'fused'),
                                            ('fasternet_t0', 'timm')]
    assert all(r[-2:] == ['-', '-'] for r in rows)     # no PoolFormer / plain baseline in these groups


def test_resolve_archs_aliases_wildcards_and_dedup():
    cases = benchmark.resolve_archs('s12, poolformer_s12,riformer_s12')
    assert [c.model for c in cases] == ['poolformer_s12'] * 2 + ['riformer_s12'] * 5
    assert len(benchmark.resolve_archs('efficientvit')) == 2 * 6
    assert {c.model for c in benchmark.resolve_archs('fasternet_t*')} == {'fasternet_t0', 'fasternet_t1', 'fasternet_t2'}


def test_timing_is_interleaved_and_rotated():
    calls = []
    steps = {k: (lambda k=k: calls.append(k)) for k in 'abc'}
    samples = benchmark.time_steps(steps, reps=3, warmup=1, min_time=0, sync=lambda: None, log=lambda *_: None)
    assert calls == list('abc') + list('abc') + list('bca') + list('cab')
    assert all(len(v) == 3 for v in samples.values())


def test_speedups_against_group_baselines():
    rows = [dict(group='s12', batch=16, role=role, img_s=v)
            for role, v in (('poolformer', 10.), ('plain', 20.), ('', 30.))]
    rows.append(dict(group='other', batch=16, role='', img_s=5.))
    benchmark.add_speedups(rows)
    assert [r['vs_poolformer'] for r in rows] == [1., 2., 3., None]
    assert [r['vs_plain'] for r in rows] == [.5, 1., 1.5, None]
    assert all('vs_plain_paired' not in r for r in rows)        # no per-repetition times given


def test_paired_ratio_per_repetition():
    """The paired 'vs plain' divides the times of the same repetition: a slow repetition that
    hits both rows cancels, one that hits a single row shows in the IQR."""
    plain = dict(group='t', batch=16, role='plain', img_s=1., seconds=[1., 3., 1.])
    both_slow = dict(group='t', batch=16, role='', img_s=1., seconds=[2., 6., 2.])
    one_slow = dict(group='t', batch=16, role='', img_s=1., seconds=[2., 2., 4.])
    benchmark.add_speedups([plain, both_slow, one_slow])
    assert plain['vs_plain_paired'] == (1., 1., 1.)
    assert both_slow['vs_plain_paired'] == pytest.approx((.5, .5, .5))
    assert one_slow['vs_plain_paired'] == pytest.approx((.5, .375, 1.))


@pytest.mark.parametrize('args, message', [
    (['--archs', 'resnet50'], "unknown architecture 'resnet50'"),
    (['--archs', 's12', '--forms', 'fused'], 'unknown form(s) fused'),
    (['--batch-sizes', '0'], 'positive integers'),
    (['--batch-sizes', 'x'], 'not a comma-separated list'),
    (['--dtype', 'fp64'], 'invalid choice'),
    (['--device', 'tpu'], "unknown device 'tpu'"),
    (['--dtype', 'fp16'], 'fp16 needs --device cuda'),
    (['--reps', '-1'], 'positive integer'),
    (['--bogus'], 'unrecognized arguments'),
    (['--teacher-precision', 'fp16'], 'invalid choice'),
    (['--train-layout', 'nhwc'], 'invalid choice'),
])
def test_bad_input_one_error_line(args, message, capsys):
    try:
        code = benchmark_tool.main(['--smoke'] + args)
    except SystemExit as e:      # argparse's errors exit; the tool's own return
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], err


def test_cli_error_has_no_traceback():
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'benchmark.py'), '--archs', 'nope'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith('error: ')
    assert 'Traceback' not in result.stderr


# The deploy form's oneDNN-fused CPU path (models/riformer.py) must compute the reference function.
@pytest.mark.parametrize('channels_last', [False, True])
def test_fused_deploy_path_is_exact_and_keeps_layout(channels_last):
    model = randomize(timm.create_model('riformer_mini', num_classes=10)).eval()
    fused = models.reparameterize(copy.deepcopy(model))
    reference = copy.deepcopy(fused)
    for block in reference.modules():
        if isinstance(block, models.RIFormerBlock):
            block.fused = False
    x = torch.randn(3, 3, 48, 48) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for a, b in [(model, fused), (reference, fused)]:
            errors = models.compare_forms(a, b, x)
            assert max(errors.values()) < 1e-5, errors
        assert models.relative_error(model(x), fused(x)) < 1e-5      # the whole-trunk path of forward()
        _, stages = fused.forward_intermediates(x)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert all(s.is_contiguous(memory_format=layout) for s in stages)
    assert sorted(fused.state_dict()) == sorted(reference.state_dict())


def test_help_names_the_training_step_rows():
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / 'tools' / 'benchmark.py'), '--help'],
                         capture_output=True, text=True, check=True).stdout
    assert 'train_s12' in ' '.join(out.split())        # the name the README uses


TRAIN_FORMS = ['student-step', 'imitation-step', 'imitation-fp32', 'imitation-fp32-ref', 'imitation-norel', 'soft-kd-step']


@pytest.mark.parametrize('layout', ['channels_last', 'nchw'])
def test_training_rows_with_cost_breakdown(layout, tmp_path, capsys):
    md, table_csv = tmp_path / 'train.md', tmp_path / 'train.csv'
    code, out, err = run_main(capsys, '--smoke', '--archs', 'train_mini', '--reps', 2, '--warmup', 1,
                              '--train-layout', layout, '--teacher-precision', 'bf16',
                              '--markdown', md, '--csv', table_csv)
    assert code == 0, err
    _, rows = table_rows(out)
    assert [r[1] for r in rows] == TRAIN_FORMS and rows[0][-1] == '1.00x'
    assert 'warm-up riformer_mini (imitation-step): first call' in out
    assert 'teacher precision bf16 -> bfloat16' in out and f'train layout {layout}' in out
    breakdown = out[out.index('training step by phase'):].splitlines()
    header = breakdown[1].split('  ')
    assert [h.strip() for h in header if h.strip()][3:8] == [f'{p} ms' for p in benchmark.PHASES]
    cells = {line.split()[1]: line.split() for line in breakdown[3:3 + len(TRAIN_FORMS)]}
    assert set(cells) == set(TRAIN_FORMS)
    assert cells['student-step'][3] == '0' and float(cells['imitation-step'][3]) > 0   # teacher fwd
    with open(table_csv, newline='') as f:
        records = {r['form']: r for r in csv.DictReader(f)}
    for form, r in records.items():
        phases = [float(r[f'{p.replace(" ", "_")}_ms']) for p in benchmark.PHASES]
        assert all(v >= 0 for v in phases[1:]) and phases[1] > 0 and phases[3] > 0     # student fwd, bwd
        # The phases cover the step: their sum is the measured step time up to the clock reads.
        assert sum(phases) == pytest.approx(float(r['latency_ms']), rel=0.2), form
    assert 'Training step by phase' in md.read_text()
    assert [h.strip() for h in header if h.strip()][-4:] == ['GFLOP', 'GFLOP/s', 'FLOP ratio', 'paired vs plain (IQR)']
    assert cells['student-step'][-3:] == ['1.00x', '1.00x', '(1.00-1.00)']
    assert all(float(r['vs_plain_paired_p25']) <= float(r['vs_plain_paired']) <= float(r['vs_plain_paired_p75'])
               for r in records.values())
    plain = float(records['student-step']['gflop'])
    for form, r in records.items():
        assert float(r['flop_ratio']) == pytest.approx(plain / float(r['gflop']), rel=1e-3), form
    assert float(records['imitation-step']['flop_ratio']) < 1


def test_flop_counts_of_training_rows():
    """The counted FLOPs add up: soft KD adds exactly the teacher's forward to the plain step,
    the feature terms add their products on top, and the fused teacher counts as its reference."""
    from torch.utils.flop_counter import FlopCounterMode
    from distill.benchmark.training import make_training_step
    settings = benchmark.Settings(img_size=32, num_classes=10, teacher_precision='fp32')
    plain = make_training_step('mini', None)(settings, 2)
    soft = make_training_step('mini', 'settings', terms='soft')(settings, 2)
    fused = make_training_step('mini', 'fp32')(settings, 2)
    reference = make_training_step('mini', 'fp32', fused=False)(settings, 2)
    flops = {name: step.count_flops() for name, step in
             (('plain', plain), ('soft', soft), ('fused', fused), ('reference', reference))}
    teacher = soft.timed_teacher.module
    models.set_fused(teacher, False)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        teacher(soft.x)
    assert counter.get_total_flops() > 0
    assert flops['soft'] - flops['plain'] == counter.get_total_flops()
    assert flops['fused'] == flops['reference'] > flops['soft']
    # Counting is an untimed call that leaves each teacher's path as it was.
    assert all(b.fused for b in models.fused_blocks(fused.timed_teacher.module))
    assert not any(b.fused for b in models.fused_blocks(reference.timed_teacher.module))
    assert models.fused_blocks(fused.timed_teacher.module)
    assert fused.phases == [] and plain.phases == []
    fused.compiled = True
    assert fused.count_flops() is None


def test_training_rows_run_the_paper_recipes_term_sets():
    """The rows for the later windows of the paper recipes run exactly their terms."""
    from distill.benchmark.training import make_training_step
    settings = benchmark.Settings(img_size=32, num_classes=10, teacher_precision='fp32')
    for terms, active in (('all', ['soft', 'l_in_hidden', 'l_out', 'l_rel']),
                          ('norel', ['soft', 'l_in_hidden', 'l_out']), ('soft', ['soft'])):
        step = make_training_step('mini', 'settings', terms=terms)(settings, 2)
        assert [t for t in step.criterion.active_terms(0)] == active, terms
        step()
        assert step.phases[0]['teacher fwd'] > 0
    with pytest.raises(ValueError, match='terms'):
        make_training_step('mini', 'settings', terms='none')


def test_training_step_phases_and_device_syncs():
    from distill.benchmark.training import TimedModule, make_training_step
    settings = benchmark.Settings(img_size=32, num_classes=10, teacher_precision='fp32')
    step = make_training_step('mini', 'settings')(settings, 2)
    syncs = []
    step.sync = step.timed_teacher.sync = lambda: syncs.append(1)     # what CUDA's synchronize would be
    step()
    step()
    assert len(step.phases) == 2 and all(set(p) == set(benchmark.PHASES) for p in step.phases)
    assert all(p['teacher fwd'] > 0 for p in step.phases)
    assert len(syncs) == 2 * (5 + 2)            # 5 phase boundaries + teacher start/end per call
    # The teacher inside the criterion is timed, not replaced: its recorders still feed the losses.
    assert isinstance(step.criterion.teacher, TimedModule) and step.criterion.teacher_rec is not None
    assert benchmark.synchronizer('cuda:0') is torch.cuda.synchronize


def test_cuda_paths_resolve_without_a_gpu(monkeypatch):
    from distill import teacher as teacher_mod
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: True)
    assert teacher_mod.resolve_precision('auto', 'cuda') == torch.bfloat16
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda including_emulation=True: False)
    assert teacher_mod.resolve_precision('auto', 'cuda:0') == torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(benchmark.BenchmarkError, match='CUDA is not available'):
            benchmark.Settings(device='cuda', dtype='bf16').check()
