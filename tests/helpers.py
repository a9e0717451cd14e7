"""Shared test helpers: random non-trivial weights and tiny checkpoints."""
import math

import torch


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter a non-trivial random value: norms, affine mixers and layer scales
    far from their init (1, 0, 1e-5), so that a wrong fold cannot hide behind an identity; and
    BatchNorm statistics far from (0, 1), for the BN folds of the efficient backbones.

    Exactness tests only. `distill.balance_proxy.nontrivial_weights` is another distribution on
    purpose: trained-like scales and logits, for the gradient shares the balance tool measures."""
    g = torch.Generator().manual_seed(seed)

    def rand(p, mean, std):
        return mean + std * torch.randn(p.shape, generator=g)

    for name, p in model.named_parameters():
        if 'layer_scale' in name:          # RIFormer's layer_scale1.scale, FasterNet's layer_scale
            p.copy_(rand(p, 0.0, 0.5))                         # signs and sizes both vary
        elif 'token_mixer.affine.weight' in name:
            p.copy_(rand(p, 1.0, 0.5))
        elif 'norm' in name and name.endswith('weight'):
            p.copy_(rand(p, 1.0, 0.3))
        elif name.endswith('bias'):
            p.copy_(rand(p, 0.0, 0.3))
        else:                                                 # conv / linear weights
            fan_in = p[0].numel()
            p.copy_(rand(p, 0.0, 1.0 / math.sqrt(fan_in)))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(rand(m.running_mean, 0.0, 0.5))
            m.running_var.copy_(0.3 + torch.rand(m.running_var.shape, generator=g))
    return model


@torch.no_grad()
def drop_norm2_shift(block):
    """A broken `RIFormerBlock._fold_norm2_into_fc1` for tests of the fold check: norm2's scale
    goes into fc1, its shift (fc1's bias + W1 b2) is lost."""
    from models.riformer import GroupNorm1
    g = block.norm2.weight.double()
    block.mlp.fc1.weight.copy_(block.mlp.fc1.weight.double() * g.view(1, -1, 1, 1))
    block.norm2 = GroupNorm1(g.numel(), eps=block.norm2.eps, affine=False)


def network_layout(model, prefix='', final_norm='norm', head='head', plain=False):
    """A state dict in the original PoolFormer layout (`network.{2i}.{j}`, `patch_embed.proj`),
    written out by hand from the published key names (sail-sg PoolFormer), independent of
    models.layouts. mmpretrain's is the same under `backbone.`, with `norm{2(S-1)}`, `head.fc`."""
    out = {}
    for name, t in model.state_dict().items():
        parts = name.split('.')
        if name.startswith('stem.conv.'):
            out[f'{prefix}patch_embed.proj.{parts[-1]}'] = t
        elif '.downsample.conv.' in name:
            out[f'{prefix}network.{2 * int(parts[1]) - 1}.proj.{parts[-1]}'] = t
        elif '.blocks.' in name:
            rest = '.'.join(parts[4:])
            rest = {'layer_scale1.scale': 'layer_scale_1', 'layer_scale2.scale': 'layer_scale_2'}.get(rest, rest)
            if plain and rest.startswith('norm1.'):
                rest = rest.replace('norm1.', 'norm_reparam.')
            out[f'{prefix}network.{2 * int(parts[1])}.{parts[3]}.{rest}'] = t
        elif name.startswith('head.norm.'):
            out[f'{prefix}{final_norm}.{parts[-1]}'] = t
        elif name.startswith('head.fc.'):
            out[f'{head}.{parts[-1]}'] = t
        else:
            raise AssertionError(name)
    return out


def mmpretrain_layout(model, plain=False):
    """An mmpretrain RIFormer checkpoint, as mmpretrain saves it."""
    sd = network_layout(model, 'backbone.', f'norm{2 * (len(model.stages) - 1)}', 'head.fc', plain)
    return {'meta': {'mmpretrain_version': '1.2.0', 'epoch': 300}, 'state_dict': sd}


def deploy_checkpoint(path, arch='riformer_s12', seed=0):
    """A deploy checkpoint of `arch` with random non-trivial weights (no classifier) at `path`."""
    import models
    import timm
    model = randomize(timm.create_model(arch, num_classes=0), seed).eval()
    models.save_model(path, models.reparameterize(model))
    return path


def official_file_in_torch_hub_cache(torch_home, arch, model):
    """Put an mmpretrain-layout checkpoint of `model` where torch.hub keeps what it downloaded
    from `arch`'s official URL: timm then loads it from there, with no network."""
    from pathlib import Path
    from urllib.parse import urlparse
    import timm
    url = timm.get_pretrained_cfg(f'{arch}.mmpretrain_in1k').url
    path = Path(torch_home) / 'hub' / 'checkpoints' / Path(urlparse(url).path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(mmpretrain_layout(model), path)
    return path


# The trainer on the digits recipes, small and quick: 360 training images, batch 32, no progress bar.
FAST_TRAIN = ['data.val_fraction=0.8', 'train.batch_size=32', 'train.progress=false', 'train.log_every=2']


def skip_openvino_under_onednn_cap():
    """Skip an OpenVINO check when oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) stands in for another
    CPU: OpenVINO's CPU plugin picks its kernels from CPUID while its bundled oneDNN obeys the
    cap, and they disagree (measured with AVX2: bf16 gave empty outputs, int8 a segfault)."""
    import pytest
    from models.cpu import onednn_isa_cap
    if onednn_isa_cap():
        pytest.skip(f'ONEDNN_MAX_CPU_ISA={onednn_isa_cap()} cannot stand in for another CPU in OpenVINO')


def box_dataset(root, seed: int = 0, background: int = 40, colour=(220, 60, 60)):
    """Four 64px images with one coloured box each, in ultralytics' YOLO format (images/,
    labels/, data.yaml under `root`); returns the data.yaml path."""
    import numpy as np
    from pathlib import Path
    from PIL import Image
    root = Path(root)
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    rng = np.random.default_rng(seed)
    for i in range(4):
        img = np.full((64, 64, 3), background, np.uint8)
        x0, y0 = rng.integers(4, 30, 2)
        w, h = rng.integers(14, 30, 2)
        img[y0:y0 + h, x0:x0 + w] = colour
        Image.fromarray(img).save(root / 'images' / f'{i}.png')
        (root / 'labels' / f'{i}.txt').write_text(
            f'0 {(x0 + w / 2) / 64:.4f} {(y0 + h / 2) / 64:.4f} {w / 64:.4f} {h / 64:.4f}\n')
    (root / 'data.yaml').write_text(f'path: {root}\ntrain: images\nval: images\nnames:\n  0: box\n')
    return root / 'data.yaml'


def run_cut_at(full, cut, epoch: int = 1):
    """The run directory a kill after `epoch` leaves: `full`'s checkpoint of that epoch, its
    `latest` pointer and its recipe (output_dir pointed at `cut`), to resume in `cut`."""
    import shutil
    import yaml
    name = f'epoch_{epoch:04d}'
    shutil.copytree(full / 'checkpoints' / name, cut / 'checkpoints' / name)
    (cut / 'checkpoints' / 'latest').write_text(name)
    recipe = yaml.safe_load((full / 'recipe.yaml').read_text())
    recipe['train']['output_dir'] = str(cut)
    (cut / 'recipe.yaml').write_text(yaml.safe_dump(recipe, sort_keys=False))
    return cut
