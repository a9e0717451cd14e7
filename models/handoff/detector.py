"""Detector checkpoints (ultralytics, yolo9, yolov5): read them without running anything named in
the file (inert stand-ins, the stored YAML checked, the model rebuilt from it), write them
atomically in the layout their own loaders take."""
import datetime
import os
import pickle
import tempfile
from pathlib import Path
from typing import Iterable, List, Tuple

import torch
import torch.nn as nn

from ..checkpoint_io import check_zip
from ..paths import one_line_write_failure
from ..errors import CheckpointError
from .inert import Inert, class_name, inert_state, load_inert

# Classes a detector checkpoint may name (each becomes an inert stand-in, never the class): modules
# of these packages (layers, models) and two plain data classes timm's feature wrapper keeps.
MODULE_PREFIXES = ('torch.nn.modules.', 'ultralytics.nn.', 'yolov5.models.', 'yolo9.models.', 'models.', 'timm.')
DATA_CLASSES = ('timm.models._features.FeatureInfo', 'timm.layers.format.Format')


def _allowed(name: str, prefixes: Iterable[str]):
    """The class `name` ('package.module.Class') when it is an nn.Module of an allowed package
    (or one of DATA_CLASSES)."""
    import importlib
    module, _, attr = name.rpartition('.')
    if name not in DATA_CLASSES and not any(f'{module}.'.startswith(p) for p in prefixes):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    if not isinstance(obj, type):
        return None
    return obj if name in DATA_CLASSES or issubclass(obj, nn.Module) else None


def allowed_classes(path, prefixes: Iterable[str] = MODULE_PREFIXES) -> List[Tuple[type, str]]:
    """[(class, 'module.Name')] for every global a pickled checkpoint names, read from the file's
    pickle without unpickling it; CheckpointError when one is not an allowed class (the first one
    named), the file is missing, or it is not a torch.save() archive."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'{path}: ' + ('a directory, not a checkpoint file' if path.is_dir() else 'no such file'))
    check_zip(path)
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:
        raise CheckpointError(f'{path}: not a PyTorch checkpoint ({_describe(e)})') from None
    allowed = [(cls, name) for name in needed if (cls := _allowed(name, prefixes)) is not None]
    refused = [name for name in needed if name not in {n for _, n in allowed}]
    if refused:
        raise CheckpointError(
            f'{path}: refused to unpickle {refused[0]} (only detector and torch layers load safely'
            + (f'; {len(refused) - 1} more' if len(refused) > 1 else '') + ')')
    return allowed


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
        value = stored.__dict__.get(key)
        if value is not None and not _holds_inert(value):
            setattr(model, key, value)
    return model


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
        from .safe_load import ultralytics_safe_mode
        from .yolo import build_detector
        ultralytics_safe_mode()
        return build_detector(cfg)
    from .yolov5 import build_detection_model
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


def detector_of(ckpt: dict) -> nn.Module:
    """The model a checkpoint holds (ultralytics and YOLOv9 keep the EMA model when training)."""
    return (ckpt.get('ema') or ckpt.get('model')).float()


def save_detector(model: nn.Module, path, extra: dict = None) -> Path:
    """Save `model` as `{'model': model, ...}` (float32, what ultralytics' and YOLOv9's loaders
    take) atomically: a crash mid-write leaves the previous file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {'model': model.float(), 'ema': None, 'optimizer': None, 'epoch': -1, 'train_args': {},
            'date': datetime.datetime.now().isoformat()}
    try:
        import ultralytics
        ckpt['version'] = ultralytics.__version__
    except ImportError:
        pass
    ckpt.update(extra or {})
    with one_line_write_failure(path):      # a full disk: one line; the temporary file is removed below
        _write_atomically(ckpt, path)
    return path


def _write_atomically(ckpt: dict, path: Path):
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _describe(e: Exception) -> str:
    """What went wrong reading a file, in words (torch's own messages are a bare '(101)' for a text
    file, or a zip reader's internals for a truncated one)."""
    text = _first_line(e)
    if isinstance(e, EOFError) or 'central directory' in text or 'reading zip archive' in text:
        return 'the file is empty or truncated: copy or download it again'
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    if 'returned by torch.save' in text or isinstance(e, KeyError) or len(text) < 6:
        return 'not a file written by torch.save()'
    return text


# ---------------------------------------------------------------------------------------------
# Whole-detector reparameterization

def family(model: nn.Module) -> str:
    """'ultralytics', 'yolo9' or 'yolov5': the code base a detector model comes from."""
    root = type(model).__module__.split('.')[0]
    if root in ('ultralytics', 'yolo9', 'yolov5'):
        return root
    raise CheckpointError(f'{type(model).__module__}.{type(model).__name__}: not an ultralytics, yolo9 or yolov5 detector')


def _tensors(out, prefix='out'):
    """Every tensor of a (nested) detector output, named by position."""
    if isinstance(out, torch.Tensor):
        return {prefix: out}
    if isinstance(out, dict):
        items = out.items()
    elif isinstance(out, (list, tuple)):
        items = enumerate(out)
    else:
        return {}
    found = {}
    for key, value in items:
        found.update(_tensors(value, f'{prefix}.{key}'))
    return found


@torch.no_grad()
def compare_detectors(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> dict:
    """Relative error (max |a - b| / max |a|) of every output tensor of `candidate` against
    `reference` on `x`, in eval mode: the decoded predictions and the head's raw maps."""
    from ..fold import relative_error
    ref, cand = _tensors(reference.eval()(x)), _tensors(candidate.eval()(x))
    if ref.keys() != cand.keys():
        raise CheckpointError(f'outputs differ in structure: {sorted(ref)} vs {sorted(cand)}')
    return {k: relative_error(ref[k], cand[k]) for k in ref}


def deploy_yaml(model: nn.Module) -> dict:
    """The model YAML of `model` with every RIFormerBlock row in its current form and every
    DeployBackbone row naming its architecture only, so that a rebuild makes the same modules."""
    import copy
    from .backbone import DeployBackbone
    from .layers import RIFormerNeckBlock
    cfg = copy.deepcopy(model.yaml)
    for row, layer in zip(cfg['backbone'] + cfg['head'], model.model):
        if isinstance(layer, RIFormerNeckBlock):
            row[3] = layer.yaml_args()
        elif isinstance(layer, nn.Sequential) and layer and all(isinstance(m, RIFormerNeckBlock) for m in layer):
            row[3] = layer[0].yaml_args()            # a row with repeats: one set of arguments
        elif isinstance(layer, DeployBackbone):
            row[3] = layer.portable_args()
    return cfg


def rebuild(model: nn.Module) -> nn.Module:
    """What a fine-tune / resume builds from `model.yaml` in the detector's own code base."""
    kind = family(model)
    nc = model.yaml.get('nc')
    if kind == 'ultralytics':
        from .yolo import register
        register()
        return type(model)(model.yaml, nc=nc, verbose=False)
    from .yolov5 import build_detection_model
    return build_detection_model(model.yaml, f'{kind}.models.yolo', nc=nc)


def check_transfer(model: nn.Module, rebuilt: nn.Module):
    """Every tensor of `model` has a place of the same shape in `rebuilt` and back (what
    ultralytics reports as 'Transferred N/N items')."""
    have, want = model.state_dict(), rebuilt.state_dict()
    missing = [k for k in want if k not in have or have[k].shape != want[k].shape]
    extra = [k for k in have if k not in want]
    if missing or extra:
        raise CheckpointError(
            f'a rebuild from the rewritten YAML does not take every tensor: {len(missing)} new '
            f'(first: {missing[:1]}), {len(extra)} left over (first: {extra[:1]})')


def default_output(path: Path) -> Path:
    return path.with_name(f'{path.stem}.deploy{path.suffix}')


def reparameterize_detector(src, out=None, tol: float = 1e-5, image_size=None, batch_size: int = 2,
                            seed: int = 0, log=print) -> dict:
    """Fold every RIFormerBlock of a detector checkpoint (ultralytics, yolo9, yolov5) into the deploy
    form, check the outputs against the unfolded detector on a random batch at the checkpoint's
    image size and each folded block's residual branches against their own size, rewrite the
    stored YAML so a rebuild makes deploy-form blocks and takes every tensor, and write `out`
    (default SRC.deploy.pt) as a checkpoint the detector's own tools load.
    The optimizer state is not carried over (it belongs to the training-form parameters)."""
    import copy
    from ..fold import check_blocks, compare_blocks, reparameterize, worst_error
    from ..riformer import RIFormerBlock
    from ..paths import check_output
    src = Path(src)
    check_output([Path(out) if out else default_output(src)], [src])
    ckpt = load_pickled(src)
    model = detector_of(ckpt).eval()
    kind = family(model)
    blocks = [m for m in model.modules() if isinstance(m, RIFormerBlock)]
    if not blocks:
        raise CheckpointError(f'{src}: the detector has no RIFormer blocks to fold')
    todo = [name for name, m in model.named_modules() if isinstance(m, RIFormerBlock) and m.form != 'deploy']
    if not todo:
        raise CheckpointError(f'{src}: every RIFormer block is already in deploy form; nothing to fold')

    reference = copy.deepcopy(model)
    reparameterize(model, 'deploy')
    model.yaml = deploy_yaml(model)
    check_transfer(model, rebuild(model).eval())

    args = ckpt.get('train_args') or {}
    opt = ckpt.get('opt') or {}
    size = image_size or args.get('imgsz') or opt.get('imgsz') or 640
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    x = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(seed))
    errors = compare_detectors(reference, model, x)
    worst = max(errors.values(), key=lambda e: float('inf') if e != e else e)
    if not worst <= tol:     # also catches NaN
        raise CheckpointError(
            f'equivalence check failed: max relative error {worst:.3g} > tol {tol:g}; detector not written')
    # Near-identity blocks (layer scale 1e-5 after short training) hide a wrong fold from the
    # outputs: each folded block's residual branches are checked against their own size.
    block_errors = compare_blocks(reference, model, x, names=todo)
    check_blocks(block_errors, tol, worst, 'detector')
    worst_block, block_error = worst_error(block_errors)

    out = Path(out) if out else default_output(src)
    keep = {k: ckpt[k] for k in ('train_args', 'names', 'opt') if k in ckpt}
    save_detector(model, out, extra={**keep, 'folds': f'{len(todo)} RIFormer blocks to deploy form',
                                     'max_rel_error': worst, 'block_error': block_error})
    log(f'{src} -> {out}')
    log(f'  {kind} {type(model).__name__}: folded {len(todo)} of {len(blocks)} RIFormer blocks '
        f'({len(blocks) - len(todo)} were already deploy-form)')
    log(f'  check on {batch_size}x3x{size}x{size}: max relative error {worst:.2e} (tol {tol:g}) over '
        f'{len(errors)} outputs; stored YAML rewritten, a rebuild takes all {len(model.state_dict())} tensors')
    log(f'  blocks: the residual branches of the {len(block_errors)} folded blocks within {block_error:.1e} of '
        f'their own size (worst: {worst_block})')
    return {'output': str(out), 'errors': errors, 'max_rel_error': worst, 'folded': len(todo), 'family': kind,
            'block_errors': block_errors, 'block_error': block_error}


def is_detector_checkpoint(path) -> bool:
    """Whether `path` is a pickled detector (names an ultralytics / yolo9 / yolov5 class), judged
    from the names in the file without unpickling it."""
    path = Path(path)
    if path.suffix != '.pt' or not path.is_file():
        return False
    try:
        names = pickled_globals(path)
    except Exception:
        return False
    return any(n.split('.')[0] in ('ultralytics', 'yolo9', 'yolov5') for n in names)


def pickled_globals(path) -> set:
    """Every global a torch.save() archive's pickle names, read without unpickling it (torch's
    `get_unsafe_globals_in_checkpoint` leaves out those already allowed in this process)."""
    import io
    import zipfile
    from torch import _weights_only_unpickler
    with zipfile.ZipFile(path) as archive:
        record = next(n for n in archive.namelist() if n.endswith('/data.pkl') or n == 'data.pkl')
        return set(_weights_only_unpickler.get_globals_in_pkl(io.BytesIO(archive.read(record))))
