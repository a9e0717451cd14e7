"""Unpickling a detector checkpoint into inert data: no class or function named in the file runs.

torch's weights-only unpickler calls every allowed global the pickle names (a REDUCE opcode is
`cls(*args)`, a BUILD is `obj.__setstate__(state)`), so allowing a detector's real layer
classes lets a file call `DetectionModel(cfg)` (whose parser evaluates `activation`) or
`AutoBackend(url)` (which downloads). Here every class name the file may use is bound to a
stand-in (`Inert`) made for that name: unpickling creates stand-ins holding the state the real
objects would have had (`__dict__`: `_parameters`, `_buffers`, `_modules`, plain attributes)
and calls nothing else. A stand-in refuses to be called with arguments, which a saved module
never is. What comes out is tensors, containers, plain data and stand-ins; the real model is then
rebuilt from the stored YAML (`safe_load.load_pickled`).
"""
from collections import OrderedDict
from typing import Dict, Iterable

import torch

from ..errors import CheckpointError


class RefusedCall(CheckpointError):
    """The pickle asks a stand-in to do what a saved layer never needs (torch.load passes it on
    unchanged, where an UnpicklingError would be reworded into advice to load unsafely)."""


class Inert:
    """The state of one pickled object of class `NAME` (the subclass made for it), never the object."""

    NAME = '?'
    TAKES_ARGUMENTS = False       # plain data classes (an Enum is pickled as a call with its value)

    def __new__(cls, *args):
        if args and not cls.TAKES_ARGUMENTS:
            raise RefusedCall(f'refused: the file calls {cls.NAME}(...) with arguments while it is read '
                              f'(a saved layer is never built that way; this runs code)')
        obj = super().__new__(cls)
        obj.__dict__['_args'] = args
        return obj

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise RefusedCall(f'refused: {self.NAME} is given a state that is not a dict of attributes')
        self.__dict__.update(state)

    def __repr__(self):
        return f'<inert {self.NAME}>'


def stand_ins(names: Iterable[str], data_classes: Iterable[str] = ()) -> list:
    """[(stand-in class, 'module.Name')] for torch's allow-list: each name bound to its own Inert."""
    data_classes = set(data_classes)
    return [(type(name.rpartition('.')[2], (Inert,), {'NAME': name, 'TAKES_ARGUMENTS': name in data_classes}), name)
            for name in names]


def load_inert(path, names: Iterable[str], data_classes: Iterable[str] = ()):
    """The unpickled content of torch.save() file `path`, where each of `names` (every class the
    file names that is not torch's own data) becomes an Inert stand-in."""
    with torch.serialization.safe_globals(stand_ins(names, data_classes)):
        return torch.load(str(path), map_location='cpu', weights_only=True)


def class_name(obj) -> str:
    """'package.module.Class' of a stand-in (or of a real object)."""
    return obj.NAME if isinstance(obj, Inert) else f'{type(obj).__module__}.{type(obj).__qualname__}'


def inert_state(module: Inert, prefix: str = '') -> Dict[str, torch.Tensor]:
    """The state dict the real module would give: persistent parameters and buffers of `module`
    and its submodules, by dotted name. Raises ValueError where the stored structure is not a
    module's."""
    state = OrderedDict()
    attrs = module.__dict__
    params, buffers, children = (attrs.get(k, {}) for k in ('_parameters', '_buffers', '_modules'))
    skip = attrs.get('_non_persistent_buffers_set') or set()
    if not all(isinstance(d, dict) for d in (params, buffers, children)) or not isinstance(skip, (set, frozenset)):
        raise ValueError(f'{prefix or "the model"} ({module.NAME}): not a saved layer')
    for key, value in [*params.items(), *((k, v) for k, v in buffers.items() if k not in skip)]:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f'{prefix}{key}: a {type(value).__name__} where a tensor belongs')
        state[prefix + key] = value
    for key, child in children.items():
        if child is None:
            continue
        if not isinstance(child, Inert):
            raise ValueError(f'{prefix}{key}: a {type(child).__name__} where a layer belongs')
        state.update(inert_state(child, f'{prefix}{key}.'))
    return state


def find_layers(module: Inert, name: str):
    """Every stand-in of class `name` under `module` (itself included), depth first."""
    if module.NAME == name:
        yield module
    for child in (module.__dict__.get('_modules') or {}).values():
        if isinstance(child, Inert):
            yield from find_layers(child, name)
