"""Reading, identifying and writing RIFormer checkpoints.

Files are read with safetensors or `torch.load(weights_only=True)`: nothing in a checkpoint is
ever executed. Our own files are safetensors with a JSON `config` in the metadata, so a file
alone is enough to rebuild its model.
"""
import hashlib
import json
import os
import pickle
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, safe_open

from .errors import CheckpointError
from .layouts import to_timm_names, unwrap
from .riformer import ARCHS, RIFormer, arch_name

FORMAT = 'riformer'


@dataclass
class ModelConfig:
    """Everything needed to rebuild a RIFormer from a state dict."""
    depths: Tuple[int, ...]
    dims: Tuple[int, ...]
    num_classes: int
    in_chans: int = 3
    mlp_ratio: float = 4.
    head_norm_first: bool = False
    form: str = 'train'

    @property
    def arch(self) -> str:
        return arch_name(self.depths, self.dims) or 'custom'

    def build(self, **kwargs) -> RIFormer:
        return RIFormer(
            depths=self.depths, dims=self.dims, num_classes=self.num_classes,
            in_chans=self.in_chans, mlp_ratio=self.mlp_ratio,
            head_norm_first=self.head_norm_first, form=self.form, **kwargs)

    def to_json(self) -> str:
        return json.dumps({'arch': self.arch, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> 'ModelConfig':
        """The config stored in a file's metadata, every value checked for type and range before
        anything is built from it; CheckpointError naming the first bad one."""
        try:
            raw = json.loads(text)
        except (ValueError, TypeError):
            raise CheckpointError('its metadata config is not valid JSON') from None
        if not isinstance(raw, dict):
            raise CheckpointError('its metadata config is not a JSON object')
        raw = dict(raw)
        raw.pop('arch', None)
        fields_ = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - fields_)
        if unknown or not {'depths', 'dims', 'num_classes'} <= set(raw):
            raise CheckpointError(f'its metadata config has keys {sorted(raw)}; expected {sorted(fields_)}')
        for key, value in raw.items():
            if not CONFIG_CHECKS[key](value):
                raise CheckpointError(f'its metadata config has {key} = {str(value)[:60]}, not {CONFIG_WORDS[key]}')
        if len(raw['depths']) != len(raw['dims']):
            raise CheckpointError('its metadata config has depths and dims of different lengths')
        raw['depths'], raw['dims'] = tuple(raw['depths']), tuple(raw['dims'])
        return cls(**raw)


def _int_in(low, high):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _ints_in(low, high):
    return lambda v: isinstance(v, list) and 1 <= len(v) <= 8 and all(_int_in(low, high)(x) for x in v)


# What a stored config may hold: the registered RIFormers and anything of their kind, bounded so
# that no value can ask for an allocation beyond a large model's.
CONFIG_CHECKS = {
    'depths': _ints_in(1, 64), 'dims': _ints_in(1, 4096), 'num_classes': _int_in(0, 100_000),
    'in_chans': _int_in(1, 64), 'head_norm_first': lambda v: isinstance(v, bool),
    'mlp_ratio': lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 16,
    'form': lambda v: v in ('train', 'plain', 'deploy'),
}
CONFIG_WORDS = {
    'depths': '1 to 8 block counts from 1 to 64', 'dims': '1 to 8 widths from 1 to 4096',
    'num_classes': 'a class count up to 100000', 'in_chans': 'an input channel count up to 64',
    'head_norm_first': 'true or false', 'mlp_ratio': 'a ratio in (0, 16]', 'form': 'train, plain or deploy',
}


@dataclass
class Checkpoint:
    state_dict: Dict[str, torch.Tensor]       # timm names
    config: ModelConfig
    source: str                               # 'riformer' (ours), 'timm', 'sail' or 'mmpretrain'
    metadata: Dict[str, str]
    ignored: Tuple[str, ...] = ()


def read_tensors(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """The tensors and safetensors metadata of a .safetensors or torch checkpoint file, read
    without executing anything (safetensors, or `torch.load(weights_only=True)`).

    Args:
        path: the file.

    Returns:
        (tensors, metadata); metadata is empty for torch files.

    Raises:
        CheckpointError: missing, unreadable, or not a checkpoint.

    Example:
        >>> tensors, metadata = read_tensors('runs/digits/imitation/model.safetensors')   # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f'{path}: no such file')
    if path.is_dir():
        raise CheckpointError(f'{path}: is a directory; pass the checkpoint file inside it')
    if path.suffix == '.safetensors':
        try:
            with safe_open(str(path), framework='pt') as f:
                metadata = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            problem = safetensors_problem(path) if looks_like_safetensors(path) else None
            if problem:
                raise CheckpointError(f'{path}: damaged: {problem} (an interrupted copy or write, or a disk '
                                      f'error); copy it again or use another checkpoint') from None
            raise CheckpointError(f'{path}: not a readable safetensors file ({_first_line(e)})') from None
        check_metadata(path, metadata)
        recorded = metadata.get(CHECKSUM_KEY)
        if recorded and recorded != tensors_sha256(tensors):
            raise CheckpointError(f'{path}: damaged: its tensors differ from the checksum recorded when it was '
                                  f'written (a disk or copy error); copy it again or use another checkpoint')
        return tensors, metadata
    check_zip(path)
    try:
        with warnings.catch_warnings():     # torch's notes on pickle protocols say nothing useful here
            warnings.simplefilter('ignore', UserWarning)
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, i.e. running the file's code: not here.
        found = re.search(r'GLOBAL (\S+)', str(e))
        raise CheckpointError(
            f'{path}: not a tensor checkpoint (its pickle holds Python objects'
            f'{f" such as {found.group(1)}" if found else ""}); it will not be unpickled, since that can '
            f'run code. Re-save the weights as a plain state dict (torch.save(model.state_dict(), path)) '
            f'or as .safetensors') from None
    except Exception as e:  # torch raises many types for a file that is no checkpoint
        raise CheckpointError(f'{path}: not a PyTorch checkpoint ({_torch_load_problem(e)})') from None
    try:
        return unwrap(obj), {}
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None


def read_state_dict(path):
    """A PoolFormer / RIFormer checkpoint's tensors in timm names, in any layout `to_timm_names`
    knows; our own files say which head they were saved with in their metadata.

    Args:
        path: the file.

    Returns:
        (state dict in timm names, head_norm_first).

    Raises:
        CheckpointError: unreadable, or not a PoolFormer / RIFormer state dict.

    Example:
        >>> sd, head_norm_first = read_state_dict('poolformer_s12.pth')   # doctest: +SKIP
    """
    raw, metadata = read_tensors(path)
    try:
        converted = to_timm_names(raw)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    if metadata.get('format') == FORMAT and 'config' in metadata:
        return converted.state_dict, stored_config(path, metadata, converted.state_dict).head_norm_first
    return converted.state_dict, converted.head_norm_first


def create_pretrained(name: str, **kwargs) -> nn.Module:
    """`timm.create_model(name, pretrained=True, **kwargs)` with the weights file read by
    `read_tensors`, not by timm: the file of `pretrained_cfg_overlay=dict(file=...)`, else the
    cached download (torch hub / Hugging Face cache). timm would `torch.load` it itself and answer
    a pickle naming objects with a traceback advising `weights_only=False`; here the zip CRCs are
    checked first and such a file is one line naming it. Without a local file (nothing cached)
    timm downloads the registered weights as before.

    Example:
        >>> model = create_pretrained('efficientvit_m0', pretrained_cfg_overlay=dict(file='m0.pth'))  # doctest: +SKIP
    """
    import timm
    model = timm.create_model(name, pretrained=True, **_overlay_read_here(name, kwargs))
    for cfg in (getattr(model, 'pretrained_cfg', None), getattr(model, 'default_cfg', None)):
        if isinstance(cfg, dict):
            cfg.pop('state_dict', None)      # the tensors are in the model now; do not keep a copy
    return model


def _overlay_read_here(name: str, kwargs: dict) -> dict:
    """kwargs whose `pretrained_cfg_overlay` carries the tensors (timm's first choice of source)."""
    from .pretrained import cached_weights
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    if overlay.get('state_dict') is not None:
        return kwargs
    path = overlay.get('file') or (None if overlay else cached_weights(name))
    if not path:
        return kwargs
    overlay['file'], (overlay['state_dict'], _) = str(path), read_tensors(path)
    return {**kwargs, 'pretrained_cfg_overlay': overlay}


def read_checkpoint(path) -> Checkpoint:
    """Read any supported RIFormer checkpoint; reject other models with what they look like.

    Args:
        path: our own file, a plain state dict (.pth / .pt / .safetensors) or an mmpretrain
            RIFormer checkpoint, in training, plain or deploy form.

    Returns:
        `Checkpoint`: timm-named tensors, the `ModelConfig` inferred from them, the source
        layout, the metadata and any ignored foreign keys.

    Raises:
        CheckpointError: unreadable, not a RIFormer, or incomplete.

    Example:
        >>> ckpt = read_checkpoint('runs/digits/imitation/model.safetensors')   # doctest: +SKIP
        >>> ckpt.config.arch, ckpt.config.form                                   # doctest: +SKIP
        ('riformer_mini', 'train')
    """
    raw, metadata = read_tensors(path)
    try:
        converted = to_timm_names(raw)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    sd = converted.state_dict
    if metadata.get('format') == FORMAT and 'config' in metadata:
        config = stored_config(path, metadata, sd)
        source = 'riformer'
    else:
        form = _form_of(sd, raw, path)
        config = infer_config(sd, form=form, head_norm_first=converted.head_norm_first, path=path)
        source = converted.source
    return Checkpoint(sd, config, source, metadata, tuple(converted.ignored))


def stored_config(path, metadata: Dict[str, str], sd) -> ModelConfig:
    """The config in our file's metadata, typed and bounded (`ModelConfig.from_json`) and agreeing
    with the tensors' shapes, before anything is built from it."""
    try:
        config = ModelConfig.from_json(metadata['config'])
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}; the file was edited or damaged') from None
    seen = infer_config(sd, form=config.form, path=path)
    for key in ('depths', 'dims', 'num_classes', 'in_chans'):
        if getattr(seen, key) != getattr(config, key):
            raise CheckpointError(f'{path}: its metadata config says {key} {getattr(config, key)}, its tensors have '
                                  f'{getattr(seen, key)}; the file was edited or damaged')
    return config


def _form_of(sd, raw, path) -> str:
    blocks = [k[:-len('.norm1.weight')] for k in sd if k.endswith('.norm1.weight')]
    if not blocks:
        raise CheckpointError(f'{path}: has stages but no blocks with norm1 (keys: {list(sd)[:4]})')
    has_affine = {b for b in blocks if f'{b}.token_mixer.affine.weight' in sd}
    if has_affine and len(has_affine) != len(blocks):
        raise CheckpointError(f'{path}: only {len(has_affine)} of {len(blocks)} blocks have an affine mixer')
    if has_affine:
        return 'train'
    if any('norm_reparam' in k for k in raw):
        return 'plain'          # mmpretrain deploy
    if all(f'{b}.norm2.weight' not in sd and f'{b}.layer_scale1.scale' not in sd for b in blocks):
        return 'deploy'
    raise CheckpointError(
        f'{path}: looks like a PoolFormer (blocks without token_mixer.affine weights), not a '
        f'RIFormer; use it as the teacher or to initialise a student (student.init_from_teacher)')


def infer_config(sd, form='train', head_norm_first=False, path='checkpoint') -> ModelConfig:
    """Architecture and class count from tensor shapes (timm names)."""
    try:
        stem = sd['stem.conv.weight']
        depths, dims = [], []
        while any(k.startswith(f'stages.{len(depths)}.blocks.') for k in sd):
            i = len(depths)
            depths.append(1 + max(int(k.split('.')[3]) for k in sd if k.startswith(f'stages.{i}.blocks.')))
            dims.append(sd[f'stages.{i}.blocks.0.norm1.weight'].shape[0])
        hidden = sd['stages.0.blocks.0.mlp.fc1.weight'].shape[0]
    except KeyError as e:
        raise CheckpointError(f'{path}: incomplete RIFormer state dict (no {e.args[0]})') from None
    fc = sd.get('head.fc.weight')
    return ModelConfig(
        depths=tuple(depths), dims=tuple(dims), num_classes=0 if fc is None else fc.shape[0],
        in_chans=stem.shape[1], mlp_ratio=hidden / dims[0], head_norm_first=head_norm_first, form=form)


def load_checked(model: nn.Module, state_dict, allow_missing=(), what='checkpoint'):
    """load_state_dict with errors that name the first offending key and both shapes.

    Args:
        model: the model to load into.
        state_dict: tensors in the model's names.
        allow_missing: substrings of keys that may be absent (e.g. 'token_mixer.affine').
        what: names the weights in errors.

    Returns:
        torch's `load_state_dict` result; `model` holds the weights.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys.

    Example:
        >>> import timm
        >>> m = timm.create_model('riformer_mini')
        >>> load_checked(m, timm.create_model('riformer_mini').state_dict())
        <All keys matched successfully>
    """
    expected = model.state_dict()
    for key, want in expected.items():   # model order: the first mismatch is the earliest layer
        value = state_dict.get(key)
        if value is not None and tuple(value.shape) != tuple(want.shape):
            raise CheckpointError(
                f'shape mismatch: {key} is {list(value.shape)} in the {what}, the model expects '
                f'{list(want.shape)}; pick the matching architecture')
    unexpected = [k for k in state_dict if k not in expected]
    missing = [k for k in expected if k not in state_dict and not any(a in k for a in allow_missing)]
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f'missing {len(missing)} keys (first: {missing[0]})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected keys (first: {unexpected[0]})')
        raise CheckpointError(f'the {what} does not fit the model: ' + ', '.join(parts))
    return model.load_state_dict(state_dict, strict=False)


def build_model(ckpt: Checkpoint, arch: Optional[str] = None, **kwargs) -> RIFormer:
    """The model a checkpoint describes, weights loaded.

    Args:
        ckpt: from `read_checkpoint`.
        arch: force a registered architecture (its shapes are then checked against the tensors).
        **kwargs: passed to the RIFormer constructor.

    Returns:
        The RIFormer, in the checkpoint's form.

    Raises:
        CheckpointError: `arch` unknown, or the tensors do not fit it.

    Example:
        >>> model = build_model(read_checkpoint('runs/digits/imitation/model.safetensors'))   # doctest: +SKIP
    """
    config = ckpt.config
    if arch is not None:
        if arch not in ARCHS:
            raise CheckpointError(f'unknown arch {arch!r}; choose one of {", ".join(ARCHS)}')
        depths, dims, _ = ARCHS[arch]
        config = ModelConfig(**{**asdict(config), 'depths': depths, 'dims': dims})
    model = config.build(**kwargs)
    try:
        load_checked(model, ckpt.state_dict)
    except CheckpointError as e:
        if arch is None:
            raise
        raise CheckpointError(f'{e} (--arch {arch}; the tensors look like {ckpt.config.arch})') from None
    return model.eval()


def write_safetensors(path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """Write a safetensors file atomically: a crash mid-write leaves the previous file (or
    none), never half a file.

    Args:
        path: the output file (its folder must exist).
        tensors: name -> tensor (made contiguous; shared storage is copied).
        metadata: string -> string, stored in the file's header.

    Example:
        >>> write_safetensors('weights.safetensors', model.state_dict(), {'format': 'timm'})   # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # Set last: checksums copied from another file's metadata (reparam keeps them) are replaced.
    metadata = {k: v for k, v in metadata.items() if k != METADATA_CHECKSUM_KEY}
    metadata[CHECKSUM_KEY] = tensors_sha256(tensors)
    metadata[METADATA_CHECKSUM_KEY] = metadata_sha256(metadata)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, file_mode())   # mkstemp made it 0600; give it the mode open() would
        with open(tmp, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def file_mode() -> int:
    """The mode `open()` gives a new file under the process's umask (0644 under umask 022).

    Returns:
        The permission bits, e.g. 0o644.

    Example:
        >>> oct(file_mode())   # doctest: +SKIP
        '0o644'
    """
    return 0o666 & ~_umask()


def _umask() -> int:
    try:
        # Read, not set: setting it, even briefly, would race with other threads creating files.
        with open('/proc/self/status') as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith('Umask:'))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0)     # elsewhere the only way to read it is to set it
        os.umask(mask)
        return mask


# Metadata key of our files: sha256 of their tensors (names, dtypes, shapes, bytes), checked on
# every read, so a bit flipped on disk or in a copy is an error instead of other weights.
CHECKSUM_KEY = 'tensors_sha256'


# And sha256 of every other metadata entry (the tensors' checksum included), checked on every
# read: a flipped byte in the config or the stored recipe is named, not parsed.
METADATA_CHECKSUM_KEY = 'metadata_sha256'


def metadata_sha256(metadata: Dict[str, str]) -> str:
    """sha256 over the metadata entries in key order (all but METADATA_CHECKSUM_KEY)."""
    digest = hashlib.sha256()
    for key in sorted(k for k in metadata if k != METADATA_CHECKSUM_KEY):
        digest.update(f'{len(key)}:{key}{len(str(metadata[key]))}:{metadata[key]}'.encode('utf-8', 'surrogatepass'))
    return digest.hexdigest()


def check_metadata(path, metadata: Dict[str, str]):
    """CheckpointError when the file's metadata differs from the checksum written with it
    (files written before the checksum existed have none and pass)."""
    recorded = metadata.get(METADATA_CHECKSUM_KEY)
    if recorded is not None and recorded != metadata_sha256(metadata):
        raise CheckpointError(f'{path}: damaged: its metadata (config, recipe) differs from the checksum recorded '
                              f'when it was written (a disk or copy error, or an edit); copy it again or use another '
                              f'checkpoint')


def tensors_sha256(tensors: Dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: each name, dtype, shape and raw bytes.

    Args:
        tensors: name -> tensor (any dtype and device).

    Returns:
        The hex digest.

    Example:
        >>> tensors_sha256({'w': torch.zeros(2)}) == tensors_sha256({'w': torch.zeros(2)})
        True
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f'{name}\0{t.dtype}\0{tuple(t.shape)}\0'.encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def looks_like_safetensors(path) -> bool:
    """Whether a file starts as a safetensors file does (a header length, then JSON): damage
    is told apart from files of another kind by this.

    Args:
        path: the file.

    Returns:
        True for safetensors files, intact or not; False for others and unreadable files.

    Example:
        >>> looks_like_safetensors('runs/digits/imitation/model.safetensors')   # doctest: +SKIP
        True
    """
    try:
        with open(path, 'rb') as f:
            start = f.read(9)
    except OSError:
        return False
    return len(start) == 9 and start[8:] == b'{' and int.from_bytes(start[:8], 'little') > 1


def safetensors_problem(path) -> Optional[str]:
    """What is wrong with a safetensors file's layout (truncated, a corrupted header), in
    words; None when its header and size agree (its bytes may still differ from what was
    written: `CHECKSUM_KEY` catches that). Meant for files that `looks_like_safetensors`.

    Args:
        path: the file.

    Returns:
        e.g. 'truncated: 1000000 bytes of the 4245224 its header describes', or None.

    Example:
        >>> safetensors_problem('runs/digits/imitation/model.safetensors') is None   # doctest: +SKIP
        True
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, 'rb') as f:
            length = int.from_bytes(f.read(8), 'little')
            if size < 8 or 8 + length > size:
                return f'truncated: {size} bytes, too few for its header'
            header = json.loads(f.read(length))
    except OSError as e:
        return f'unreadable ({e.strerror or e})'
    except (ValueError, UnicodeDecodeError):
        return 'its header is corrupted (not valid JSON)'
    try:
        end = max((int(v['data_offsets'][1]) for k, v in header.items() if k != '__metadata__'), default=0)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError):
        return 'its header is corrupted (no valid data offsets)'
    expected = 8 + length + end
    if size < expected:
        return f'truncated: {size} bytes of the {expected} its header describes'
    if size > expected:
        return f'{size} bytes, more than the {expected} its header describes'
    return None


def save_model(path, model: RIFormer, extra: Optional[Dict[str, str]] = None) -> None:
    """Save a RIFormer with the metadata that `read_checkpoint` and `models.load_model` rebuild it from.

    Args:
        path: the output .safetensors file.
        model: a RIFormer in any form.
        extra: more metadata (strings), e.g. {'image_size': '224'}.

    Example:
        >>> import timm
        >>> save_model('riformer_mini.safetensors', timm.create_model('riformer_mini'))   # doctest: +SKIP
    """
    config = ModelConfig(
        depths=model.depths, dims=model.dims, num_classes=model.num_classes,
        in_chans=model.in_chans, mlp_ratio=model.stages[0].blocks[0].mlp.fc1.out_channels / model.dims[0],
        head_norm_first=model.head_norm_first, form=model.form)
    metadata = {'format': FORMAT, 'config': config.to_json(), 'arch': config.arch, 'form': config.form}
    metadata.update(extra or {})
    write_safetensors(path, model.state_dict(), metadata)


def read_metadata(path) -> dict:
    """The safetensors metadata of a checkpoint (empty for torch files and unreadable ones;
    `read_tensors` gives the one-line error for those).

    Args:
        path: the file.

    Returns:
        The metadata dict (str -> str).

    Example:
        >>> read_metadata('runs/digits/imitation/model.safetensors')['format']   # doctest: +SKIP
        'riformer'
    """
    path = Path(path)
    if path.suffix != '.safetensors':
        return {}
    try:
        with safe_open(str(path), framework='pt') as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}
    check_metadata(path, metadata)
    return metadata


def check_zip(path):
    """CheckpointError when `path` is a zip archive (what torch.save writes) one of whose members
    fails its CRC: torch.load does not check them, so a flipped byte would load as other weights."""
    import zipfile
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return          # torch.load names what is wrong with it
    if bad is not None:
        raise CheckpointError(f'{path}: damaged: its member {bad} fails its CRC check (an interrupted copy or a disk '
                              f'error); copy it again or use another checkpoint')


def _torch_load_problem(e: Exception) -> str:
    """torch.load's failure in words: it says '(101)' for a text file (a KeyError on the first
    byte) and a zip reader's internals for a truncated archive."""
    text = _first_line(e)
    if isinstance(e, EOFError) or 'central directory' in text or 'reading zip archive' in text:
        return 'the file is empty or truncated: copy or download it again'
    if isinstance(e, KeyError) or isinstance(e, pickle.UnpicklingError) or len(text) < 6:
        return 'neither a torch.save() file nor safetensors'
    return text


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
