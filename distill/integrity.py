"""Is a checkpoint folder intact? Each one carries `manifest.json`: the size and sha256 of every
file, recorded when the checkpoint is published; a resume checks it first, so a truncated or
corrupted file (an interrupted copy, a disk error) is named instead of failing deep inside a
loader, and the run falls back to the newest intact checkpoint.

Only what the manifest lists is read, and only after it checks: every file a regular file
(not a link, a FIFO or a device), inside the checkpoint folder, of the recorded size and sha256;
a checkpoint folder that is a link is not one of the run's. A checkpoint without a manifest
cannot be checked (a flipped byte in its weights shows in no format) and counts as damaged;
the formats' own checks (complete JSON, safetensors headers, zip CRCs) still name what they see.
"""
import hashlib
import json
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

from models.checkpoint_io import looks_like_safetensors, safetensors_problem

MANIFEST = 'manifest.json'
MAX_MANIFEST_BYTES = 1 << 20          # a manifest lists a dozen files
MAX_STATE_BYTES = 64 << 20            # train_state.json / rng_N.json: metrics of every epoch, RNG states
MAX_JSON_BYTES = 16 << 20             # summary.json: metrics of every epoch, a few hundred kB
REQUIRED = ('train_state.json', 'model.safetensors')      # in every checkpoint of the trainer
_NAME = re.compile(r'epoch_(\d+)$')


def file_sha256(path: Path, sync: bool = False) -> str:
    """sha256 of a file's bytes; `sync`: flush it to the disk first."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        if sync:
            os.fsync(f.fileno())
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: Path):
    """Record the size and sha256 of every file in `folder` (each flushed to the disk: the
    checkpoint that gets published is on the disk, not only in the page cache)."""
    files = {p.name: {'bytes': p.stat().st_size, 'sha256': file_sha256(p, sync=True)}
             for p in sorted(folder.iterdir()) if p.is_file()}
    with open(folder / MANIFEST, 'w') as f:
        json.dump({'files': files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def is_regular_file(path: Path) -> bool:
    """A regular file itself: not a link (to anything), FIFO, device or folder."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_small(path: Path, limit: int) -> bytes:
    """The bytes of `path` when it is a regular file of at most `limit` bytes; OSError otherwise
    (checked before a byte is read: a link to /dev/zero or a FIFO is never opened)."""
    if not is_regular_file(path):
        raise OSError(f'{path.name} is not a regular file')
    if os.lstat(path).st_size > limit:
        raise OSError(f'{path.name} has more than {limit} bytes')
    with open(path, 'rb') as f:
        return f.read(limit + 1)


def read_tail(path: Path, limit: int) -> bytes:
    """The last `limit` bytes of `path` when it is a regular file (a log the tools wrote and
    quote from); OSError otherwise, checked before a byte is read."""
    if not is_regular_file(path):
        raise OSError(f'{path.name} is not a regular file')
    with open(path, 'rb') as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
        return f.read(limit)


def read_json(path) -> object:
    """The JSON value of a file the tools wrote and read back (a run's `summary.json`, the
    ablation's cached metrics): read by `read_small`, so a regular file of at most
    `MAX_JSON_BYTES`, never a link, FIFO or device (not opened: no hang, no endless read).
    RecipeError with one line naming the file and what is wrong otherwise."""
    from distill.errors import RecipeError
    path = Path(path)
    if not os.path.lexists(path):
        raise RecipeError(f'{path}: no such file')
    try:
        return json.loads(read_small(path, MAX_JSON_BYTES))
    except OSError as e:
        raise RecipeError(f'{path}: not read ({e}); it is not the file the tools write there: remove '
                          f'it and rerun') from None
    except ValueError:
        raise RecipeError(f'{path}: not JSON (damaged); remove it and rerun') from None


def checkpoint_problem(folder: Path) -> Optional[str]:
    """What is damaged in a checkpoint folder, in words (the file and how); None if intact."""
    if folder.is_symlink() or not folder.is_dir():
        return 'not a folder of the run (a link or a file)'
    if not os.path.lexists(folder / MANIFEST):
        problem = _problem_without_manifest(folder)
        return problem or (f'it has no {MANIFEST}, so its files cannot be checked (a damaged weight shows in no '
                           f'format)')
    entries = _read_manifest(folder / MANIFEST)
    if entries is None:
        return f'{MANIFEST} is unreadable (truncated or corrupted)'
    listed = {name for name, _, _ in entries} | {MANIFEST}
    for path in sorted(folder.iterdir()):
        if path.name not in listed:
            return f'{path.name} is not in {MANIFEST} (added after the checkpoint was written)'
    for name, size, _ in entries:         # sizes first: cheap, and a truncated file is the usual damage
        path = folder / name
        if not os.path.lexists(path):
            return f'{name} is missing'
        if not is_regular_file(path):
            return f'{name} is not a regular file (a link, FIFO or device)'
        if path.stat().st_size != size:
            return f'{name} has {path.stat().st_size} bytes, {size} were written'
    for name, _, digest in entries:
        if file_sha256(folder / name) != digest:
            return f'{name} is corrupted (its sha256 differs from the one recorded when it was written)'
    return None


def verified_json(folder: Path, name: str):
    """The JSON value of `folder/name` when the folder's manifest lists it and it matches its
    size and sha256 (sizes bounded, regular files only); None otherwise. Reads nothing else."""
    entries = _read_manifest(folder / MANIFEST)
    entry = next((e for e in entries or () if e[0] == name), None)
    if entry is None or entry[1] > MAX_STATE_BYTES:
        return None
    try:
        data = read_small(folder / name, entry[1])
    except OSError:
        return None
    if len(data) != entry[1] or hashlib.sha256(data).hexdigest() != entry[2]:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def _read_manifest(path: Path) -> Optional[List[Tuple[str, int, str]]]:
    try:
        files = json.loads(read_small(path, MAX_MANIFEST_BYTES))['files']
        entries = [(name, int(entry['bytes']), str(entry['sha256'])) for name, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    names = {name for name, _, _ in entries}
    if not set(REQUIRED) <= names or any(Path(name).name != name or name in ('.', '..') for name in names):
        return None
    return entries


def _problem_without_manifest(folder: Path) -> Optional[str]:
    for name in REQUIRED:
        if not (folder / name).is_file():
            return f'{name} is missing'
    for path in sorted(folder.iterdir()):
        if not is_regular_file(path):
            return f'{path.name} is not a regular file (a link, FIFO or device)'
        problem = _format_problem(path)
        if problem:
            return f'{path.name}: {problem}'
    return None


def _format_problem(path: Path) -> Optional[str]:
    """A file's damage that its own format shows (no manifest to compare with)."""
    if path.suffix == '.json':
        try:
            json.loads(read_small(path, MAX_STATE_BYTES))
        except (OSError, ValueError):
            return 'not valid JSON (truncated or corrupted)'
    elif path.suffix == '.safetensors':
        if not looks_like_safetensors(path):
            return 'not a safetensors file (corrupted from its first bytes)'
        return safetensors_problem(path)
    elif path.suffix in ('.bin', '.pkl', '.pt'):      # torch.save: a zip archive with CRCs
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (OSError, zipfile.BadZipFile, EOFError, ValueError):
            return 'not a complete archive (truncated or corrupted)'
        if bad:
            return f'corrupted (its member {bad} fails its CRC)'
    return None


def epoch_of(folder: Path) -> int:
    """12 for `epoch_0012`; -1 for other names."""
    match = _NAME.match(folder.name)
    return int(match.group(1)) if match else -1


def checkpoints_newest_first(root: Path) -> List[Path]:
    """The published checkpoint folders under `root` (`epoch_N`), newest first."""
    folders = ([p for p in root.glob('epoch_*') if p.is_dir() and not p.is_symlink() and epoch_of(p) >= 0]
               if root.is_dir() and not root.is_symlink() else [])
    return sorted(folders, key=epoch_of, reverse=True)


def choose_checkpoint(root: Path) -> Tuple[Optional[Path], List[Tuple[Path, str]]]:
    """The newest intact checkpoint under `root` (None if there is none) and the damaged newer
    ones with what is wrong with each; older checkpoints are not read."""
    damaged = []
    links = [p for p in root.glob('epoch_*') if p.is_symlink() and epoch_of(p) >= 0] if root.is_dir() else []
    for folder in sorted(checkpoints_newest_first(root) + links, key=epoch_of, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, damaged
        damaged.append((folder, problem))
    return None, damaged
