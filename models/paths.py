"""Output paths that must not be an input: a command never writes over (or deletes, when its
check fails) a file it reads."""
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
