"""Is a checkpoint folder intact? Each one carries `manifest.json`: the size and sha256 of every
file, recorded when the checkpoint is published; a resume checks it first, so a truncated or
corrupted file (an interrupted copy, a disk error) is named instead of failing deep inside a
loader, and the run falls back to the newest intact checkpoint.

Checkpoints written before manifests existed get what their formats allow: complete JSON,
safetensors headers that match the file size, zip archives (torch's files) whose members pass
their CRCs.
"""
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

from models.checkpoint_io import looks_like_safetensors, safetensors_problem

MANIFEST = 'manifest.json'
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


def checkpoint_problem(folder: Path) -> Optional[str]:
    """What is damaged in a checkpoint folder, in words (the file and how); None if intact."""
    if not (folder / MANIFEST).exists():
        return _problem_without_manifest(folder)
    entries = _read_manifest(folder / MANIFEST)
    if entries is None:
        return f'{MANIFEST} is unreadable (truncated or corrupted)'
    for name, size, _ in entries:         # sizes first: cheap, and a truncated file is the usual damage
        path = folder / name
        if not path.is_file():
            return f'{name} is missing'
        if path.stat().st_size != size:
            return f'{name} has {path.stat().st_size} bytes, {size} were written'
    for name, _, digest in entries:
        if file_sha256(folder / name) != digest:
            return f'{name} is corrupted (its sha256 differs from the one recorded when it was written)'
    return None


def _read_manifest(path: Path) -> Optional[List[Tuple[str, int, str]]]:
    try:
        files = json.loads(path.read_text())['files']
        entries = [(name, int(entry['bytes']), str(entry['sha256'])) for name, entry in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    names = {name for name, _, _ in entries}
    if not set(REQUIRED) <= names or any(Path(name).name != name for name in names):
        return None
    return entries


def _problem_without_manifest(folder: Path) -> Optional[str]:
    for name in REQUIRED:
        if not (folder / name).is_file():
            return f'{name} is missing'
    for path in sorted(folder.iterdir()):
        problem = _format_problem(path) if path.is_file() else None
        if problem:
            return f'{path.name}: {problem}'
    return None


def _format_problem(path: Path) -> Optional[str]:
    """A file's damage that its own format shows (no manifest to compare with)."""
    if path.suffix == '.json':
        try:
            json.loads(path.read_text())
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
    folders = [p for p in root.glob('epoch_*') if p.is_dir() and epoch_of(p) >= 0] if root.is_dir() else []
    return sorted(folders, key=epoch_of, reverse=True)


def choose_checkpoint(root: Path) -> Tuple[Optional[Path], List[Tuple[Path, str]]]:
    """The newest intact checkpoint under `root` (None if there is none) and the damaged newer
    ones with what is wrong with each; older checkpoints are not read."""
    damaged = []
    for folder in checkpoints_newest_first(root):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder, damaged
        damaged.append((folder, problem))
    return None, damaged
