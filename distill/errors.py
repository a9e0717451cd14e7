"""The project's error classes (models/errors.py) for code that must not import torch.

`import models.errors` runs `models/__init__.py` first, which imports torch and timm (seconds);
recipe parsing, argument checks and `--help` need only the classes. This module loads
models/errors.py on its own, under its real name `models.errors`, so that a later `import models`
reuses that module: the classes are the same objects either way (`except RIFormerError` catches
what either import raised)."""
import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence


def _errors_module():
    module = sys.modules.get('models.errors')
    if module is None:
        path = Path(__file__).resolve().parents[1] / 'models' / 'errors.py'
        spec = importlib.util.spec_from_file_location('models.errors', path)
        module = importlib.util.module_from_spec(spec)
        sys.modules['models.errors'] = module
        spec.loader.exec_module(module)
    return module


_errors = _errors_module()
RIFormerError = _errors.RIFormerError
RecipeError = _errors.RecipeError
CheckpointError = _errors.CheckpointError
HandoffError = _errors.HandoffError
UsageError = _errors.UsageError


def error_lines(e: BaseException, argv=None) -> List[str]:
    """What an error of ours says: one line per problem (`problems`, where it lists several),
    else its message."""
    return list(getattr(e, 'problems', None) or [str(e)])


def one_line_errors(main: Optional[Callable] = None, *, also: Sequence[type] = (),
                    lines: Callable[[BaseException, Optional[list]], List[str]] = error_lines):
    """Decorate a command's `main(argv=None) -> int` (bare, or with options): an error of ours
    (a `RIFormerError`, or one of the classes in `also`) prints `error: LINE` on stderr for each
    of `lines(error, argv)` and returns 2; anything else keeps its traceback (a bug). An error
    that every process of a launch meets alike (its class sets `same_on_every_process`) is
    printed by the first process only."""
    if main is None:
        return functools.partial(one_line_errors, also=tuple(also), lines=lines)

    @functools.wraps(main)
    def wrapper(argv=None):
        try:
            return main(argv)
        except (RIFormerError, *also) as e:
            if not getattr(e, 'same_on_every_process', False) or int(os.environ.get('RANK', 0)) == 0:
                for line in lines(e, argv):
                    print(f'error: {line}', file=sys.stderr)
            return 2
    return wrapper
