"""RIFormer: a PoolFormer whose token mixer is a per-channel affine, foldable into the norm.

Wang et al., "RIFormer: Keep Your Vision Backbone Effective But Removing Token Mixer", CVPR 2023.

Parameter names mirror timm's PoolFormer (`timm/models/metaformer.py`), so a PoolFormer state
dict initialises the student with only `token_mixer.affine.*` missing (the paper's
teacher-weight init). A block exists in three forms, all with the same forward code (plus a
oneDNN-fused path for deploy-form CPU inference, same function, see `_forward_deploy_fused`):

* ``train``:  x + ls1 * (affine(norm1(x)) - norm1(x));  x + ls2 * mlp(norm2(x))
* ``plain``:  the affine folded into norm1 only (what mmpretrain's deploy mode does)
* ``deploy``: additionally layer scale 1 folded into norm1, norm2's affine into mlp.fc1 and
  layer scale 2 into mlp.fc2, leaving x + norm1'(x);  x + mlp'(normalize(x)).

Every fold is exact: GroupNorm(1) normalises per sample, so only its affine part moves. In eval
mode a deploy block can take both norms' statistics from one pass over its input
(`models/deploy_norms.py`): by default where torch.compile or torch.export traces it,
everywhere or nowhere with `RIFormer.set_norm_path('one-pass' | 'two-norms')`.
"""
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from timm.layers import DropPath, GroupNorm1, LayerNorm2d, Mlp, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from .deploy_norms import check_norm_path, eager_norms, one_pass_norms

__all__ = ['RIFormer', 'RIFormerBlock', 'Affine', 'FORMS', 'ARCHS']

FORMS = ('train', 'plain', 'deploy')

# name: (depths, dims, layer scale init) -- the paper's Table 10 / PoolFormer's settings.
# `mini` is ours: a four-stage model small enough to distil on a CPU in minutes.
ARCHS = {
    'riformer_s12': ((2, 2, 6, 2), (64, 128, 320, 512), 1e-5),
    'riformer_s24': ((4, 4, 12, 4), (64, 128, 320, 512), 1e-5),
    'riformer_s36': ((6, 6, 18, 6), (64, 128, 320, 512), 1e-6),
    'riformer_m36': ((6, 6, 18, 6), (96, 192, 384, 768), 1e-6),
    'riformer_m48': ((8, 8, 24, 8), (96, 192, 384, 768), 1e-6),
    'riformer_mini': ((1, 1, 3, 1), (32, 64, 128, 192), 1e-5),
}


# oneDNN's convolution with fused post-ops (GELU, residual add): what Inductor calls on CPU.
_ONEDNN_FUSION = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_convolution_pointwise')


# oneDNN's fused bf16 convolutions need AVX-512 (BW, VL, DQ); elsewhere a bf16 deploy model
# takes the reference forward (plain bf16 ops, emulated and slow).
_ONEDNN_BF16 = _ONEDNN_FUSION and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _fused_cpu_inference(x: torch.Tensor) -> bool:
    """Whether the deploy form may take its oneDNN-fused path: eager CPU inference in fp32, or
    in bf16 where oneDNN fuses bf16 (the bf16 deploy form, `models.load_deploy(dtype='bf16')`).
    Autograd, tracing (ONNX export), torch.compile and other devices and dtypes take the
    reference forward, which computes the same function with standard ops."""
    return (
        _ONEDNN_FUSION and x.device.type == 'cpu' and x.dim() == 4
        and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and _ONEDNN_BF16))
        and not torch.is_grad_enabled() and torch.backends.mkldnn.enabled
        and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
    )


def _observed(module: nn.Module) -> bool:
    """Whether a hook would see this module's call (then it must run as a module)."""
    return bool(module._forward_hooks or module._forward_pre_hooks
                or nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)


def _fused_deploy(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether every block under `module` will take the fused deploy path for input `x`.
    The cheap checks go first: a training forward never walks the modules."""
    if module.training or not _fused_cpu_inference(x):
        return False
    blocks = [m for m in module.modules() if isinstance(m, RIFormerBlock)]
    return bool(blocks) and all(b.fused and b.form == 'deploy' for b in blocks)


def arch_name(depths: Sequence[int], dims: Sequence[int]) -> Optional[str]:
    """The registered name of a (depths, dims) pair, or None for a custom shape."""
    for name, (d, w, _) in ARCHS.items():
        if tuple(depths) == d and tuple(dims) == w:
            return name
    return None


class Affine(nn.Module):
    """The RIFormer token mixer: per-channel scale and shift, minus the input (PoolFormer's
    residual convention, so that `affine - x` plays the role of `pool - x`)."""

    def __init__(self, dim: int):
        super().__init__()
        self.affine = nn.Conv2d(dim, dim, kernel_size=1, groups=dim, bias=True)
        # s = 1, t = 0 makes the mixer output zero, which is what PoolFormer's pool(y) - y
        # tends to on smooth maps: the closest affine to the teacher's mixer at the start.
        nn.init.ones_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x):
        return self.affine(x) - x


class LayerScale2d(nn.Module):
    """Per-channel scale of an NCHW map (timm's `Scale`, parameter `scale`)."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.scale = nn.Parameter(init_value * torch.ones(dim))

    def forward(self, x):
        return x * self.scale.view(-1, 1, 1)


class RIFormerBlock(nn.Module):
    """One RIFormer block; `reparameterize()` turns it into the deploy form in place."""

    def __init__(
            self,
            dim: int,
            mlp_ratio: float = 4.,
            drop_path: float = 0.,
            layer_scale_init_value: float = 1e-5,
            form: str = 'train',
    ):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f'unknown block form {form!r}; use one of {FORMS}')
        self.form = form
        deploy = form == 'deploy'
        self.norm1 = GroupNorm1(dim)
        self.token_mixer = Affine(dim) if form == 'train' else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.layer_scale1 = nn.Identity() if deploy else LayerScale2d(dim, layer_scale_init_value)
        self.norm2 = GroupNorm1(dim, affine=not deploy)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=nn.GELU, use_conv=True)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.layer_scale2 = nn.Identity() if deploy else LayerScale2d(dim, layer_scale_init_value)
        # Deploy-form inference on CPU uses oneDNN-fused convolutions; False forces the
        # reference forward (the benchmark compares the two). Not part of the state dict.
        self.fused = True
        # How an eval-mode deploy block computes its two norms ('auto', 'one-pass' or 'two-norms',
        # models/deploy_norms.py); not part of the state dict either.
        self.norm_path = 'auto'

    def forward(self, x):
        if self.fused and self.form == 'deploy' and not self.training and _fused_cpu_inference(x) \
                and not self._bypassed_observed():
            return self._forward_deploy_fused(x)
        if self._one_pass(traced=torch.compiler.is_compiling()):
            # Standard ops, so that torch.compile and torch.export trace the one-pass form.
            y, z = one_pass_norms(x, self.norm1.weight, self.norm1.bias, self.norm1.eps, self.norm2.eps)
            return y + self.mlp(z)
        x = x + self.layer_scale1(self.drop_path1(self.token_mixer(self.norm1(x))))
        x = x + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))
        return x

    def _bypassed_observed(self) -> bool:
        # The fused path never calls the MLP's modules: a hook on one of them (thop's FLOP count in
        # ultralytics' and YOLOv5's summaries, a feature recorder) needs the reference forward.
        # Asked on every call, not cached in a flag set at registration: torch tells nobody when a
        # hook is registered on fc1 / fc2 or removed through its handle (thop removes its hooks
        # after counting), so a flag would go stale and pin a block to the slow path. The dict
        # lookups cost about 7 us per block (measured; 12 blocks in an S12 forward).
        mlp = self.mlp
        return _observed(mlp) or any(m._forward_hooks or m._forward_pre_hooks for m in mlp._modules.values())

    def _one_pass(self, traced: bool = False) -> bool:
        # Eval mode only (drop path would sit between the norms), and never past a hooked norm,
        # whose call the one-pass form skips. A block unpickled from before norm paths is 'auto'.
        path = getattr(self, 'norm_path', 'auto')
        wanted = path == 'one-pass' or (path == 'auto' and traced)
        return (wanted and self.form == 'deploy' and not self.training
                and not _observed(self.norm1) and not _observed(self.norm2))

    def _forward_deploy_fused(self, x):
        # The deploy block x + norm1(x); x + fc2(gelu(fc1(norm2(x)))) with the GELU and the
        # residual add done inside oneDNN's 1x1 convolutions (post-ops): the 4C-wide hidden map
        # is written and read once instead of twice, and the sum needs no pass of its own.
        # Same function, exact to float rounding (GELU in erf form, as nn.GELU).
        y, z = self._fused_norms(x)
        fc1, fc2 = self.mlp.fc1, self.mlp.fc2
        one, zero = [1, 1], [0, 0]
        h = torch.ops.mkldnn._convolution_pointwise(
            z, fc1.weight, fc1.bias, zero, one, one, 1, 'gelu', [], 'none')
        return torch.ops.mkldnn._convolution_pointwise.binary(
            h, y, fc2.weight, fc2.bias, zero, one, one, 1, 'add', None, None, [], None)

    def _fused_norms(self, x):
        """(x + norm1(x), norm2(x + norm1(x))): Inductor's one-pass kernels, or the two GroupNorms."""
        if self._one_pass():
            out = eager_norms(x, self.norm1.weight, self.norm1.bias, self.norm1.eps, self.norm2.eps)
            if out is not None:
                return out
        y = self.norm1(x).add_(x)
        return y, self.norm2(y)

    @torch.no_grad()
    def reparameterize(self, form: str = 'deploy'):
        """Fold into `form` ('plain' or 'deploy'). Folding is one-way and repeatable: asking for
        a form this block already has (or has gone past) changes nothing."""
        if form not in ('plain', 'deploy'):
            raise ValueError(f'can reparameterize to "plain" or "deploy", not {form!r}')
        if FORMS.index(self.form) >= FORMS.index(form):
            return self
        # Fold in float64 so that the deploy weights carry no extra rounding.
        norm1_w, norm1_b = self.norm1.weight.double(), self.norm1.bias.double()
        if self.form == 'train':
            s = self.token_mixer.affine.weight.double().reshape(-1) - 1.
            t = self.token_mixer.affine.bias.double()
            norm1_w, norm1_b = norm1_w * s, norm1_b * s + t
            self.token_mixer = nn.Identity()
        if form == 'deploy':
            ls1 = self.layer_scale1.scale.double()
            norm1_w, norm1_b = norm1_w * ls1, norm1_b * ls1
            self._fold_norm2_into_fc1()
            ls2 = self.layer_scale2.scale.double()
            fc2 = self.mlp.fc2
            fc2.weight.copy_(fc2.weight.double() * ls2.view(-1, 1, 1, 1))
            fc2.bias.copy_(fc2.bias.double() * ls2)
            self.layer_scale1 = nn.Identity()
            self.layer_scale2 = nn.Identity()
        self.norm1.weight.copy_(norm1_w)
        self.norm1.bias.copy_(norm1_b)
        self.form = form
        return self

    def _fold_norm2_into_fc1(self):
        # fc1(g * n + b) = (W * g) n + (W b + c): scale W's input channels, shift the bias.
        g, b = self.norm2.weight.double(), self.norm2.bias.double()
        fc1 = self.mlp.fc1
        w = fc1.weight.double()
        fc1.bias.copy_(fc1.bias.double() + w.flatten(1) @ b)
        fc1.weight.copy_(w * g.view(1, -1, 1, 1))
        norm2 = GroupNorm1(g.numel(), eps=self.norm2.eps, affine=False)
        self.norm2 = norm2.to(device=fc1.weight.device)


class RIFormerStage(nn.Module):
    def __init__(self, in_chs, out_chs, depth, dp_rates, downsample, **block_kwargs):
        super().__init__()
        self.downsample = nn.Identity()
        if downsample:
            self.downsample = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=2, padding=1)))
        self.blocks = nn.Sequential(*[
            RIFormerBlock(out_chs, drop_path=dp_rates[i], **block_kwargs) for i in range(depth)])

    def forward(self, x):
        if _fused_deploy(self, x):
            # oneDNN runs 1x1 convolutions on channels_last maps without reordering them (about
            # 1.5x on the MLPs): run the stage in channels_last, hand back the caller's layout.
            layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
                else torch.contiguous_format
            x = self.blocks(self.downsample(x.contiguous(memory_format=torch.channels_last)))
            return x.contiguous(memory_format=layout)
        return self.blocks(self.downsample(x))


class RIFormer(nn.Module):
    """RIFormer (training, plain-deploy or deploy form).

    `head_norm_first` picks where the final norm sits:
    False is timm's MetaFormer head (pool, then LayerNorm over channels); True is the original
    PoolFormer / mmpretrain head (GroupNorm(1) on the last map, then pool). Checkpoints trained
    with one must be evaluated with the same one; the loaders choose it from the layout.
    """

    def __init__(
            self,
            depths: Sequence[int] = (2, 2, 6, 2),
            dims: Sequence[int] = (64, 128, 320, 512),
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            mlp_ratio: float = 4.,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            layer_scale_init_value: float = 1e-5,
            head_norm_first: bool = False,
            form: str = 'train',
    ):
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f'depths {depths} and dims {dims} must have the same length')
        self.depths, self.dims = tuple(depths), tuple(dims)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = self.head_hidden_size = dims[-1]
        self.head_norm_first = head_norm_first
        self.grad_checkpointing = False

        self.stem = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chans, dims[0], kernel_size=7, stride=4, padding=2)))
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, self.feature_info = [], []
        for i, (depth, dim) in enumerate(zip(depths, dims)):
            first = sum(depths[:i])
            stages.append(RIFormerStage(
                dims[max(i - 1, 0)], dim, depth, rates[first:first + depth], downsample=i > 0,
                mlp_ratio=mlp_ratio, layer_scale_init_value=layer_scale_init_value, form=form))
            self.feature_info.append(dict(num_chs=dim, reduction=2 ** (i + 2), module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)

        head_norm = GroupNorm1(self.num_features) if head_norm_first else LayerNorm2d(self.num_features)
        self.head = nn.Sequential(OrderedDict([
            ('global_pool', SelectAdaptivePool2d(pool_type=global_pool)),
            ('norm', head_norm),
            ('flatten', nn.Flatten(1) if global_pool else nn.Identity()),
            ('drop', nn.Dropout(drop_rate)),
            ('fc', nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()),
        ]))
        self.apply(self._init_weights)

    def set_head_norm_first(self, norm_first: bool):
        """Switch to the other head (fresh norm weights): a checkpoint's head weights only mean
        something in the head they were trained with."""
        if norm_first != self.head_norm_first and not isinstance(self.head.norm, nn.Identity):
            self.head.norm = GroupNorm1(self.num_features) if norm_first else LayerNorm2d(self.num_features)
        self.head_norm_first = norm_first

    def _init_weights(self, m):
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[1:] != (1, 1, 1):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def form(self) -> str:
        """'train', 'plain' or 'deploy', derived from the blocks (timm's reparameterize_model
        folds blocks without telling the model)."""
        forms = {m.form for m in self.modules() if isinstance(m, RIFormerBlock)}
        return forms.pop() if len(forms) == 1 else 'mixed'

    @torch.jit.ignore
    def set_fused(self, enable: bool = True) -> 'RIFormer':
        """Whether deploy-form CPU inference may take the oneDNN-fused path (True, the default;
        exact to float rounding) or must run the reference forward (False: for timing the
        reference, or checking the fused path against it). Returns the model.

        Example:
            >>> import timm, models
            >>> m = models.reparameterize(timm.create_model('riformer_mini')).set_fused(False)
        """
        for block in self.modules():
            if isinstance(block, RIFormerBlock):
                block.fused = enable
        return self

    @torch.jit.ignore
    def set_norm_path(self, path: str = 'auto') -> 'RIFormer':
        """How the deploy blocks compute their two GroupNorms in eval mode: 'auto' (the default:
        both norms' statistics from one reduction over the block input where torch.compile or
        torch.export traces the model, i.e. the compiled and PT2E int8 forms; the two GroupNorms
        in eager PyTorch and ONNX export), 'one-pass' (also in eager PyTorch, by kernels Inductor
        compiles at the first call per input shape) or 'two-norms' (the GroupNorms as written
        everywhere). All compute the same function to float rounding (models/deploy_norms.py).
        Returns the model.

        Example:
            >>> import timm, models
            >>> m = models.reparameterize(timm.create_model('riformer_mini')).set_norm_path('two-norms')
        """
        check_norm_path(path)
        for block in self.modules():
            if isinstance(block, RIFormerBlock):
                block.norm_path = path
        return self

    def set_grad_checkpointing(self, enable=True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.head.global_pool = SelectAdaptivePool2d(pool_type=global_pool)
            self.head.flatten = nn.Flatten(1) if global_pool else nn.Identity()
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (timm's forward_intermediates contract)."""
        assert output_fmt == 'NCHW', 'Output shape must be NCHW.'
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages[:max_index + 1] if stop_early else self.stages
        intermediates = []
        x = self.stem(x)
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices=1, prune_norm=False, prune_head=True):
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_head:
            self.head.norm = nn.Identity()
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x):
        if _fused_deploy(self, x):
            # The whole trunk in channels_last (see RIFormerStage.forward): one layout change
            # instead of two per stage; the stem's 7x7 conv is faster on it too.
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            from timm.models._manipulate import checkpoint_seq
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x, pre_logits: bool = False):
        if self.head_norm_first:
            x = self.head.global_pool(self.head.norm(x))
        else:
            x = self.head.norm(self.head.global_pool(x))
        x = self.head.drop(self.head.flatten(x))
        return x if pre_logits else self.head.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict, model):
    """timm's hook for `pretrained=True` (the URLs below, or `pretrained_cfg_overlay=dict(file=...)`):
    accepts every layout `models.layouts` knows (timm, sail-sg PoolFormer, mmpretrain, also under
    a `state_dict` wrapper as mmpretrain saves them). The head follows the checkpoint: sail-sg
    and mmpretrain weights were trained with the norm-first head, so the model switches to it
    (both heads have the same parameter shapes, so loading alone would not notice)."""
    from .layouts import to_timm_names, unwrap
    converted = to_timm_names(unwrap(state_dict))
    if converted.head_norm_first:
        model.set_head_norm_first(True)
    return converted.state_dict


def _create(variant, pretrained=False, **kwargs):
    if pretrained and not (kwargs.get('pretrained_cfg_overlay') or {}).get('file'):
        _check_downloadable(variant, kwargs.get('pretrained_cfg'))
    depths, dims, ls_init = ARCHS[variant]
    kwargs = {'depths': depths, 'dims': dims, 'layer_scale_init_value': ls_init, **kwargs}
    out_indices = kwargs.pop('out_indices', tuple(range(len(kwargs['depths']))))
    return build_model_with_cfg(
        RIFormer, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs)


def _check_downloadable(variant, tag=None):
    """One clear line instead of timm's urllib traceback when the official weights are neither
    cached nor reachable (e.g. `timm.create_model('riformer_s12', pretrained=True)` offline)."""
    from .errors import CheckpointError
    from .pretrained import unavailable_reason
    name = variant if not isinstance(tag, str) or not tag else f'{variant}.{tag}'
    why = unavailable_reason(name)
    if why:
        raise CheckpointError(
            f'{name}: {why}; download it where there is network and load it with '
            f"timm.create_model({variant!r}, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))")


def _cfg(**kwargs):
    return {
        'url': '', 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.9, 'interpolation': 'bicubic',
        'mean': (0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225),
        'first_conv': 'stem.conv', 'classifier': 'head.fc', **kwargs,
    }


# The official RIFormer weights, as mmpretrain publishes them (its model index,
# configs/riformer/metafile.yml): ImageNet-1k, training form, mmpretrain layout (the filter
# above converts it). crop_pct from mmpretrain's test pipelines: resize the short edge to
# 248 / 426 (small, 224 / 384 px) or 236 / 404 (medium), then center-crop.
_MMPRETRAIN = 'https://download.openmmlab.com/mmclassification/v1/riformer/'
_WEIGHTS = {
    # name: (224 px file, 384 px file, crop_pct)
    'riformer_s12': ('riformer-s12_32xb128_in1k_20230406-6741ce71.pth',
                     'riformer-s12_32xb128_in1k-384px_20230406-145eda4c.pth', 0.9),
    'riformer_s24': ('riformer-s24_32xb128_in1k_20230406-fdab072a.pth',
                     'riformer-s24_32xb128_in1k-384px_20230406-bafae7ab.pth', 0.9),
    'riformer_s36': ('riformer-s36_32xb128_in1k_20230406-fdfcd3b0.pth',
                     'riformer-s36_32xb128_in1k-384px_20230406-017ed3c4.pth', 0.9),
    'riformer_m36': ('riformer-m36_32xb128_in1k_20230406-2fcb9d9b.pth',
                     'riformer-m36_32xb128_in1k-384px_20230406-66a6f764.pth', 0.95),
    'riformer_m48': ('riformer-m48_32xb128_in1k_20230406-2b9d1abf.pth',
                     'riformer-m48_32xb128_in1k-384px_20230406-2e874826.pth', 0.95),
}


def _mmpretrain_cfgs():
    cfgs = {}
    for name, (file_224, file_384, crop_pct) in _WEIGHTS.items():
        cfgs[f'{name}.mmpretrain_in1k'] = _cfg(url=_MMPRETRAIN + file_224, crop_pct=crop_pct)
        cfgs[f'{name}.mmpretrain_in1k_384'] = _cfg(
            url=_MMPRETRAIN + file_384, crop_pct=crop_pct, input_size=(3, 384, 384), pool_size=(12, 12))
    return cfgs


default_cfgs = generate_default_cfgs({
    **_mmpretrain_cfgs(),
    'riformer_mini': _cfg(num_classes=10, input_size=(3, 32, 32), pool_size=(1, 1), crop_pct=1.0),
})


@register_model
def riformer_s12(pretrained=False, **kwargs) -> RIFormer:
    return _create('riformer_s12', pretrained, **kwargs)


@register_model
def riformer_s24(pretrained=False, **kwargs) -> RIFormer:
    return _create('riformer_s24', pretrained, **kwargs)


@register_model
def riformer_s36(pretrained=False, **kwargs) -> RIFormer:
    return _create('riformer_s36', pretrained, **kwargs)


@register_model
def riformer_m36(pretrained=False, **kwargs) -> RIFormer:
    return _create('riformer_m36', pretrained, **kwargs)


@register_model
def riformer_m48(pretrained=False, **kwargs) -> RIFormer:
    return _create('riformer_m48', pretrained, **kwargs)


@register_model
def riformer_mini(pretrained=False, **kwargs) -> RIFormer:
    return _create('riformer_mini', pretrained, **kwargs)
