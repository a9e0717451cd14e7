"""Detector checkpoints (ultralytics, yolo9, yolov5): read them without running pickled code,
write them atomically in the layout their own loaders take."""
import datetime
import os
import pickle
import tempfile
from pathlib import Path
from typing import Iterable, List, Tuple

import torch
import torch.nn as nn

from ..errors import CheckpointError

# Classes a detector checkpoint may reconstruct: modules of these packages (layers, models) and
# two plain data classes timm's feature wrapper keeps.
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
    """A pickled detector checkpoint (`{'model': DetectionModel, ...}`) loaded with
    `torch.load(weights_only=True)`, allowing only nn.Module classes of the detector packages and
    ours to be rebuilt: no function from the file is ever called. Raises CheckpointError naming
    the first refused class."""
    path = Path(path)
    allowed = allowed_classes(path, prefixes)
    try:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(str(path), map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise CheckpointError(f'{path}: not a loadable detector checkpoint ({_describe(e)})') from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('ema') or ckpt.get('model'), nn.Module):
        raise CheckpointError(f'{path}: not a detector checkpoint (no model in it)')
    return ckpt


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
    return path


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
    src = Path(src)
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
    if out.resolve() == src.resolve():
        raise CheckpointError(f'{out}: output would overwrite the input; pass another -o')
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
