"""Whether this python has the project's packages: a system `python` instead of .venv's gets one
line naming the fix (the commands and the trainer check it before their heavy imports)."""
import importlib.util
import os
import sys
from pathlib import Path

# What every command needs installed; a python without them is not the project's venv.
NEEDED = ('torch', 'timm', 'yaml')


def require_venv(needed=NEEDED):
    """Exit with one line naming the fix when this python lacks the project's packages (a system
    `python` instead of .venv's): checked by name, without importing them (milliseconds)."""
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if not missing:
        return
    root = Path(__file__).resolve().parents[1]

    def short(path):
        relative = os.path.relpath(path)
        return path if relative.startswith('..') else relative
    venv = root / '.venv' / 'bin' / 'python'
    fix = (f'activate it with `source {short(root / ".venv" / "bin" / "activate")}` (or run {short(venv)} instead of python)'
           if venv.is_file() else f'create it with `make setup` in {short(root)}, then `source .venv/bin/activate`')
    print(f'error: {sys.executable} has no {", ".join(missing)}: the project runs in its virtual environment; {fix}',
          file=sys.stderr)
    sys.exit(2)
