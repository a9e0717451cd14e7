"""Opening detector checkpoints without running code from them.

A pickled detector checkpoint (`last.pt`, `best.pt`, `best.deploy.pt`) can name any Python
callable, and even torch's weights-only unpickler calls every class it is allowed to rebuild
(with arguments from the file). Every route of this project that opens one goes through
`load_pickled` (here): the pickle becomes tensors, plain data and inert stand-ins, the stored
model YAML is checked against an allow-list (`yaml_guard`), and the detector is rebuilt from it
by this project's builders with the stored tensors. `vet_checkpoint` does that before a command
starts. `ultralytics_safe_mode` switches on ultralytics' own restricted mode (its parser then
never evaluates a YAML string) and makes ultralytics open `.pt` files through `load_pickled` too,
so that ultralytics never unpickles a file itself.
"""
import pickle
from pathlib import Path
from typing import Iterable, Optional

import torch
import torch.nn as nn

from ..errors import CheckpointError
from .detector_file import DATA_CLASSES, MODULE_PREFIXES, NAMESPACE, _describe, allowed_classes, detector_of
from .detector_file import family as detector_family
from .inert import Inert, class_name, inert_state, load_inert


def load_pickled(path, prefixes: Iterable[str] = MODULE_PREFIXES) -> dict:
    """A pickled detector checkpoint (`{'model': DetectionModel, ...}`) with its model (and EMA)
    rebuilt, without calling any class or function the file names: the pickle is read into
    tensors, containers, plain data and inert stand-ins of the allowed layer classes
    (`inert.load_inert`), the stored model YAML is checked (`yaml_guard`), the detector is built
    from it by this project's builders and takes the stored tensors. Raises CheckpointError with
    one line for a refused class or call, a damaged file, a YAML string a parser would evaluate,
    or weights that do not fit the YAML."""
    path = Path(path)
    names = [name for _, name in allowed_classes(path, prefixes)]
    try:
        ckpt = load_inert(path, names, DATA_CLASSES)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f'{path}: not a loadable detector checkpoint ({_describe(e)})') from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('ema') or ckpt.get('model'), Inert):
        raise CheckpointError(f'{path}: not a detector checkpoint (no model in it)')
    stray = [k for k, v in ckpt.items() if k not in ('model', 'ema') and _holds_inert(v)]
    if stray:
        raise CheckpointError(f'{path}: {stray[0]!r} holds layers outside the model; not a detector checkpoint')
    try:
        return {k: rebuild_stored(v) if k in ('model', 'ema') and v is not None else v for k, v in ckpt.items()}
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None


def _holds_inert(value) -> bool:
    if isinstance(value, Inert):
        return True
    if isinstance(value, dict):
        return any(_holds_inert(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_inert(v) for v in value)
    return False


# The stored model classes a detector checkpoint may hold, by the family that builds them.
DETECTOR_CLASSES = {
    'ultralytics.nn.tasks.DetectionModel': 'ultralytics',
    'ultralytics.nn.tasks.RTDETRDetectionModel': 'ultralytics',
    'yolov5.models.yolo.DetectionModel': 'yolov5',
    'yolov5.models.yolo.Model': 'yolov5',
    'yolo9.models.yolo.DetectionModel': 'yolo9',
    'yolo9.models.yolo.Model': 'yolo9',
}


# Plain attributes of the stored model that the rebuilt one takes over (class names, training settings).
KEPT_ATTRIBUTES = ('names', 'args', 'hyp', 'task')


def stored_family(stored: Inert) -> str:
    """'ultralytics', 'yolo9' or 'yolov5' for the stand-in of a stored detector model."""
    found = DETECTOR_CLASSES.get(stored.NAME)
    if found is None:
        raise CheckpointError(f'{stored.NAME}: not an ultralytics, yolo9 or yolov5 detector')
    return found


def rebuild_stored(stored: Inert) -> nn.Module:
    """The detector a stored stand-in describes: built from its checked YAML (DeployBackbone rows
    naming their architecture only: the weights come from the checkpoint), loaded with its
    tensors (every one, same shapes), in the stored precision's float32 copy."""
    kind = stored_family(stored)
    cfg = portable_yaml(stored, kind)
    model = build_family(cfg, kind)
    try:
        state = inert_state(stored)
    except ValueError as e:
        raise CheckpointError(f'the stored model is damaged: {e}') from None
    load_exactly(model, state)
    for key in KEPT_ATTRIBUTES:
        value = _plain(stored.__dict__.get(key))
        if value is not None and not _holds_inert(value):
            setattr(model, key, value)
    return model


def _plain(value):
    """A kept attribute as plain data: a stand-in of ultralytics' IterableSimpleNamespace (the
    `args` of a checkpoint saved during training) as the dict of its entries."""
    if isinstance(value, Inert) and value.NAME == NAMESPACE:
        return {k: v for k, v in value.__dict__.items() if k != '_args'}
    return value


def _parser_namespace(kind: str):
    import importlib
    from .register import register_in
    from .yaml_guard import PARSER_MODULES
    try:
        module = importlib.import_module(PARSER_MODULES[kind])
    except ImportError as e:
        raise CheckpointError(f'a {kind} detector, but {PARSER_MODULES[kind]} does not import ({e}); '
                              f'install {kind}') from None
    return register_in(module)


def portable_yaml(stored: Inert, kind: str) -> dict:
    """The stored model YAML, checked (`yaml_guard.check_model_yaml`), with every DeployBackbone
    row's arguments replaced by the stored layer's architecture and stage indices."""
    import copy
    from .yaml_guard import check_model_yaml
    cfg = check_model_yaml(copy.deepcopy(stored.__dict__.get('yaml')), kind, _parser_namespace(kind))
    layers = _stored_layers(stored)
    for i, row in enumerate(cfg['backbone'] + cfg['head']):
        if row[2] == 'DeployBackbone':
            layer = layers.get(str(i))
            if layer is None or layer.NAME != 'models.handoff.backbone.DeployBackbone':
                raise CheckpointError(f'row {i}: the YAML names DeployBackbone, the stored model has '
                                      f'{class_name(layer) if layer is not None else "no layer"} there')
            row[3] = backbone_args(layer.__dict__.get('arch'), layer.__dict__.get('out_indices'), i)
    return cfg


def _stored_layers(stored: Inert) -> dict:
    body = (stored.__dict__.get('_modules') or {}).get('model')
    layers = body.__dict__.get('_modules') if isinstance(body, Inert) else None
    if not isinstance(layers, dict):
        raise CheckpointError('the stored model has no layer list (model.model)')
    return layers


def backbone_args(arch, out_indices, row: int) -> list:
    """[arch, out_indices] of a stored DeployBackbone, when they name a known architecture (or a
    RIFormer shape of bounded size) and a few stage indices."""
    from ..efficient import EFFICIENT_NAMES
    from ..riformer import ARCHS
    small = lambda v, top: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top  # noqa: E731
    if not (isinstance(out_indices, (list, tuple)) and 0 < len(out_indices) <= 8
            and all(small(i, 8) for i in out_indices)):
        raise CheckpointError(f'row {row}: the stored DeployBackbone has stage indices {str(out_indices)[:80]}')
    if isinstance(arch, str) and (arch in ARCHS or arch in EFFICIENT_NAMES):
        return [arch, list(out_indices)]
    if isinstance(arch, dict) and set(arch) <= {'depths', 'dims', 'mlp_ratio', 'in_chans'}:
        depths, dims = arch.get('depths'), arch.get('dims')
        shape_ok = (isinstance(depths, list) and isinstance(dims, list) and 0 < len(depths) == len(dims) <= 8
                    and all(small(d, 64) and d > 0 for d in depths) and all(small(d, 4096) and d > 0 for d in dims)
                    and small(arch.get('in_chans', 3), 16)
                    and isinstance(arch.get('mlp_ratio', 4.), (int, float)) and 0 < arch.get('mlp_ratio', 4.) <= 16)
        if shape_ok:
            return [dict(arch), list(out_indices)]
    raise CheckpointError(f'row {row}: the stored DeployBackbone names architecture {str(arch)[:80]!r}, '
                          f'neither a known name nor a RIFormer shape of bounded size')


def build_family(cfg: dict, kind: str) -> nn.Module:
    """A detector of `kind` built from `cfg` by this project's builders (ultralytics in its safe mode)."""
    if kind == 'ultralytics':
        from .yolo import build_detector
        ultralytics_safe_mode()
        return build_detector(cfg)
    from .yolov5_build import build_detection_model
    return build_detection_model(cfg, PARSER_YOLO[kind], nc=cfg.get('nc'))


PARSER_YOLO = {'yolov5': 'yolov5.models.yolo', 'yolo9': 'yolo9.models.yolo'}


def load_exactly(model: nn.Module, state: dict):
    """Every tensor of `state` into `model` and every tensor of `model` from `state`, same shapes;
    CheckpointError naming the first difference otherwise."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape)]
    if missing or extra or shapes:
        first = (f'{missing[0]} missing' if missing else f'{extra[0]} not in the YAML\'s model' if extra
                 else f'{shapes[0]} is {tuple(state[shapes[0]].shape)}, the YAML makes {tuple(want[shapes[0]].shape)}')
        raise CheckpointError(f'the stored tensors do not fit the stored model YAML ({len(missing)} missing, '
                              f'{len(extra)} extra, {len(shapes)} of another shape; first: {first})')
    with torch.no_grad():
        for key, tensor in want.items():
            tensor.copy_(state[key].to(tensor.dtype))


# ---------------------------------------------------------------------------------------------
# Vetting before a command starts, and ultralytics' own loader routed through load_pickled


def vet_checkpoint(path, family: Optional[str] = None) -> Path:
    """`path` after a full restricted load and rebuild (nothing from the file executed;
    CheckpointError with one line for a refused class, call or YAML string, a damaged file, or
    with `family` ('ultralytics', 'yolo9', 'yolov5') a model of another kind)."""
    path = Path(path)
    ckpt = load_pickled(path)
    if family is not None:
        _check_family(path, detector_of(ckpt), family)
    return path


def _check_family(path: Path, model, wanted: str):
    try:
        found = detector_family(model)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    if found != wanted:
        raise CheckpointError(f'{path}: a {found} detector; this command takes {wanted} checkpoints'
                              + (' (load it with models.handoff.yolov5.load_detection_model)' if found != 'ultralytics'
                                 else ''))


def torch_safe_load(weight, safe_only=None):
    """ultralytics' `torch_safe_load(weight)` -> (checkpoint dict, file), read by `load_pickled`:
    the model comes out rebuilt from its checked YAML, nothing in the file is called, and a name
    that is not a local file is an error (ultralytics would download it)."""
    return load_pickled(weight), str(weight)


def torch_load_checkpoint(f, *args, **kwargs) -> dict:
    """ultralytics' `torch_load` as `ultralytics.utils.torch_utils` calls it: only
    `strip_optimizer`, which reads the run's own `last.pt` / `best.pt` at the end of training
    (a plain `torch.load(weights_only=False)` there). Read by `load_pickled` instead: the check
    and the read stay one read for every detector file of our processes."""
    return load_pickled(f)


URL_PREFIXES = ('http:', 'https:', 'ftp:', 'rtsp:', 'rtmp:', 'gs:', 's3:', 'ul:')


MAX_DATASET_YAML_BYTES = 16 << 20    # ImageNet's 1,000 class names take 30 kB


def _local_yaml(path, what: str):
    """The parsed YAML of a local regular file of bounded size; CheckpointError with one line
    otherwise (`what`: 'a dataset YAML', 'a model YAML')."""
    import yaml
    if str(path).lower().startswith(URL_PREFIXES):
        raise CheckpointError(f'{path}: {what} is read from a local file only; download it, then pass its path')
    path = Path(path)
    # is_file() follows links and is False for a FIFO or a device, which would hang the read (or
    # never end: /dev/zero); the size bound keeps a huge file from being parsed.
    if not path.is_file():
        raise CheckpointError(f'{path}: not a regular file; {what} is a file')
    if path.stat().st_size > MAX_DATASET_YAML_BYTES:
        raise CheckpointError(f'{path}: over {MAX_DATASET_YAML_BYTES >> 20} MB, too large for {what}')
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise CheckpointError(f'{path}: not a readable {what[2:]}') from None


def vet_model_yaml(path) -> Path:
    """An ultralytics model YAML (`riformer-yolo ... model=x.yaml`) whose strings ultralytics'
    parser may evaluate: checked by the same allow-list as a checkpoint's stored YAML
    (`yaml_guard.check_model_yaml`) before ultralytics reads it. CheckpointError with one line."""
    from .yaml_guard import check_model_yaml
    cfg = _local_yaml(path, 'a model YAML')
    check_model_yaml(cfg, 'ultralytics', _parser_namespace('ultralytics'))
    return Path(path)


def vet_dataset(path) -> Path:
    """An ultralytics dataset YAML that ultralytics may read without running anything: a local
    file, valid YAML, no `download:` entry (ultralytics runs it, a Python script, a shell command
    or a download, when the images are missing). CheckpointError with one line otherwise."""
    data = _local_yaml(path, 'a dataset YAML')
    path = Path(path)
    if isinstance(data, dict) and data.get('download'):
        raise CheckpointError(f'{path}: has a download: entry, which ultralytics runs (a Python script, a shell '
                              f'command or a download) when images are missing; remove it and fetch the data yourself')
    return path


def _no_dataset_scripts(original):
    """ultralytics' check_det_dataset that never runs a dataset YAML's download: entry and never
    fetches a dataset YAML by URL."""
    def check_det_dataset(dataset, autodownload=True, split=''):
        if str(dataset).lower().startswith(URL_PREFIXES):
            raise CheckpointError(f'{dataset}: a dataset YAML is read from a local file only; download it, then '
                                  f'pass its path')
        return original(dataset, autodownload=False, split=split)
    check_det_dataset.riformer_guard = True
    return check_det_dataset


def _guard_dataset_scripts():
    """Bind the guarded check_det_dataset in ultralytics.data.utils and in every ultralytics
    module already imported that holds the original (they import it by name)."""
    import sys
    import ultralytics.data.utils as data_utils
    original = data_utils.check_det_dataset
    if getattr(original, 'riformer_guard', False):
        return
    guarded = _no_dataset_scripts(original)
    for name, module in list(sys.modules.items()):
        if name.startswith('ultralytics') and getattr(module, 'check_det_dataset', None) is original:
            module.check_det_dataset = guarded


def ultralytics_safe_mode():
    """Switch on ultralytics' own restricted mode for this process (the flag its
    `ULTRALYTICS_SAFE_LOAD` variable sets at import: its parser resolves `activation` without
    eval and admits only layer classes as module names), set on the imported modules so that it
    also holds where ultralytics was imported before; and make its checkpoint loader
    (`load_checkpoint`, behind YOLO(...), training, resume and AutoBackend) read `.pt` files
    with `torch_safe_load` above, and `strip_optimizer` (the end of training rewriting the run's
    `last.pt` / `best.pt`) with `torch_load_checkpoint`; its dataset check never runs a dataset
    YAML's `download:` script nor fetches a dataset YAML by URL. Child processes are left as they
    were."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as utils
    import ultralytics.utils.torch_utils as torch_utils
    for module in (utils, tasks):
        module.SAFE_LOAD = True
    tasks.torch_safe_load = torch_safe_load
    torch_utils.torch_load = torch_load_checkpoint
    _guard_dataset_scripts()
