"""One way to open a model: a checkpoint file of any kind this project reads, or the timm name
of an efficient backbone. The evaluation, ablation and export tools and the detector hand-off
all load through `load_model`.

Kinds of file, told apart by their safetensors metadata and tensor names:

* ours (`format: riformer`): a RIFormer in training, plain or deploy form (trainer output,
  tools/reparam.py output); the config in the metadata rebuilds it;
* a plain RIFormer state dict (timm, sail-sg or mmpretrain layout, `.pth/.pt/.safetensors`):
  architecture, class count and form are inferred from the tensors;
* the trainer's file of a non-RIFormer student or teacher (`format: timm`, with arch and
  num_classes);
* an EfficientViT / FasterNet deploy file (`format: timm-deploy`, tools/export.py).
"""
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .checkpoint_io import build_model, load_checked, read_checkpoint, read_metadata, read_tensors
from .efficient import EFFICIENT_NAMES, FORMAT as EFFICIENT_FORMAT, as_features, create_deploy, load_efficient_deploy
from .errors import CheckpointError
from .riformer import ARCHS

TIMM_FORMAT = 'timm'     # the trainer's file of a non-RIFormer model


def clean_source(source) -> str:
    """A source string as the user meant it."""
    # YAML parsers hand strings over verbatim or quoted ("'path'"): accept both.
    text = str(source).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in '\'"':
        text = text[1:-1]
    return text


def load_model(source, *, deploy: bool = False, features_only: bool = False,
               out_indices: Optional[Sequence[int]] = None, weights: Optional[str] = None,
               arch: Optional[str] = None) -> nn.Module:
    """The model `source` holds, in eval mode.

    Args:
        source: a checkpoint path (any kind listed in the module docstring) or an efficient
            backbone name (`efficientvit_m0`, `fasternet_t0`, ...; random init unless `weights`).
        deploy: accept only deploy-form models (what exporters and detectors take); a RIFormer
            checkpoint in training or plain form is refused with the command that folds it.
        features_only: return the stage outputs (a timm FeatureListNet with `feature_info`).
        out_indices: the stages to return with `features_only` (default: all).
        weights: a local timm checkpoint for an efficient backbone name.
        arch: force a registered RIFormer architecture (its shapes are checked against the tensors).

    Returns:
        an `nn.Module` in eval mode.

    Raises:
        CheckpointError: with a one-line message naming the problem and the fix.

    Example:
        >>> model = load_model('runs/digits/imitation/model.safetensors')               # doctest: +SKIP
        >>> feats = load_model('riformer_s12.deploy.safetensors', deploy=True, features_only=True,
        ...                    out_indices=(1, 2, 3))                                # doctest: +SKIP
    """
    source = clean_source(source)
    if source in EFFICIENT_NAMES:
        model = create_deploy(source, num_classes=0 if features_only else 1000, weights=weights)
        return as_features(model, out_indices) if features_only else model
    if source in ARCHS:
        raise CheckpointError(
            f'{source}: a RIFormer needs its deploy checkpoint (write one with tools/reparam.py), not a name')
    if weights is not None:
        raise CheckpointError(f'weights= is only for timm backbone names ({", ".join(EFFICIENT_NAMES)})')
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(
            f'{source}: no such file, and not a backbone name (names: {", ".join(EFFICIENT_NAMES)}; '
            f'RIFormer: a checkpoint path)')
    kind = read_metadata(path).get('format')
    if kind == EFFICIENT_FORMAT:
        tensors, metadata = read_tensors(path)
        return load_efficient_deploy(path, metadata, tensors, features_only, out_indices)
    if kind == TIMM_FORMAT and not deploy:
        return _load_timm_file(path, features_only, out_indices)
    ckpt = read_checkpoint(path)
    if deploy and ckpt.config.form != 'deploy':
        raise CheckpointError(
            f'{path}: is a {ckpt.config.form}-form checkpoint, not a deploy one; '
            f'run `python tools/reparam.py {path}` first')
    model = build_model(ckpt, arch=arch)
    return as_features(model, out_indices) if features_only else model


def _load_timm_file(path: Path, features_only: bool, out_indices) -> nn.Module:
    import timm
    tensors, metadata = read_tensors(path)
    model = timm.create_model(metadata['arch'], num_classes=int(metadata['num_classes']))
    load_checked(model, tensors, what=f'checkpoint {path}')
    model.eval()
    return as_features(model, out_indices) if features_only else model


def load_deploy(path, features_only: bool = False, out_indices: Optional[Sequence[int]] = None,
                dtype='fp32') -> nn.Module:
    """The deploy model of a deploy checkpoint, in eval mode (`load_model(path, deploy=True)`).

    Args:
        path: a deploy checkpoint (tools/reparam.py, or an efficient backbone's from tools/export.py).
        features_only: return the stage outputs (a timm FeatureListNet with `feature_info`).
        out_indices: the stages to return with `features_only` (default: all).
        dtype: 'fp32' (the default) or 'bf16': the bf16 deploy form for CPUs with AVX512-BF16 /
            AMX, in channels_last, taking fp32 or bf16 images (`models.precision`; warns where
            this CPU would emulate bf16).

    Returns:
        The deploy model (a RIFormer in deploy form, or the efficient backbone), or its
        FeatureListNet with `features_only`.

    Raises:
        CheckpointError: not a deploy checkpoint (a training one gets the command that folds it),
            or an unknown dtype.

    Example:
        >>> feats = load_deploy('riformer_s12.deploy.safetensors', features_only=True, out_indices=(1, 2, 3))  # doctest: +SKIP
        >>> fast = load_deploy('riformer_s12.deploy.safetensors', dtype='bf16')      # doctest: +SKIP
    """
    from .precision import resolve_dtype, to_bf16
    wanted = resolve_dtype(dtype)
    model = load_model(path, deploy=True, features_only=features_only, out_indices=out_indices)
    return to_bf16(model) if wanted == torch.bfloat16 else model
