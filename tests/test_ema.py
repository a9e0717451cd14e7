"""The weight average (optim.ema_decay): its arithmetic, no recorder hooks on the copy, the
average evaluated and saved in the student's place, and an exact resume."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill import train as train_mod
from distill.ema import EMA_FILE, WARMUP_POWER, StudentEma
from models.errors import CheckpointError
from helpers import FAST_TRAIN, run_cut_at

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / 'recipes' / 'digits'


def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_average_follows_the_warmed_up_decay():
    model = tiny()
    ema = StudentEma(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.)
        ema.update(model, step)
        t = step - 1                                   # timm counts from the first update
        decay = 0. if t <= 0 else min(0.9, 1 - (1 + t) ** -WARMUP_POWER)
        for k, v in model.state_dict().items():
            expected[k] = v.clone() if not v.is_floating_point() else expected[k] * decay + v * (1 - decay)
    got = ema.module.state_dict()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-6)
    assert not torch.equal(got['0.weight'], model.state_dict()['0.weight'])
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_copy_has_no_hooks_of_the_student():
    model = tiny()
    calls = []
    model[0].register_forward_hook(lambda *_: calls.append(1))
    ema = StudentEma(model, decay=0.9)
    ema.module.eval()(torch.zeros(2, 4))
    assert calls == []
    model.eval()(torch.zeros(2, 4))
    assert calls == [1]


def test_save_load_round_trip_and_refusals(tmp_path):
    model = tiny()
    ema = StudentEma(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.)
    ema.update(model, 3)
    ema.save(tmp_path)
    other = StudentEma(tiny(), decay=0.9)
    other.load(tmp_path)
    for k, v in ema.module.state_dict().items():
        assert torch.equal(v, other.module.state_dict()[k])
    with pytest.raises(CheckpointError, match='no ema.safetensors'):
        other.load(tmp_path / 'missing')
    wrong = StudentEma(torch.nn.Linear(5, 2), decay=0.9)
    with pytest.raises(CheckpointError, match='does not fit the student'):
        wrong.load(tmp_path)


def test_bad_decay_is_one_line(tmp_path, capsys):
    code = train_mod.main([str(DIGITS / 'plain.yaml'), *FAST_TRAIN, 'optim.ema_decay=1.5',
                           f'train.output_dir={tmp_path / "run"}'])
    err = capsys.readouterr().err
    assert code != 0 and 'optim.ema_decay 1.5' in err and 'Traceback' not in err


def _cmd(out, *extra):
    return [sys.executable, str(ROOT / 'distill' / 'train.py'), str(DIGITS / 'plain.yaml'), *FAST_TRAIN,
            'train.epochs=2', 'train.checkpoint_every=1', 'train.keep_checkpoints=2', 'optim.ema_decay=0.95',
            'optim.warmup_epochs=0', 'train.threads=1', f'train.output_dir={out}', *extra]


@pytest.mark.slow
def test_trainer_keeps_the_average_and_resumes_it_exactly(tmp_path):
    full = subprocess.run(_cmd(tmp_path / 'full'), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    summary = json.loads((tmp_path / 'full' / 'summary.json').read_text())
    assert {'val/top1', 'val/raw_top1', 'val/raw_top5'} <= set(summary['final'])
    # What is saved is the average: equal to the checkpoint's average, not to the raw weights.
    last = tmp_path / 'full' / 'checkpoints' / 'epoch_0002'
    saved, average = load_file(str(tmp_path / 'full' / 'model.safetensors')), load_file(str(last / EMA_FILE))
    raw = load_file(str(last / 'model.safetensors'))
    assert saved.keys() == average.keys() and all(torch.equal(saved[k], average[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if k in raw and saved[k].is_floating_point())
    # A run resumed from the epoch-1 checkpoint (as a killed run leaves it) ends with the same average.
    cut = run_cut_at(tmp_path / 'full', tmp_path / 'cut')
    resumed = subprocess.run(_cmd(cut, 'resume=true'), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 'resumed from' in resumed.stdout
    again = load_file(str(cut / 'model.safetensors'))
    assert all(torch.equal(saved[k], again[k]) for k in saved)


@pytest.mark.slow
def test_the_average_leaves_the_training_untouched(tmp_path):
    """The raw weights of a run with the average are those of the same run without it: the
    average draws no randomness and changes no step."""
    base = [a for a in _cmd(tmp_path / 'plain') if a != 'optim.ema_decay=0.95']
    plain = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert plain.returncode == 0, plain.stderr[-2000:]
    averaged = subprocess.run(_cmd(tmp_path / 'ema'), capture_output=True, text=True, timeout=600)
    assert averaged.returncode == 0, averaged.stderr[-2000:]
    a = load_file(str(tmp_path / 'plain' / 'checkpoints' / 'epoch_0002' / 'model.safetensors'))
    b = load_file(str(tmp_path / 'ema' / 'checkpoints' / 'epoch_0002' / 'model.safetensors'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    top1 = [json.loads((tmp_path / r / 'summary.json').read_text())['final'] for r in ('plain', 'ema')]
    assert top1[0]['val/top1'] == top1[1]['val/raw_top1']


@pytest.mark.slow
def test_two_processes_keep_one_average_and_resume_it_exactly(tmp_path):
    """Under two processes every process updates the same average (DDP keeps the weights equal);
    the main process saves it, every process loads it: a run resumed from its epoch-1
    checkpoint ends with the average of the uninterrupted run."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}

    def launch(out, port, *extra):
        return [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
                '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
                '--main_process_port', str(port), *_cmd(out, *extra)[1:]]
    full = subprocess.run(launch(tmp_path / 'full', 29531), capture_output=True, text=True, env=env, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    assert json.loads((tmp_path / 'full' / 'summary.json').read_text())['processes'] == 2
    cut = run_cut_at(tmp_path / 'full', tmp_path / 'cut')
    resumed = subprocess.run(launch(cut, 29532, 'resume=true'), capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = load_file(str(tmp_path / 'full' / 'model.safetensors')), load_file(str(cut / 'model.safetensors'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
