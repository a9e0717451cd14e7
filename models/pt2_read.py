"""Opening a `.pt2` program (torch.export.save) without unpickling anything from it.

torch.export.load reads tensors with torch.load (forced to weights_only=True by
TORCH_FORCE_WEIGHTS_ONLY_LOAD) but opens two other kinds of constants its own way: `opaque_obj_*`
entries with a plain `pickle.loads`, which that flag does not cover (a file's pickle runs code),
and `custom_obj_*` entries with TorchScript's object unpickler. The int8 programs this project
writes (`tools/export.py --format pt2e`) hold neither: `read_program` refuses a file naming one
(in its archive or in its constants table) before torch opens it, and keeps `pickle.loads` of
torch's archive reader refusing while it does.

Their graphs call `quantized_decomposed` operators, which exist only once the module defining
them has been imported (torchao's quantizer does it when the file is written; a fresh process
that only loads it has not): `read_program` imports torch's own definition first.
"""
import contextlib
import json
import os
import zipfile
from pathlib import Path

import torch

from .errors import CheckpointError

PICKLED_CONSTANTS = ('opaque_obj_', 'custom_obj_')
WHY = ('which can run code when unpickled; this loader opens the int8 programs tools/export.py --format pt2e '
       'writes, which hold none')


class _NoPickle:
    """Stands in for the `pickle` module of torch's .pt2 reader while a file is opened."""

    @staticmethod
    def loads(*args, **kwargs):
        raise CheckpointError(f'an entry of the file is a Python pickle, {WHY}')


def check_archive(path: Path):
    """`path` is an intact zip (every CRC checked) naming no pickled constants."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            names = archive.namelist()
            configs = [archive.read(n) for n in names if n.endswith('data/constants/model_constants_config.json')
                       or n.endswith('_constants_config.json')]
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise CheckpointError(f'{path}: not a .pt2 program (not a zip archive: {e})') from None
    if damaged is not None:
        raise CheckpointError(f'{path}: damaged ({damaged} fails its CRC check); copy or export it again')
    pickled = [n for n in names if os.path.basename(n).startswith(PICKLED_CONSTANTS)]
    for config in configs:
        pickled += _pickled_in_config(path, config)
    if pickled:
        raise CheckpointError(f'{path}: holds pickled Python objects ({pickled[0]}), {WHY}')


def _pickled_in_config(path: Path, raw: bytes) -> list:
    """Constants a constants table names that are not tensors."""
    try:
        config = json.loads(raw).get('config', {})
        return [f'{fqn} = {meta.get("path_name")}' for fqn, meta in config.items()
                if not str(meta.get('path_name', '')).startswith('tensor_')]
    except (ValueError, AttributeError):
        raise CheckpointError(f'{path}: its constants table is not valid JSON; copy or export it again') from None


@contextlib.contextmanager
def _no_pickle():
    """torch's .pt2 reader with `pickle.loads` refusing and every torch.load weights-only."""
    from torch.export.pt2_archive import _package
    saved_env, saved_pickle = os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD'), _package.pickle
    os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] = '1'
    _package.pickle = _NoPickle
    try:
        yield
    finally:
        _package.pickle = saved_pickle
        if saved_env is None:
            os.environ.pop('TORCH_FORCE_WEIGHTS_ONLY_LOAD', None)
        else:
            os.environ['TORCH_FORCE_WEIGHTS_ONLY_LOAD'] = saved_env


def register_int8_operators():
    """The `quantized_decomposed` operators PT2E int8 graphs call (torch's own definitions)."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401


def read_program(path) -> torch.fx.GraphModule:
    """The module of the .pt2 program at `path`, opened without unpickling anything from it;
    CheckpointError with one line otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: ' + ('a directory, not a .pt2 file' if path.is_dir() else 'no such file'))
    check_archive(path)
    register_int8_operators()
    try:
        with _no_pickle():
            return torch.export.load(str(path)).module()
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    except Exception as e:
        raise CheckpointError(f'{path}: not a torch.export program this loader reads safely '
                              f'({type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ""})'
                              ) from None
