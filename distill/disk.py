"""Writes that fail (a full disk, a quota, an I/O error) and the space a run needs.

A failed write stops the run with one line: what could not be written, why, the free space,
the last good checkpoint and (added by distill/train.py's main) the command that resumes the
run once space is free. Before the first epoch the run warns when its output folder cannot hold
what it will write.
"""
import errno
import shutil
from pathlib import Path
from typing import Optional, Tuple

import torch.nn as nn
from safetensors import SafetensorError

# What writers raise on a failed write: OSError (Python's own files), SafetensorError
# ('I/O error: No space left on device (os error 28)'), RuntimeError (torch.save's archive writer).
WRITE_ERRORS = (OSError, SafetensorError, RuntimeError)
# torch.save reports a write into a full folder as 'unexpected pos 576 vs 534', without its
# cause: a folder with less than this free after such an error is taken to be full.
NEARLY_FULL = 16 * 2 ** 20
RNG_FILES_BYTES = 64 * 2 ** 10      # rng_N.json and random_states_N.pkl of one process


class WriteFailed(Exception):
    """A file of the run could not be written; the message names it, why, the free space and
    the last good checkpoint. `when` says when to resume (once space is free, ...)."""
    same_on_every_process = True     # every process stops with the failure any of them met

    def __init__(self, failure: dict, last_good: Optional[Path]):
        folder = Path(failure['folder'])
        free = f'{size_text(free_bytes(folder))} free in {folder}'
        if last_good is not None:
            free += f', a checkpoint takes {size_text(folder_bytes(last_good))}'
        where = (f'the last good checkpoint is {last_good}' if last_good is not None
                 else 'no checkpoint was written yet')
        super().__init__(f'could not write {failure["what"]}: {failure["reason"]} ({free}); nothing published '
                         f'was lost, {where}')
        self.when = 'once space is free' if failure['space'] else f'once {folder} can be written again'


def attempt_write(what: str, folder: Path, write) -> Optional[dict]:
    """Run `write`; None if it succeeded, else what failed, as a dict every process can be sent."""
    try:
        write()
        return None
    except WRITE_ERRORS as e:
        reason, space = failure_reason(e, folder)
        return {'what': what, 'reason': reason, 'space': space, 'folder': str(folder)}


def failure_reason(e: BaseException, folder: Path) -> Tuple[str, bool]:
    """(the cause of a failed write in words, whether it is a lack of space)."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    code = getattr(e, 'errno', None)
    if code == errno.ENOSPC or 'os error 28' in text or 'No space left' in text:
        return 'no space left on device', True
    if code == errno.EDQUOT or 'os error 122' in text or 'quota exceeded' in text.lower():
        return 'disk quota exceeded', True
    if isinstance(e, OSError):
        return e.strerror or text, False
    if free_bytes(folder) < NEARLY_FULL:
        return 'no space left on device', True
    return f'the write failed ({text})', False


def free_bytes(path: Path) -> int:
    """Free space (for this user) on the filesystem that holds `path` or would hold it."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (0 if it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob('*') if p.is_file()) if path.is_dir() else 0


def size_text(n: int) -> str:
    """12345678 -> '12.3 MB' (decimal units, as df -H)."""
    for unit, scale in (('TB', 1e12), ('GB', 1e9), ('MB', 1e6), ('kB', 1e3)):
        if n >= scale:
            return f'{n / scale:.1f} {unit}'
    return f'{n} B'


def estimate_checkpoint_bytes(model: nn.Module, processes: int) -> int:
    """A checkpoint of `model`: its weights, AdamW's two moments per trainable parameter, and
    each process's RNG files."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    moments = 2 * sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights + moments + processes * RNG_FILES_BYTES


def space_warning(out: Path, checkpoint: int, student: int, keep: int) -> Optional[str]:
    """A `warning:` line when `out` cannot hold `keep` + 1 checkpoints of `checkpoint` bytes
    (the kept ones and the one being written) and the two student files of `student` bytes;
    what the run already wrote there is replaced, so it counts as room. None if it can."""
    need = (keep + 1) * checkpoint + 2 * student
    free = free_bytes(out)
    own = sum(folder_bytes(p) for p in (out / 'checkpoints', out / 'model.safetensors', out / 'best.safetensors'))
    if free + own >= need:
        return None
    held = f'{size_text(free)} free' + (f' and {size_text(own)} of its own files' if own else '')
    return (f'warning: {out} has room for less than this run writes: {held}, it needs about {size_text(need)} '
            f'({keep + 1} checkpoints of {size_text(checkpoint)}: train.keep_checkpoints={keep} and the one being '
            f'written, and model.safetensors / best.safetensors); a full disk stops the run with its last good '
            f'checkpoint kept')
