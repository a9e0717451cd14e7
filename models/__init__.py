"""RIFormer models: importing this package registers them with timm.

    timm.create_model('riformer_s12', num_classes=10)       # training form (affine mixer)
    models.reparameterize(model)                             # fold into the deploy form, in place
    models.reparameterize(model, inplace=False)              # a folded copy (timm's reparameterize_model)
    models.load_deploy('model.deploy.safetensors')           # the deploy model, eval mode
    models.load_deploy('model.deploy.safetensors', dtype='bf16')   # its bf16 form (CPUs with AVX512-BF16/AMX)
    models.load_model('model.safetensors')                   # any checkpoint this project reads
    models.reparam_checkpoint('model.safetensors')           # file to checked deploy file
"""
# `models.errors` as an attribute too when distill/errors.py loaded that module first (without
# torch, for recipe checks and --help): a module found in sys.modules is not set on its package.
from . import errors  # noqa: F401
from . import riformer, teachers  # noqa: F401  (registers the timm entry points)
from .checkpoint_io import (
    Checkpoint, ModelConfig, build_model, load_checked, read_checkpoint, read_metadata, read_state_dict,
    read_tensors, save_model, write_safetensors)
from .errors import CheckpointError, HandoffError, RecipeError, RIFormerError, UsageError
from .layouts import to_mmpretrain_names, to_timm_names
from .loader import load_deploy, load_model
from .precision import bf16_note, to_bf16
from .poolformer_fused import PoolFormerInferenceBlock, fuse_poolformer, fused_blocks, reference_forward, set_fused
from .fold import FOLDS, compare_blocks, compare_forms, relative_error, reparam_checkpoint, reparameterize
from .riformer import ARCHS, RIFormer, RIFormerBlock
from .student import create_student, fix_identity_mixer
from .teachers import adapt_head, create_teacher, init_from_teacher

__all__ = [
    'ARCHS', 'Checkpoint', 'CheckpointError', 'FOLDS', 'HandoffError', 'RecipeError', 'RIFormerError', 'UsageError', 'ModelConfig', 'PoolFormerInferenceBlock', 'RIFormer',
    'RIFormerBlock', 'fuse_poolformer', 'fused_blocks',
    'adapt_head', 'build_model', 'compare_blocks', 'compare_forms', 'create_student', 'create_teacher', 'fix_identity_mixer', 'init_from_teacher', 'load_checked',
    'load_deploy', 'load_model', 'read_checkpoint', 'read_metadata', 'read_state_dict', 'read_tensors',
    'reference_forward', 'relative_error', 'reparam_checkpoint', 'reparameterize', 'set_fused',
    'save_model', 'bf16_note', 'to_bf16', 'to_mmpretrain_names', 'to_timm_names', 'write_safetensors',
]
