"""The project's error classes (models/errors.py) for code that must not import torch.

`import models.errors` runs `models/__init__.py` first, which imports torch and timm (seconds);
recipe parsing, argument checks and `--help` need only the classes. This module loads
models/errors.py on its own, under its real name `models.errors`, so that a later `import models`
reuses that module: the classes are the same objects either way (`except RIFormerError` catches
what either import raised)."""
import importlib.util
import sys
from pathlib import Path


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
