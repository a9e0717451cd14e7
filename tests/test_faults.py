"""Faults a long run meets, each made for real: damaged checkpoint files (truncated, bytes
flipped, missing), a full disk (a write that raises ENOSPC), two processes, and the modes of the
files a run writes. Each fault ends in the run's last good state with one `warning:` or `error:`
line and no traceback; nothing published is lost."""
import errno
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file

import models
from distill import disk, train as train_mod
from distill.cli import evaluate as evaluate_cli, reparam as reparam_cli
from distill.integrity import MANIFEST, checkpoint_problem
from distill.train_state import write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / 'recipes' / 'digits' / 'plain.yaml'
# Small and quick (as tests/test_train.py): 360 training images, no progress bar, no balance probe.
FAST = ['data.val_fraction=0.8', 'train.batch_size=32', 'train.progress=false', 'train.log_every=2',
        'train.loss_balance=false', 'train.checkpoint_every=1', 'train.keep_checkpoints=3']
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('fresh_accelerate_state')]   # conftest.py


def train(capsys, out, *overrides):
    code = train_mod.main([str(PLAIN), *FAST, f'train.output_dir={out}', *overrides])
    text, err = capsys.readouterr()
    return code, text, err


def flagged(err, launcher=False):
    """The lines of ours on stderr; a traceback fails the test. `launcher`: the stderr of
    `accelerate launch`, which prints its own traceback when a process exits non-zero (README):
    none of its frames may be in our code."""
    if launcher:
        ours = [f'File "{ROOT / folder}' for folder in ('distill', 'models')] + ['full_on_rank_1.py", line']
        assert not any(frame in err for frame in ours), err
    else:
        assert 'Traceback' not in err, err
    return [line for line in err.splitlines() if line.startswith(('warning:', 'error:'))]


@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    """A complete three-epoch run (checkpoints of epochs 1, 2 and 3); its final student is what
    any resume of it must end with."""
    out = tmp_path_factory.mktemp('finished') / 'run'
    assert train_mod.main([str(PLAIN), *FAST, 'train.epochs=3', f'train.output_dir={out}']) == 0
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    """The run in another folder, as a copied or half-killed run would be."""
    shutil.copytree(src, dst)
    saved = yaml.safe_load((dst / 'recipe.yaml').read_text())
    saved['train']['output_dir'] = str(dst)
    write_text_atomic(dst / 'recipe.yaml', yaml.safe_dump(saved, sort_keys=False))
    return dst


def truncate(path: Path):
    os.truncate(path, path.stat().st_size // 2)


def flip(path: Path, at: float = 0.5):
    """Flip the bits of one byte (by default in the middle of the file: the tensors' bytes)."""
    with open(path, 'r+b') as f:
        f.seek(int(path.stat().st_size * at))
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xff]))


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# -- a damaged newest checkpoint ------------------------------------------------------------

KINDS = ['model.safetensors', 'optimizer.bin', 'train_state.json', 'rng_0.json', 'random_states_0.pkl']


@pytest.mark.parametrize('damage', [truncate, flip])
@pytest.mark.parametrize('name', KINDS)
def test_each_damaged_file_is_named(finished, tmp_path, name, damage):
    """Each file of a checkpoint, truncated or with a flipped byte, is found and named."""
    ckpt = tmp_path / 'epoch_0003'
    shutil.copytree(finished / 'checkpoints' / 'epoch_0003', ckpt)
    assert checkpoint_problem(ckpt) is None
    damage(ckpt / name)
    problem = checkpoint_problem(ckpt)
    assert problem is not None and problem.startswith(name), problem
    assert ('bytes' in problem) if damage is truncate else ('corrupted' in problem)


def test_a_missing_file_or_manifest_is_named(finished, tmp_path):
    ckpt = tmp_path / 'epoch_0003'
    shutil.copytree(finished / 'checkpoints' / 'epoch_0003', ckpt)
    (ckpt / 'optimizer.bin').unlink()
    assert checkpoint_problem(ckpt) == 'optimizer.bin is missing'
    truncate(ckpt / MANIFEST)
    assert checkpoint_problem(ckpt) == 'manifest.json is unreadable (truncated or corrupted)'


@pytest.mark.parametrize('name, damage', [('model.safetensors', truncate), ('optimizer.bin', flip),
                                          ('train_state.json', truncate), ('rng_0.json', flip)])
def test_resume_falls_back_to_the_newest_intact_checkpoint(finished, tmp_path, capsys, name, damage):
    run = copy_run(finished, tmp_path / 'run')
    damage(run / 'checkpoints' / 'epoch_0003' / name)
    code, text, err = train(capsys, run, 'train.epochs=3', 'resume=true')
    assert code == 0, err
    lines = flagged(err)
    assert len(lines) == 1 and lines[0].startswith(
        f'warning: checkpoint {run}/checkpoints/epoch_0003 is damaged: {name} '), lines
    assert lines[0].endswith(f'; resuming from {run}/checkpoints/epoch_0002, the newest intact checkpoint')
    assert f'resumed from {run}/checkpoints/epoch_0002 at epoch 2' in text
    # The run continues exactly: the student is the uninterrupted run's.
    assert same_weights(run / 'model.safetensors', finished / 'model.safetensors')
    # Nothing published was lost; the damaged checkpoint is replaced by an intact one.
    for epoch in (1, 2, 3):
        assert checkpoint_problem(run / 'checkpoints' / f'epoch_{epoch:04d}') is None
    assert (run / 'checkpoints' / 'latest').read_text() == 'epoch_0003'


def test_no_intact_checkpoint_is_one_error_and_nothing_is_deleted(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / 'run')
    truncate(run / 'checkpoints' / 'epoch_0003' / 'model.safetensors')
    flip(run / 'checkpoints' / 'epoch_0002' / 'optimizer.bin')
    (run / 'checkpoints' / 'epoch_0001' / 'rng_0.json').unlink()
    before = sorted(str(p.relative_to(run)) for p in run.rglob('*'))
    code, _, err = train(capsys, run, 'train.epochs=4', 'resume=true')
    assert code == 2
    lines = flagged(err)
    assert len(lines) == 1 and lines[0].startswith(
        f'error: no intact checkpoint to resume from in {run}/checkpoints (epoch_0003: model.safetensors has '), lines
    assert 'epoch_0002: optimizer.bin is corrupted' in lines[0] and 'epoch_0001: rng_0.json is missing' in lines[0]
    assert lines[0].endswith('move the checkpoints folder away to start this run from scratch, or choose another '
                             'train.output_dir')
    assert sorted(str(p.relative_to(run)) for p in run.rglob('*')) == before
    assert same_weights(run / 'model.safetensors', finished / 'model.safetensors')


def test_checkpoints_without_a_manifest_are_not_resumed_from(finished, tmp_path, capsys):
    """Checkpoints without a manifest cannot be checked (a flipped byte in their weights shows in
    no format): none is resumed from; what their formats show is still named."""
    run = copy_run(finished, tmp_path / 'run')
    for ckpt in (run / 'checkpoints').glob('epoch_*'):
        (ckpt / MANIFEST).unlink()
    truncate(run / 'checkpoints' / 'epoch_0003' / 'optimizer.bin')
    code, text, err = train(capsys, run, 'train.epochs=3', 'resume=true')
    assert code == 2
    lines = flagged(err)
    assert len(lines) == 1 and lines[0].startswith('error: no intact checkpoint to resume from'), lines
    assert 'epoch_0003: optimizer.bin: not a complete archive (truncated or corrupted)' in lines[0]
    assert 'epoch_0002: it has no manifest.json, so its files cannot be checked' in lines[0]


# -- tools on a damaged student file --------------------------------------------------------

@pytest.mark.parametrize('tool', ['reparam', 'evaluate', 'evaluate-stored-recipe'])
def test_tools_name_a_damaged_student_file(finished, tmp_path, capsys, tool):
    source = finished / 'model.safetensors'
    size = source.stat().st_size
    cases = [(truncate, f'damaged: truncated: {size // 2} bytes of the {size} its header describes'),
             (lambda p: flip(p, at=0.9), 'damaged: its tensors differ from the checksum recorded when it was written'),
             (lambda p: flip(p, at=0.0001), 'damaged: its header is corrupted')]
    for i, (damage, message) in enumerate(cases):
        path = tmp_path / f'{i}.safetensors'
        shutil.copy(source, path)
        damage(path)
        if tool == 'reparam':
            code = reparam_cli.main([str(path), '-o', str(tmp_path / f'{i}.deploy.safetensors')])
        elif tool == 'evaluate':
            code = evaluate_cli.main([str(path), '--recipe', str(PLAIN)])
        else:                       # the recipe from the file's metadata
            code = evaluate_cli.main([str(path)])
        _, err = capsys.readouterr()
        assert code == 2 and flagged(err) == [line for line in err.splitlines() if line], err
        assert err.strip().startswith(f'error: {path}: {message}'), err
        assert not (tmp_path / f'{i}.deploy.safetensors').exists()


def test_the_tools_script_prints_one_line_for_a_truncated_file(finished, tmp_path):
    path = tmp_path / 'model.safetensors'
    shutil.copy(finished / 'model.safetensors', path)
    truncate(path)
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'reparam.py'), str(path)],
                            capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith(f'error: {path}: damaged: truncated: ')


# -- a full disk ----------------------------------------------------------------------------

def test_full_disk_while_writing_a_checkpoint(finished, tmp_path, capsys, monkeypatch):
    """The optimizer state of epoch 3 meets a full disk: one line with the free space, the last
    good checkpoint and the resume command; the partial folder is removed, nothing published is
    lost, and the printed command resumes the run exactly."""
    run = copy_run(finished, tmp_path / 'run')
    shutil.rmtree(run / 'checkpoints' / 'epoch_0003')           # as if killed before it
    (run / 'checkpoints' / 'latest').write_text('epoch_0002')
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if 'epoch_0003' in str(f) and str(f).endswith('optimizer.bin'):
            Path(f).write_bytes(b'\0' * 4096)            # the part that fit
            raise ENOSPC
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, 'save', full_disk)
    code, _, err = train(capsys, run, 'train.epochs=3', 'resume=true')
    assert code == 2
    lines = flagged(err)
    assert len(lines) == 1, err
    line = lines[0]
    prefix = f'error: could not write checkpoint {run}/checkpoints/epoch_0003: no space left on device ('
    assert line.startswith(prefix), line
    assert f' free in {run}/checkpoints, a checkpoint takes ' in line
    assert (f'; nothing published was lost, the last good checkpoint is {run}/checkpoints/epoch_0002; once space is '
            f'free, resume with: python ') in line
    assert [p.name for p in (run / 'checkpoints').iterdir() if p.name.startswith('.')] == []
    assert (run / 'checkpoints' / 'latest').read_text() == 'epoch_0002'
    for epoch in (1, 2):
        assert checkpoint_problem(run / 'checkpoints' / f'epoch_{epoch:04d}') is None
    monkeypatch.undo()
    command = shlex.split(line.split('resume with: ')[1])
    assert command[:2] == ['python', 'distill/train.py'] or command[1].endswith('/distill/train.py')
    assert command[-1] == 'resume=true' and command.count('resume=true') == 1
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    assert train_mod.main(command[2:]) == 0
    assert same_weights(run / 'model.safetensors', finished / 'model.safetensors')


def test_full_disk_before_the_first_checkpoint(tmp_path, capsys, monkeypatch):
    """best.safetensors of epoch 1 cannot be written (safetensors' own error on a full disk)."""
    import models.checkpoint_io as checkpoint_io
    real_save = checkpoint_io.save_file

    def full_disk(tensors, path, metadata=None):
        if '.best.safetensors' in str(path):
            raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(checkpoint_io, 'save_file', full_disk)
    out = tmp_path / 'run'
    code, _, err = train(capsys, out, 'train.epochs=1')
    assert code == 2
    lines = flagged(err)
    assert len(lines) == 1 and lines[0].startswith(
        f'error: could not write {out}/best.safetensors: no space left on device ('), err
    assert 'nothing published was lost, no checkpoint was written yet; once space is free, resume with: ' in lines[0]
    assert not (out / 'checkpoints').exists() and not list(out.glob('.best*'))


def test_write_failures_in_words(tmp_path, monkeypatch):
    reason = disk.failure_reason
    assert reason(ENOSPC, tmp_path) == ('no space left on device', True)
    assert reason(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), tmp_path) == ('disk quota exceeded', True)
    assert reason(SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)'),
                  tmp_path) == ('no space left on device', True)
    assert reason(OSError(errno.EACCES, 'Permission denied'), tmp_path) == ('Permission denied', False)
    # torch.save into a full folder says only this: the free space decides.
    torch_full = RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534')
    assert reason(torch_full, tmp_path) == ('the write failed ([enforce fail at inline_container.cc:672] . '
                                            'unexpected pos 576 vs 534)', False)
    monkeypatch.setattr(disk, 'free_bytes', lambda path: 4096)
    assert reason(torch_full, tmp_path) == ('no space left on device', True)
    def full():
        raise ENOSPC

    failed = disk.WriteFailed(disk.attempt_write('x', tmp_path, full), None)
    assert str(failed) == (f'could not write x: no space left on device (4.1 kB free in {tmp_path}); nothing '
                           f'published was lost, no checkpoint was written yet') and failed.when == 'once space is free'


def test_warning_when_the_output_folder_cannot_hold_the_checkpoints(finished, tmp_path, capsys, monkeypatch):
    # The estimate is within 2 % of a real checkpoint.
    ckpt = finished / 'checkpoints' / 'epoch_0001'
    student = models.load_model(finished / 'model.safetensors')
    assert disk.estimate_checkpoint_bytes(student, 1) == pytest.approx(disk.folder_bytes(ckpt), rel=0.02)
    monkeypatch.setattr(disk, 'free_bytes', lambda path: 20_000_000)
    out = tmp_path / 'run'
    code, text, err = train(capsys, out, 'train.epochs=1')
    assert code == 0, err
    lines = flagged(err)
    assert len(lines) == 1 and lines[0].startswith(
        f'warning: {out} has room for less than this run writes: 20.0 MB free, it needs about 59.'), lines
    assert '(4 checkpoints of 12.8 MB: train.keep_checkpoints=3 and the one being written' in lines[0]
    assert text.index('epoch 1/1') > 0          # it warns and trains


# -- two processes --------------------------------------------------------------------------

# distill/train.py with torch.save failing with ENOSPC on process 1 only, for the checkpoint of
# epoch 3; each process writes its exit code next to the run.
FULL_ON_RANK_1 = """
import errno, os, sys
from pathlib import Path
import torch
sys.path.insert(0, {root!r})
from distill import train
real_save = torch.save
rank = int(os.environ['RANK'])

def save(obj, f, *args, **kwargs):
    if rank == 1 and 'epoch_0003' in str(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(obj, f, *args, **kwargs)

torch.save = save
code = train.main(sys.argv[1:])
Path({codes!r}, f'rank{{rank}}').write_text(str(code))
sys.exit(code)
"""


def _launch(script, out, port, *extra):
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           '--main_process_port', str(port), str(script), str(PLAIN), *FAST, f'train.output_dir={out}', *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'OMP_NUM_THREADS': '1'},
                          timeout=600)


def test_two_processes_full_disk_then_damaged_checkpoint(tmp_path):
    """A full disk on process 1 only stops both processes with one line; the resumed run, its
    newest checkpoint damaged, takes the same older checkpoint on both processes and continues
    exactly."""
    codes = tmp_path / 'codes'
    codes.mkdir()
    script = tmp_path / 'full_on_rank_1.py'
    script.write_text(FULL_ON_RANK_1.format(root=str(ROOT), codes=str(codes)))
    out = tmp_path / 'run'
    first = _launch(script, out, 29531, 'train.epochs=3')
    assert first.returncode != 0
    assert sorted(p.read_text() for p in codes.iterdir()) == ['2', '2'], first.stderr[-3000:]
    lines = flagged(first.stderr, launcher=True)
    assert len(lines) == 1 and lines[0].startswith(
        f'error: could not write checkpoint {out}/checkpoints/epoch_0003: no space left on device'), first.stderr
    assert 'resume with: accelerate launch --multi_gpu --num_processes 2 ' in lines[0]
    assert (out / 'checkpoints' / 'latest').read_text() == 'epoch_0002'
    assert sorted(p.name for p in (out / 'checkpoints').iterdir()) == ['epoch_0001', 'epoch_0002', 'latest']

    # Epoch 2's weights as published, then its optimizer state damaged.
    shutil.copy(out / 'checkpoints' / 'epoch_0002' / 'model.safetensors', tmp_path / 'epoch2.safetensors')
    truncate(out / 'checkpoints' / 'epoch_0002' / 'optimizer.bin')
    second = _launch(ROOT / 'distill' / 'train.py', out, 29532, 'train.epochs=3', 'resume=true')
    assert second.returncode == 0, second.stderr[-3000:]
    lines = flagged(second.stderr, launcher=True)       # one line, not one per process
    assert len(lines) == 1 and lines[0].startswith(
        f'warning: checkpoint {out}/checkpoints/epoch_0002 is damaged: optimizer.bin has '), second.stderr
    assert lines[0].endswith(f'; resuming from {out}/checkpoints/epoch_0001, the newest intact checkpoint')
    assert f'resumed from {out}/checkpoints/epoch_0001 at epoch 1' in second.stdout
    # Both processes took epoch 1 and trained epoch 2 again: the same weights as published before.
    assert same_weights(out / 'checkpoints' / 'epoch_0002' / 'model.safetensors', tmp_path / 'epoch2.safetensors')
    for epoch in (1, 2, 3):
        assert checkpoint_problem(out / 'checkpoints' / f'epoch_{epoch:04d}') is None


# -- file modes -----------------------------------------------------------------------------

def test_every_file_gets_the_mode_of_the_umask(tmp_path, capsys):
    """A run, its checkpoints, reparam and evaluate's JSON under umask 027: files 0640, folders
    0750 (safetensors alone would write 0600)."""
    out = tmp_path / 'run'
    old = os.umask(0o027)
    try:
        code, _, err = train(capsys, out, 'train.epochs=1')
        assert code == 0, err
        assert reparam_cli.main([str(out / 'model.safetensors'), '-o', str(out / 'deploy.safetensors')]) == 0
        assert evaluate_cli.main([str(out / 'deploy.safetensors'), '--recipe', str(PLAIN),
                                  '--json', str(out / 'eval.json')]) == 0
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob('*')}
    written = {'checkpoints/epoch_0001/model.safetensors', 'deploy.safetensors', 'eval.json', 'best.safetensors'}
    assert written <= set(modes)
    wrong = {name: oct(mode) for name, mode in modes.items()
             if mode != (0o750 if (out / name).is_dir() else 0o640)}
    assert wrong == {}
