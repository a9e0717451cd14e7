"""Output paths that must not be an input: a command never writes over (or deletes, when its
check fails) a file it reads."""
import contextlib
import errno
import os
from pathlib import Path
from typing import Iterable, Optional

from .errors import UsageError


def same_file(a, b) -> bool:
    """Whether paths `a` and `b` name one file: equal after following links (also a link that
    does not resolve yet), or one inode (a hard link)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(outputs: Iterable, inputs: Iterable[Optional[object]], fix: str = 'pass another -o'):
    """UsageError naming the first output that is one of the (existing, file) inputs."""
    for out in outputs:
        for source in inputs:
            if source is None or not Path(source).is_file():
                continue
            if same_file(out, source):
                link = ' (a link to it)' if Path(out).resolve() != Path(out).absolute() else ''
                raise UsageError(f'{out}{link}: the output would overwrite the input {source}; {fix}')


def is_write_failure(e: BaseException) -> bool:
    """Whether `e` is a failed write (a full disk, a quota, a read-only folder), however the
    writer words it (OSError; safetensors' and torch's writers wrap the OS error in text)."""
    text = str(e)
    return isinstance(e, OSError) or any(words in text for words in (
        'os error', 'No space left', 'file write failed', 'Disk quota', 'Read-only file system'))


def write_failed(out, e: BaseException) -> Exception:
    """The one-line error for a write of `out` that failed with `e` (its partial file removed)."""
    from .errors import CheckpointError
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if getattr(e, 'errno', None) == errno.ENOSPC or 'os error 28' in text or 'No space left' in text:
        reason = 'no space left on device'
    elif isinstance(e, OSError) and e.strerror:
        reason = e.strerror.lower()
    else:
        reason = text[:160]
    return CheckpointError(f'{out}: could not be written ({reason}); nothing was left there: free space or '
                           f'choose another -o')


@contextlib.contextmanager
def one_line_write_failure(out, cleanup=None):
    """A failed write of `out` inside the block becomes `write_failed`'s one line; `cleanup()`
    (removing partial files) runs first. Other errors pass unchanged."""
    from .errors import RIFormerError
    try:
        yield
    except Exception as e:
        if isinstance(e, RIFormerError) or not is_write_failure(e):
            raise
        if cleanup is not None:
            cleanup()
        raise write_failed(out, e) from None
