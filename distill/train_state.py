"""A run's state and its directory: the typed train state, the recipe guard, atomic
accelerator checkpoints, resume, RNG states.

Layout of an output_dir:

    recipe.yaml              the resolved recipe of the run (guards against mixing runs)
    checkpoints/epoch_0004/  accelerate state (student, optimizer, RNG) + train_state.json + manifest.json
    checkpoints/latest       name of the newest complete checkpoint
    model.safetensors        final student, best.safetensors best student (tools/reparam.py input)
    summary.json             final metrics
    tb/                      TensorBoard logs

A checkpoint is written to a hidden temporary directory and renamed into place only when
complete, so a crash or kill never leaves a broken `latest`. Its manifest (the size and sha256
of each file, distill/integrity.py) lets a resume find a checkpoint damaged later and fall back
to the newest intact one. A write that fails on any process (a full disk) stops every process
with `WriteFailed`; nothing published is touched.
"""
import dataclasses
import json
import os
import pickle
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import yaml
from accelerate.utils import broadcast_object_list, gather_object

from models.checkpoint_io import file_mode
from models.errors import CheckpointError

from .disk import WriteFailed, attempt_write
from .integrity import MAX_STATE_BYTES, checkpoints_newest_first, choose_checkpoint, epoch_of, read_small, write_manifest
from .config import RESUMABLE_CHANGES, Recipe, RecipeError, flat_keys



@dataclass
class TrainState:
    """What the trainer carries from epoch to epoch and saves with each checkpoint
    (`train_state.json`); everything else of a run is the recipe or accelerate's state."""
    epoch: int = 0                  # epochs completed
    num_updates: int = 0            # optimizer updates completed (the scheduler's position)
    best_top1: float = -1.0         # best val/top1 so far (best.safetensors holds that student)
    train_seconds: float = 0.0      # training time over all sessions of the run
    history: List[Dict[str, float]] = field(default_factory=list)   # one row of metrics per epoch
    balance: List[dict] = field(default_factory=list)   # the loss balance where it was measured (distill/balance.py)
    threads: int = 0                # CPU threads the run computes with (a resume keeps them: results depend on it)

    @classmethod
    def from_json(cls, text) -> 'TrainState':
        """The state in `text` (train_state.json); CheckpointError naming the first value of the
        wrong type or range."""
        try:
            raw = json.loads(text)
        except ValueError:
            raise CheckpointError('train_state.json is not valid JSON') from None
        return cls.from_value(raw)

    @classmethod
    def from_value(cls, raw) -> 'TrainState':
        """The state in `raw` (train_state.json's parsed value); CheckpointError when it is not
        an object or naming the first value of the wrong type or range."""
        if not isinstance(raw, dict):
            raise CheckpointError('train_state.json does not hold an object')
        fields_ = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in raw.items() if k in fields_}
        for key, value in values.items():
            if not _STATE_TYPES[key](value):
                raise CheckpointError(f'train_state.json: {key} is {str(value)[:60]!r}, not {_STATE_WORDS[key]}')
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 62


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e300


_STATE_TYPES = {'epoch': _count, 'num_updates': _count, 'best_top1': _number,
                'train_seconds': lambda v: _number(v) and v >= 0,
                'history': lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
                'balance': lambda v: isinstance(v, list), 'threads': lambda v: _count(v) and v <= 4096}
_STATE_WORDS = {'epoch': 'a count', 'num_updates': 'a count', 'best_top1': 'a number',
                'train_seconds': 'a number of seconds', 'history': 'a list of rows', 'balance': 'a list',
                'threads': 'a thread count (0 to 4096)'}


MAX_RECIPE_BYTES = 1 << 20       # a run's recipe.yaml is a few kB


def saved_recipe_keys(saved: Path) -> Dict[str, Any]:
    """The flat keys of a run's saved recipe.yaml, read only from a regular file of bounded size
    (a link to /dev/zero or a FIFO is never opened); RecipeError naming the file otherwise."""
    try:
        raw = yaml.safe_load(read_small(saved, MAX_RECIPE_BYTES)) or {}
    except (OSError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f'{saved}: not the recipe a run of ours saved ({first}); '
                          f'choose another train.output_dir') from None
    if not isinstance(raw, dict):
        raise RecipeError(f'{saved}: not the recipe a run of ours saved (not a mapping); choose another train.output_dir')
    return flat_keys(raw)


def guard_output_dir(out: Path, recipe_dict: dict, resume: bool):
    """Refuse to mix two runs in one directory; return the saved recipe path."""
    saved = out / 'recipe.yaml'
    if os.path.lexists(saved):
        old = saved_recipe_keys(saved)
        new = flat_keys(recipe_dict)
        # A key the saved recipe lacks (written by an older version) had its default value.
        defaults = flat_keys(Recipe().to_dict())
        changed = sorted(k for k in set(old) | set(new)
                         if old.get(k, defaults.get(k)) != new.get(k) and k not in RESUMABLE_CHANGES)
        if not resume:
            raise RecipeError(f'output_dir {out} already holds a run; pass resume=true to continue it '
                              f'or choose another train.output_dir')
        if changed:
            raise RecipeError(f'output_dir {out} holds a different run (changed: {", ".join(changed[:5])}); '
                              f'resume it with the same recipe or choose another train.output_dir')
    elif out.exists() and any(p.name not in ('tb',) for p in out.iterdir()) and not resume:
        raise RecipeError(f'output_dir {out} is not empty and holds no run of ours; choose another train.output_dir')
    return saved


def resumed_changes(out: Path, recipe_dict: dict) -> Dict[str, Tuple[Any, Any]]:
    """{key: (saved, now)} of the recipe keys a resume may change (`RESUMABLE_CHANGES`)."""
    saved = out / 'recipe.yaml'
    if not os.path.lexists(saved):
        return {}
    old, new = saved_recipe_keys(saved), flat_keys(recipe_dict)
    return {k: (old.get(k), new.get(k)) for k in sorted(RESUMABLE_CHANGES - {'resume'})
            if old.get(k) != new.get(k)}


def write_text_atomic(path: Path, text: str):
    os.replace(_write_durably(path.with_name(f'.{path.name}.tmp'), text), path)


def _write_durably(path: Path, text: str) -> Path:
    try:
        with open(path, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        path.unlink(missing_ok=True)      # a full disk: give back what the partial file took
        raise
    return path


class NoIntactCheckpoint(CheckpointError):
    """resume=true, and every checkpoint of the run is damaged."""
    same_on_every_process = True


def agree_on_failure(accelerator, failure: Optional[dict]) -> Optional[dict]:
    """The failure any process met (None if none did), on every process: all of them stop
    together instead of waiting forever for one that stopped."""
    if accelerator.num_processes == 1:
        return failure
    return next((f for f in gather_object([failure]) if f), None)


def write_on_main(accelerator, path: Path, write, last_good: Optional[Path]):
    """`write()` (which writes `path`) on the main process; called by every process, which all
    raise `WriteFailed` if it fails."""
    failure = attempt_write(str(path), path.parent, write) if accelerator.is_main_process else None
    failure = agree_on_failure(accelerator, failure)
    if failure:
        raise WriteFailed(failure, last_good)


def save_checkpoint(accelerator, out: Path, epoch: int, train_state: TrainState, keep: int,
                    last_good: Optional[Path] = None, ema=None) -> Path:
    """Accelerate state of all processes + our train state (+ the weight average `ema`, as
    safetensors) + the manifest, published atomically. A write that fails on any process
    removes the unpublished folder and raises `WriteFailed` on every process, naming `last_good`."""
    root = out / 'checkpoints'
    name = f'epoch_{epoch:04d}'
    tmp, final = root / f'.tmp-{name}', root / name
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    failure = attempt_write(f'checkpoint {final}', root, lambda: _write_process_state(accelerator, tmp, ema))
    failure = agree_on_failure(accelerator, failure)
    if failure is None and accelerator.is_main_process:
        failure = attempt_write(f'checkpoint {final}', root, lambda: _publish(tmp, final, train_state))
    failure = agree_on_failure(accelerator, failure)
    if failure:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)      # the space back; published checkpoints untouched
        raise WriteFailed(failure, last_good)
    if accelerator.is_main_process:
        _prune(root, epoch, keep)
    accelerator.wait_for_everyone()
    return final


def _write_process_state(accelerator, tmp: Path, ema=None):
    accelerator.save_state(str(tmp))
    if ema is not None and accelerator.is_main_process:     # the same average on every process
        ema.save(tmp)
    write_text_atomic(tmp / f'rng_{accelerator.process_index}.json', json.dumps(rng_state()))


def _publish(tmp: Path, final: Path, train_state: TrainState):
    """Complete the checkpoint in `tmp` and rename it to `final`. Everything that takes space is
    written before the rename (the `latest` pointer too): a full disk never stops a half-done
    publish."""
    write_text_atomic(tmp / 'train_state.json', train_state.to_json())
    for path in tmp.iterdir():
        os.chmod(path, file_mode())       # safetensors writes 0600: the umask decides, as for other files
    write_manifest(tmp)
    # The pointer waits beside the folders, not in `tmp`: a kill between the two renames must
    # leave the checkpoint as its manifest lists it (a stray file inside would mark it damaged).
    pending = _write_durably(final.parent / '.latest.pending', final.name)
    if final.is_symlink() or final.is_file():     # not a checkpoint of the run: a resume ignored it
        final.unlink()
    shutil.rmtree(final, ignore_errors=True)      # a damaged checkpoint a resume fell back from
    os.replace(tmp, final)
    os.replace(pending, final.parent / 'latest')


def _prune(root: Path, epoch: int, keep: int):
    """Keep the `keep` newest checkpoints up to `epoch`. Newer ones are damaged checkpoints a
    resume fell back from: they do not take the place of intact ones, and the run replaces
    each when it reaches its epoch."""
    for old in [p for p in checkpoints_newest_first(root) if epoch_of(p) <= epoch][keep:]:
        shutil.rmtree(old, ignore_errors=True)


def resume_checkpoint(accelerator, out: Path) -> Optional[Path]:
    """The newest intact checkpoint of the run in `out`, None if it has none; the same on
    every process (the main one checks, the others take its choice). A damaged newer checkpoint
    gets a `warning:` line naming it and the one taken; if all are damaged, `NoIntactCheckpoint`."""
    choice = [None, []]
    if accelerator.is_main_process:
        chosen, damaged = choose_checkpoint(out / 'checkpoints')
        choice = [chosen and str(chosen), [(str(path), problem) for path, problem in damaged]]
    if accelerator.num_processes > 1:
        broadcast_object_list(choice)
    chosen, damaged = choice
    if chosen is None and damaged:
        listed = '; '.join(f'{Path(path).name}: {problem}' for path, problem in damaged)
        raise NoIntactCheckpoint(
            f'no intact checkpoint to resume from in {out / "checkpoints"} ({listed}); move the checkpoints '
            f'folder away to start this run from scratch, or choose another train.output_dir')
    if accelerator.is_main_process:
        for path, problem in damaged:
            print(f'warning: checkpoint {path} is damaged: {problem}; resuming from {chosen}, the newest intact '
                  f'checkpoint', file=sys.stderr, flush=True)
    return Path(chosen) if chosen else None


def load_checkpoint(accelerator, path: Path, ema=None) -> TrainState:
    """Restore the checkpoint in `path` (checked intact by `resume_checkpoint`): the JSON files
    are read (and typed) before accelerate loads its files, whose pickles it reads with
    weights_only=True; a pickle naming anything else is one CheckpointError line. The weight
    average `ema` (distill.ema) is restored from its safetensors file."""
    rng = path / f'rng_{accelerator.process_index}.json'
    if not rng.exists():
        raise RecipeError(f'{path}: no {rng.name}; it was written by another number of processes '
                          f'than this run has ({accelerator.num_processes})')
    try:
        state = TrainState.from_json(read_small(path / 'train_state.json', MAX_STATE_BYTES))
        rng_values = json.loads(read_small(rng, MAX_STATE_BYTES))
    except (OSError, ValueError) as e:
        raise CheckpointError(f'{path}: {e}') from None
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    try:
        accelerator.load_state(str(path))
    except pickle.UnpicklingError as e:
        refused = next((line.strip() for line in str(e).splitlines() if 'GLOBAL' in line or 'Unsupported' in line),
                       'an object it may not rebuild')
        raise CheckpointError(f'{path}: a file of this checkpoint holds Python objects ({refused[:120]}), which '
                              f'are not loaded since they can run code; move this checkpoint away to resume from '
                              f'an older one') from None
    if ema is not None:
        ema.load(path)
    try:
        set_rng_state(rng_values)
    except (KeyError, TypeError, ValueError, RuntimeError):
        raise CheckpointError(f'{path}: {rng.name} does not hold the RNG states this run wrote') from None
    return state


# accelerate's own RNG files are pickles that it reloads with weights_only=True, which fails
# for numpy's state and is then silently skipped; so the RNG states go into plain JSON here.
def rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {'python': [py[0], list(py[1]), py[2]],
             'numpy': [np_state[0], np_state[1].tolist(), *map(lambda v: v.item() if hasattr(v, 'item') else v, np_state[2:])],
             'torch': torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state['cuda'] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict):
    py = state['python']
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state['torch'], dtype=torch.uint8))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state['cuda']])
