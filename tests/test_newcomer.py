"""A newcomer's first hour: the thread choice on a busy machine, what a run says at its start and
end, commands that explain themselves, and messages in words."""
import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import FAST_TRAIN

from distill import threads
from distill import train as train_mod

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / 'recipes' / 'digits'
FAST = FAST_TRAIN


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('fresh_accelerate_state')]   # conftest.py


# --- threads ------------------------------------------------------------------------------------

@pytest.mark.parametrize('cores, busy, expected', [
    (2, 0.1, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1), (16, 3.2, 13), (4, None, 4), (1, 5.0, 1)])
def test_idle_cores(cores, busy, expected):
    assert threads.idle_cores(cores, busy) == expected


def test_choose_threads_on_a_busy_machine(monkeypatch):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(threads, 'available_cores', lambda: 2)
    monkeypatch.setattr(threads, 'busy_cores', lambda interval=0.25: 1.1)
    n, note = threads.choose_threads()
    assert n == 1 and note.startswith('note: the machine is busy (1.1 of 2 cores') and 'train.threads' in note
    assert threads.choose_threads(2) == (2, None)              # the recipe decides
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    assert threads.choose_threads() == (2, None)               # so does the environment
    monkeypatch.delenv('OMP_NUM_THREADS')
    monkeypatch.setattr(threads, 'busy_cores', lambda interval=0.25: 0.2)
    assert threads.choose_threads() == (2, None)


def test_busy_cores_sees_a_spinning_process():
    """A process spinning on one core shows as about one busy core."""
    spinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        busy = threads.busy_cores(0.5)
    finally:
        spinner.kill()
    assert busy is not None and busy >= 0.7


def fake_proc_stat(busy_cpus, cpus=64, jiffies=100):
    """Two /proc/stat texts of a `cpus`-core host `jiffies` apart: `busy_cpus` spent them in user
    time, the others idle."""
    def text(step):
        lines = ['cpu  0 0 0 0 0 0 0 0 0 0']                     # the host-wide line, not read
        for n in range(cpus):
            user, idle = (step * jiffies, 0) if n in busy_cpus else (0, step * jiffies)
            lines.append(f'cpu{n} {user} 0 0 {idle} 0 0 0 0 0 0')
        return '\n'.join(lines + ['intr 0', 'ctxt 0']) + '\n'
    return iter([text(0), text(1)])


@pytest.mark.parametrize('allowed_busy, expected_threads, expected_busy', [
    (False, 2, 0.0),       # pinned to 2 idle cores of a host whose 62 other cores are busy
    (True, 1, 2.0)])       # pinned to 2 busy cores of an otherwise idle host
def test_thread_count_reads_the_allowed_cores_of_a_busy_host(monkeypatch, allowed_busy, expected_threads,
                                                             expected_busy):
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    allowed = {6, 7}
    busy = allowed if allowed_busy else set(range(64)) - allowed
    monkeypatch.setattr(threads, 'allowed_cpus', lambda: set(allowed))
    snapshots = fake_proc_stat(busy)
    monkeypatch.setattr(threads, 'read_proc_stat', lambda: next(snapshots))
    assert threads.busy_cores(0) == pytest.approx(expected_busy)
    snapshots = fake_proc_stat(busy)
    assert threads.available_cores() == 2
    assert threads.choose_threads()[0] == expected_threads


def test_busy_cores_without_the_allowed_cpus_lines_is_unknown(monkeypatch):
    monkeypatch.setattr(threads, 'allowed_cpus', lambda: {100})
    monkeypatch.setattr(threads, 'read_proc_stat', lambda: 'cpu  1 2 3 4\ncpu0 1 2 3 4\n')
    assert threads.busy_cores(0) is None


# --- what a run says ----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('t') / 'teacher'
    from contextlib import redirect_stdout
    import io
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert train_mod.main([str(DIGITS / 'teacher.yaml'), *FAST, 'train.epochs=2', 'train.threads=1',
                               f'train.output_dir={out}']) == 0
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    return out, buf.getvalue()


def test_a_run_says_where_its_results_go(teacher_run):
    out, said = teacher_run
    lines = said.splitlines()
    assert f'output: {out.resolve()}  (watch it: tensorboard --logdir {out}, tab CUSTOM SCALARS)' in lines
    summary = json.loads((out / 'summary.json').read_text())
    best = summary['best_epoch']
    assert best in (1, 2) and summary['history'][best - 1]['val/top1'] == pytest.approx(summary['best_top1'], abs=1e-4)
    closing = said[said.index('finished 2 epochs'):]
    assert f'best top-1 {summary["best_top1"]:.2f} at epoch {best}' in closing
    for name in ('model.safetensors', 'best.safetensors', 'summary.json'):
        assert str(out / name) in closing
    assert f'next: use it as a teacher: teacher.checkpoint={out / "model.safetensors"}' in closing
    assert json.loads((out / 'checkpoints' / 'epoch_0002' / 'train_state.json').read_text())['threads'] == 1


def test_a_student_run_names_the_reparam_command(teacher_run, tmp_path, capsys):
    teacher, _ = teacher_run
    out = tmp_path / 's'
    assert train_mod.main([str(DIGITS / 'imitation.yaml'), *FAST, 'train.epochs=1', f'train.output_dir={out}',
                           f'teacher.checkpoint={teacher / "model.safetensors"}']) == 0
    said = capsys.readouterr().out
    assert f'next: python tools/reparam.py {out / "model.safetensors"}' in said
    # no host-memory line at every start (an implementation detail)
    assert 'host memory' not in said


def test_resume_reports_only_what_changes_the_run(teacher_run, tmp_path, capsys):
    teacher, _ = teacher_run
    out = tmp_path / 'r'
    common = [str(DIGITS / 'plain.yaml'), *FAST, f'train.output_dir={out}', 'train.threads=1']
    assert train_mod.main([*common, 'train.epochs=2']) == 0
    capsys.readouterr()
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    common = [c for c in common if c != 'train.progress=false'] + ['train.progress=true']
    assert train_mod.main([*common, 'train.epochs=1', 'resume=true']) == 0
    said = capsys.readouterr().out
    assert 'train.progress' not in said
    assert 'resume: train.epochs 2 -> 1: the run already has 2 epochs; nothing to train' in said


# --- commands that explain themselves ------------------------------------------------------------

def console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    lines = [line.strip() for line in cfg['options.entry_points']['console_scripts'].splitlines() if '=' in line]
    return {name.strip(): target.strip() for name, target in (line.split('=', 1) for line in lines)}


@pytest.mark.parametrize('name', sorted(console_scripts()))
def test_every_command_has_help(name):
    module, func = console_scripts()[name].split(':')
    code = f'import sys; sys.argv = ["{name}", "--help"]; from {module} import {func}; sys.exit({func}())'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-1000:]
    assert 'usage' in result.stdout.lower() and result.stderr == ''


def test_train_help_names_its_options():
    result = subprocess.run([sys.executable, str(ROOT / 'distill' / 'train.py'), '--help'], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for word in ('riformer-train', 'distill/train.py', '--check', 'resume=true', 'key.sub=value'):
        assert word in result.stdout


def test_evaluate_finds_the_recipe_in_the_checkpoint(teacher_run, capsys):
    from distill.cli import evaluate
    out, _ = teacher_run
    assert evaluate.main([str(out / 'model.safetensors')]) == 0
    assert 'top-1' in capsys.readouterr().out
    assert evaluate.main([str(out / 'missing.safetensors')]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and 'no such checkpoint' in err


def test_pretrained_offline_is_one_clear_error(monkeypatch):
    import timm
    import models
    from models import pretrained
    monkeypatch.setattr(pretrained, '_cached', lambda source: False)
    monkeypatch.setattr(pretrained, '_resolves', lambda host: False)
    with pytest.raises(models.CheckpointError, match=r'riformer_s12: its weights .* cannot be reached; download it '
                                                      r'where there is network .*pretrained_cfg_overlay=dict\(file=PATH\)'):
        timm.create_model('riformer_s12', pretrained=True)


def test_a_text_file_is_named_in_words(tmp_path, capsys):
    from distill.cli import evaluate, reparam
    text = tmp_path / 'notes.pth'
    text.write_text('hello\n')
    assert reparam.main([str(text)]) == 2
    err = capsys.readouterr().err
    assert 'neither a torch.save() file nor safetensors' in err and '(101)' not in err and err.count('\n') == 1
    assert evaluate.main([str(tmp_path / 'gone.pth'), '--recipe', str(DIGITS / 'imitation.yaml')]) == 2
    err = capsys.readouterr().err
    assert 'no such checkpoint' in err and 'efficientvit' not in err
