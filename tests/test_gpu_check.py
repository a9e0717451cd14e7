"""The GPU check (tools/gpu_check.py, distill/gpu_check.py): here, without CUDA, it skips with one
line and exit code 3; its report format; on a machine with CUDA, the checks themselves."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill import gpu_check

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'gpu_check.py'), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA device: the check runs there')
def test_without_cuda_it_skips_with_one_line_and_exit_3(tmp_path):
    result = run_tool('--out', tmp_path / 'report')
    assert result.returncode == gpu_check.EXIT_NO_CUDA == 3
    assert result.stdout == '' and result.stderr.count('\n') == 1
    assert result.stderr.startswith('skipped: no CUDA device here')
    assert not (tmp_path / 'report').exists()


def test_unknown_check_is_one_line():
    result = run_tool('--only', 'environment,compiel')
    assert result.returncode == 2 and result.stderr.count('\n') == 1
    assert "'environment,compiel': choose from environment, imitation_step" in result.stderr


def test_the_cli_knows_every_check():
    from distill.cli.gpu_check import CHECK_NAMES
    assert CHECK_NAMES == tuple(name for name, _ in gpu_check.CHECKS) == tuple(gpu_check.FUNCTIONS)
    assert sum(limit for _, limit in gpu_check.CHECKS) <= 600 - 30        # the 10 minutes, with start-up


def test_a_check_that_fails_is_a_row_with_its_reason(tmp_path):
    row = gpu_check.run_check('environment', 120, tmp_path) if not torch.cuda.is_available() else None
    if row is None:
        pytest.skip('environment passes on a CUDA machine')
    assert row['status'] == 'failed' and row['error'].startswith('exit 1: ')
    assert (tmp_path / 'environment.log').is_file() and not (tmp_path / 'environment.json').exists()


def test_report_format():
    report = {'started': '2026-12-07T10:00:00Z', 'seconds': 412.0, 'not_checked': ['more than one GPU'], 'checks': [
        {'name': 'environment', 'status': 'ok', 'seconds': 3.1, 'limit_s': 30,
         'result': {'device': 'NVIDIA H100', 'cuda': '13.0', 'nccl': '2.27.3', 'bf16_native': True}},
        {'name': 'imitation_step', 'status': 'ok', 'seconds': 50.0, 'limit_s': 120, 'result': {'rows': [
            {'recipe': 'riformer_s12', 'student_precision': 'bf16', 'batch': 128, 'images_per_s': 1234.5,
             'peak_memory_gib': 20.5}]}},
        {'name': 'compile', 'status': 'failed', 'seconds': 150.0, 'limit_s': 150, 'error': 'ran past its 150 s'},
        {'name': 'throughput', 'status': 'skipped', 'seconds': 0, 'limit_s': 120, 'error': 'not asked for (--only)'},
    ]}
    text = gpu_check.markdown(report)
    lines = text.splitlines()
    assert lines[0] == '# GPU check (2026-12-07T10:00:00Z, 412.0 s)'
    assert '| environment | ok | 3.1 (30) | NVIDIA H100, CUDA 13.0, NCCL 2.27.3, bf16 native True |' in lines
    assert '| imitation_step | ok | 50.0 (120) | riformer_s12 bf16 batch 128: 1234.5 img/s, 20.5 GiB |' in lines
    assert '| compile | failed | 150.0 (150) | ran past its 150 s |' in lines
    assert text.endswith('## not checked\n\n- more than one GPU\n')
    json.dumps(report)


def test_the_checks_imitation_step_runs_on_any_device():
    # the step the CUDA checks time, here on the CPU at batch 2: every term finite, every weight moves
    recipe, student, criterion, images, targets, optimizer = gpu_check.imitation_setup(
        'recipes/riformer_s12.yaml', 2, torch.device('cpu'))
    before = [p.detach().clone() for p in student.parameters()]
    student.train()
    loss = gpu_check.imitation_step_fn(student, criterion, images, targets, optimizer, True)()
    assert torch.isfinite(loss) and images.shape == (2, 3, 224, 224)
    assert sorted(criterion.active_terms(0)) == ['l_in_hidden', 'l_out', 'l_rel', 'soft']
    assert all(not torch.equal(a, b) for a, b in zip(before, student.parameters()))
    criterion.remove_hooks()


@cuda
def test_imitation_step_in_bf16_with_the_fused_teacher():
    device = torch.device('cuda')
    recipe, student, criterion, images, targets, optimizer = gpu_check.imitation_setup(
        'recipes/riformer_s12.yaml', 8, device)
    student.train()
    loss = gpu_check.imitation_step_fn(student, criterion, images, targets, optimizer, True)()
    assert torch.isfinite(loss) and next(criterion.teacher.parameters()).dtype == torch.bfloat16
    criterion.remove_hooks()


@cuda
def test_ddp_over_nccl_runs_the_imitation_step(tmp_path):
    row = gpu_check.run_check('ddp_nccl', 180, tmp_path)
    assert row['status'] == 'ok', row
    assert row['result']['backend'] == 'nccl' and row['result']['all_reduce_ok']
