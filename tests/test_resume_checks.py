"""Issue 27, item 5: a resume checks a run's files before it reads them. `latest` is never read;
train_state.json is read only where the manifest vouches for it (a regular file of the recorded
size and sha256) and its values are typed; a linked checkpoint folder is not the run's; a
checkpoint's pickle that names Python objects is refused in one line."""
import json
import os
import threading

import pytest
import torch

from distill.integrity import write_manifest
from distill.train import threads_of_run
from test_faults import copy_run, finished, flagged, flip, train  # noqa: F401  (finished: the fixture)

pytestmark = pytest.mark.usefixtures('fresh_accelerate_state')   # conftest.py


def returns_within(seconds, func, *args):
    """func(*args) when it returns within `seconds` (a read of a FIFO would block for ever)."""
    result, done = [], threading.Event()

    def run():
        result.append(func(*args))
        done.set()
    threading.Thread(target=run, daemon=True).start()
    assert done.wait(seconds), f'{func.__name__} did not return within {seconds} s'
    return result[0]


@pytest.mark.parametrize('latest', ['/dev/zero', 'fifo'])
def test_the_latest_pointer_is_never_read(latest, finished, tmp_path):
    run = copy_run(finished, tmp_path / 'run')
    pointer = run / 'checkpoints' / 'latest'
    pointer.unlink()
    if latest == 'fifo':
        os.mkfifo(pointer)
    else:
        pointer.symlink_to(latest)
    recorded = json.loads((run / 'checkpoints' / 'epoch_0003' / 'train_state.json').read_text())['threads']
    assert returns_within(10, threads_of_run, run) == recorded


def edit_state(ckpt, manifest: bool, **values):
    path = ckpt / 'train_state.json'
    state = json.loads(path.read_text())
    state.update(values)
    path.write_text(json.dumps(state))
    if manifest:
        rewrite_manifest(ckpt)


def rewrite_manifest(ckpt):
    """The manifest of the files as they are now (what someone covering an edit would do)."""
    (ckpt / 'manifest.json').unlink()
    write_manifest(ckpt)


@pytest.mark.parametrize('threads', ['abc', -1, 10 ** 9, True])
def test_bad_threads_behind_a_stale_manifest_are_never_used(threads, finished, tmp_path, capsys):
    """The manifest no longer matches: the checkpoint is damaged, its values unread; the run
    resumes from the one before with a warning."""
    run = copy_run(finished, tmp_path / 'run')
    edit_state(run / 'checkpoints' / 'epoch_0003', manifest=False, threads=threads)
    assert threads_of_run(run) == json.loads((run / 'checkpoints' / 'epoch_0002' / 'train_state.json')
                                             .read_text())['threads']
    code, _, err = train(capsys, run, 'train.epochs=3', 'resume=true')
    assert code == 0, err
    assert [line[:60] for line in flagged(err)] == [f'warning: checkpoint {run}/checkpoints/epoch_0003 is damaged: '
                                                    f'train_state.json is corrupted'[:60]]


@pytest.mark.parametrize('key, value', [('threads', 'abc'), ('threads', -1), ('epoch', 'three'), ('history', 5)])
def test_bad_values_behind_a_matching_manifest_are_one_line(key, value, finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / 'run')
    edit_state(run / 'checkpoints' / 'epoch_0003', manifest=True, **{key: value})
    assert threads_of_run(run) is None or key != 'threads'
    code, _, err = train(capsys, run, 'train.epochs=4', 'resume=true')
    lines = flagged(err)
    assert code == 2 and len(lines) == 1 and f'train_state.json: {key} is' in lines[0], err


def test_a_linked_checkpoint_folder_is_not_the_runs(finished, tmp_path, capsys):
    """epoch_0003 as a link to a folder elsewhere: named and passed over; when the run reaches
    epoch 3 it writes its own checkpoint in the link's place (it used to stop: Not a directory)."""
    run = copy_run(finished, tmp_path / 'run')
    elsewhere = tmp_path / 'elsewhere'
    (run / 'checkpoints' / 'epoch_0003').rename(elsewhere)
    (run / 'checkpoints' / 'epoch_0003').symlink_to(elsewhere, target_is_directory=True)
    code, _, err = train(capsys, run, 'train.epochs=3', 'resume=true')
    assert code == 0, err
    assert flagged(err) == [f'warning: checkpoint {run}/checkpoints/epoch_0003 is damaged: not a folder of the run '
                            f'(a link or a file); resuming from {run}/checkpoints/epoch_0002, the newest intact '
                            f'checkpoint']
    assert (run / 'checkpoints' / 'epoch_0003').is_dir() and not (run / 'checkpoints' / 'epoch_0003').is_symlink()
    assert (elsewhere / 'train_state.json').exists()          # the link's target is left alone


def test_a_flipped_weight_without_a_manifest_is_found(finished, tmp_path, capsys):
    run = copy_run(finished, tmp_path / 'run')
    for ckpt in (run / 'checkpoints').glob('epoch_*'):
        (ckpt / 'manifest.json').unlink()
    flip(run / 'checkpoints' / 'epoch_0003' / 'model.safetensors', at=0.9)
    code, _, err = train(capsys, run, 'train.epochs=3', 'resume=true')
    lines = flagged(err)
    assert code == 2 and len(lines) == 1 and 'epoch_0003: it has no manifest.json' in lines[0], err


class RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_in_a_checkpoint_is_refused_in_one_line(finished, tmp_path, capsys):
    """optimizer.bin replaced by a pickle that runs a command, its manifest recomputed (so that
    only the loader stands between the file and the command)."""
    run = copy_run(finished, tmp_path / 'run')
    marker = tmp_path / 'pwned'
    ckpt = run / 'checkpoints' / 'epoch_0003'
    torch.save({'state': RunsCommand(f'touch {marker}')}, ckpt / 'optimizer.bin')
    rewrite_manifest(ckpt)
    torch.load(ckpt / 'optimizer.bin', weights_only=False)   # positive control: the payload is live
    assert marker.exists()
    marker.unlink()
    code, _, err = train(capsys, run, 'train.epochs=4', 'resume=true')
    lines = flagged(err)
    assert code == 2 and len(lines) == 1 and 'holds Python objects' in lines[0], err
    assert 'weights_only=False' not in err and not marker.exists()


@pytest.mark.parametrize('recipe', ['/dev/zero', 'fifo', 'not yaml'])
def test_a_runs_saved_recipe_is_checked_before_it_is_read(recipe, finished, tmp_path, capsys):
    """recipe.yaml, which every start in an existing output_dir compares with: a link to
    /dev/zero or a FIFO is never opened (a MemoryError, a hang), broken YAML is one line."""
    run = copy_run(finished, tmp_path / 'run')
    saved = run / 'recipe.yaml'
    saved.unlink()
    if recipe == 'fifo':
        os.mkfifo(saved)
    elif recipe == '/dev/zero':
        saved.symlink_to(recipe)
    else:
        saved.write_text('train: [unclosed\n')
    code, _, err = returns_within(60, train, capsys, run, 'train.epochs=4', 'resume=true')
    lines = flagged(err)
    assert code == 2 and len(lines) == 1 and f'{saved}: not the recipe a run of ours saved' in lines[0], err


def test_a_kill_between_the_publishing_renames_leaves_an_intact_checkpoint(tmp_path, monkeypatch):
    """The folder is renamed into place, then the `latest` pointer: a kill between the two (a CI
    run's SIGKILL once landed there) must leave the new checkpoint intact and the one chosen."""
    from distill import train_state as ts
    from distill.integrity import checkpoint_problem, choose_checkpoint
    root = tmp_path / 'checkpoints'
    tmp = root / '.tmp-epoch_0001'
    tmp.mkdir(parents=True)
    (tmp / 'model.safetensors').write_bytes(b'weights')
    real_replace = os.replace

    def killed_before_the_pointer(src, dst):
        if os.path.basename(dst) == 'latest':
            raise KeyboardInterrupt('killed')          # the process ends here
        real_replace(src, dst)
    monkeypatch.setattr(ts.os, 'replace', killed_before_the_pointer)
    with pytest.raises(KeyboardInterrupt):
        ts._publish(tmp, root / 'epoch_0001', ts.TrainState(epoch=1))
    assert (root / 'epoch_0001' / 'train_state.json').is_file() and not (root / 'latest').exists()
    assert checkpoint_problem(root / 'epoch_0001') is None
    assert choose_checkpoint(root) == (root / 'epoch_0001', [])
    monkeypatch.setattr(ts.os, 'replace', real_replace)
    tmp.mkdir()                                        # the next epoch publishes normally
    (tmp / 'model.safetensors').write_bytes(b'weights 2')
    ts._publish(tmp, root / 'epoch_0002', ts.TrainState(epoch=2))
    assert (root / 'latest').read_text() == 'epoch_0002' and not (root / '.latest.pending').exists()
