"""The strings of a detector model YAML that detector libraries evaluate, checked before they do.

A model YAML is code for its parser: ultralytics evaluates `activation` with `eval` (outside its
safe mode) and looks module names up in its namespace; the yolov5 and yolo9 parsers `eval` the
activation, every module name and every string argument. A YAML stored in a checkpoint comes
from the file, so `check_model_yaml` admits only what those parsers need:

* `activation`: `nn.X(literal, ...)` or `torch.nn.X(...)` with X a torch.nn layer class;
* module names: a layer class of the parser's namespace, or `nn.X` (a torch.nn layer class);
* string arguments: Python literals (`"'file'"`, `None`), or a bare name that is one of the
  parser's own variables (`nc`, `anchors`, ...) or bound nowhere (`nearest`, which stays a string);
* sizes: repeats, channel counts and the scale multipliers within bounds (no huge allocation).

Anything else is one CheckpointError line naming the row and the value.
"""
import ast
import builtins
from typing import Optional

import torch.nn as nn

from ..errors import CheckpointError

# Variables of the yolov5 / yolo9 parse_model that a string argument may name (their YAMLs write `nc`, `anchors`).
PARSER_VARIABLES = frozenset({'nc', 'anchors', 'na', 'no', 'ch', 'gd', 'gw', 'c2'})
MAX_REPEATS = 64
MAX_INT_ARG = 16384          # channels, kernel sizes, ...: well above any real detector's widths
MAX_MULTIPLE = 4.0           # depth / width multipliers and scales
PARSER_MODULES = {'ultralytics': 'ultralytics.nn.tasks', 'yolov5': 'yolov5.models.yolo', 'yolo9': 'yolo9.models.yolo'}
# Rows the yolov5 / yolo9 shim (models/handoff/yolov5.py) takes out before their parser runs.
SHIM_ROWS = frozenset({'Index'})


def _refuse(where: str, value, why: str):
    raise CheckpointError(f'the stored model YAML has {where} = {str(value)[:120]!r}: {why}; '
                          f'rebuild the checkpoint from a clean model YAML')


def torch_nn_class(text: str) -> Optional[type]:
    """The torch.nn layer class `text` names (`nn.SiLU`, `torch.nn.SiLU`), else None."""
    parts = text.split('.')
    if parts[:-1] not in (['nn'], ['torch', 'nn']) or not parts[-1].isidentifier():
        return None
    cls = getattr(nn, parts[-1], None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def check_activation(act):
    """`act` is absent or `[torch.]nn.Layer(literal arguments)`."""
    if act is None or act is False:
        return
    if not isinstance(act, str):
        _refuse('activation', act, 'not a string')
    try:
        call = ast.parse(act.strip(), mode='eval').body
    except SyntaxError:
        _refuse('activation', act, 'not Python syntax')
    ok = (isinstance(call, ast.Call) and torch_nn_class(ast.unparse(call.func)) is not None
          and all(_is_literal(a) for a in call.args) and all(k.arg and _is_literal(k.value) for k in call.keywords))
    if not ok:
        _refuse('activation', act, 'only a torch.nn layer with literal arguments is allowed (e.g. nn.SiLU())')


def _is_literal(node) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def check_module_name(where: str, name, namespace, shim_rows=frozenset()) -> None:
    """`name` is a layer class of the parser's `namespace` (a module) or of torch.nn, or one of
    `shim_rows`."""
    if not isinstance(name, str):
        _refuse(where, name, 'a module name must be a string')
    if name in shim_rows:
        return
    if name.startswith(('nn.', 'torch.nn.')):
        if torch_nn_class(name) is None:
            _refuse(where, name, 'not a torch.nn layer class')
        return
    cls = getattr(namespace, name, None) if name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        _refuse(where, name, f'not a layer class of {namespace.__name__}')


def check_string_argument(where: str, text: str, namespace) -> None:
    """A string argument the yolov5 / yolo9 parsers `eval`: a literal, one of their variables, or
    a name bound nowhere (their eval then fails and the string stays)."""
    if _is_literal_text(text):
        return
    if text.isidentifier() and (text in PARSER_VARIABLES or not (hasattr(namespace, text) or hasattr(builtins, text))):
        return
    _refuse(where, text, 'a string argument must be a literal or one of the parser variables '
                         f'({", ".join(sorted(PARSER_VARIABLES))})')


def _is_literal_text(text: str) -> bool:
    try:
        return _is_literal(ast.parse(text.strip(), mode='eval').body)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def _check_number(where: str, value, limit):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not abs(value) <= limit:
        _refuse(where, value, f'a number within {limit:g} is needed here')


def _check_sizes(where: str, args):
    """Numbers anywhere in a row's arguments stay within MAX_INT_ARG (nested lists included)."""
    for value in args:
        if isinstance(value, (list, tuple)):
            _check_sizes(where, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= MAX_INT_ARG:
            _refuse(where, value, f'a size above {MAX_INT_ARG}')


def check_rows(cfg: dict, namespace, evaluates_arguments: bool):
    for section in ('backbone', 'head'):
        rows = cfg.get(section)
        if not isinstance(rows, list) or not rows:
            _refuse(section, rows, 'a list of [from, repeats, module, args] rows is needed')
        for i, row in enumerate(rows):
            where = f'{section} row {i}'
            if not (isinstance(row, list) and len(row) == 4 and isinstance(row[3], list)):
                _refuse(where, row, 'a row is [from, repeats, module, [args]]')
            source, repeats, module, args = row
            sources = source if isinstance(source, list) else [source]
            if not sources or not all(isinstance(s, int) and not isinstance(s, bool) for s in sources):
                _refuse(f'{where} from', source, 'layer indices (integers) are needed')
            if isinstance(repeats, bool) or not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
                _refuse(f'{where} repeats', repeats, f'an integer from 1 to {MAX_REPEATS} is needed')
            check_module_name(f'{where} module', module, namespace, SHIM_ROWS if evaluates_arguments else frozenset())
            _check_sizes(f'{where} args', args)
            for arg in args:
                if isinstance(arg, str) and evaluates_arguments:
                    check_string_argument(f'{where} argument', arg, namespace)


def check_multipliers(cfg: dict):
    for key in ('depth_multiple', 'width_multiple'):
        if key in cfg:
            _check_number(key, cfg[key], MAX_MULTIPLE)
    scales = cfg.get('scales')
    if scales is None:
        return
    if not isinstance(scales, dict):
        _refuse('scales', scales, 'a mapping of scale -> [depth, width, max_channels] is needed')
    for name, values in scales.items():
        if not (isinstance(values, list) and len(values) == 3):
            _refuse(f'scales {name}', values, '[depth, width, max_channels] is needed')
        _check_number(f'scales {name} depth', values[0], MAX_MULTIPLE)
        _check_number(f'scales {name} width', values[1], MAX_MULTIPLE)
        _check_number(f'scales {name} max_channels', values[2], MAX_INT_ARG)


class Namespaces:
    """Several modules looked up in order, as yolo9's parser resolves a module name (its yolo.py,
    then models.common, then models.experimental)."""

    def __init__(self, *modules):
        self.modules = modules
        self.__name__ = modules[0].__name__

    def __getattr__(self, name):
        for module in self.modules:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(name)


def parser_namespace(family: str, module):
    """Where `family`'s parser finds module names: its yolo module, for yolo9 also the modules it
    falls back on."""
    if family != 'yolo9':
        return module
    import importlib
    package = module.__name__.rpartition('.')[0]
    extra = []
    for name in ('common', 'experimental'):
        try:
            extra.append(importlib.import_module(f'{package}.{name}'))
        except ImportError:
            pass
    return Namespaces(module, *extra)


def check_model_yaml(cfg, family: str, namespace) -> dict:
    """`cfg` (a model YAML dict from a checkpoint) when every string the `family`'s parser
    evaluates is allowed and its sizes are bounded; CheckpointError otherwise. `namespace`: the
    parser's module (where it looks module names up)."""
    if not isinstance(cfg, dict):
        _refuse('yaml', type(cfg).__name__, 'the model has no model YAML (a dict) to rebuild it from')
    check_activation(cfg.get('activation'))
    nc = cfg.get('nc')
    if nc is not None:
        _check_number('nc', nc, MAX_INT_ARG)
    check_multipliers(cfg)
    check_rows(cfg, parser_namespace(family, namespace), evaluates_arguments=family != 'ultralytics')
    return cfg
