"""Where timm's pretrained weights of a model name come from, and whether they can be had here:
in the local cache (Hugging Face hub cache, or torch hub's for plain URLs), or downloadable.
Asked before a download starts, so that an offline machine gets one clear line instead of
retries, a progress bar and a traceback."""
import os
import socket
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import timm


def weights_source(name: str) -> Optional[str]:
    """The Hub id, URL or file timm loads `name`'s pretrained weights from, or None."""
    try:
        cfg = timm.models.get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:       # a tag timm does not know
        return None
    return (cfg.hf_hub_id or cfg.url or cfg.file or None) if cfg is not None else None


def unavailable_reason(name: str) -> Optional[str]:
    """None when the weights are cached or can be downloaded; else why not, as a phrase."""
    source = weights_source(name)
    if source is None:
        return 'timm has no pretrained weights for it'
    if _cached(source):
        return None
    url = '://' in source
    host = urlparse(source).hostname if url else 'huggingface.co'
    if not url and os.environ.get('HF_HUB_OFFLINE', '0').lower() in ('1', 'true', 'yes'):
        return f'its weights ({source}) are not in the local cache and HF_HUB_OFFLINE is set'
    if not _resolves(host):
        return f'its weights ({source}) are not in the local cache and {host} cannot be reached'
    return None


def _cached(source: str) -> bool:
    return _cached_path(source) is not None


def cached_weights(name: str) -> Optional[str]:
    """The local file of `name`'s pretrained weights in the torch hub / Hugging Face cache, or
    None (not cached, or a name without weights)."""
    source = weights_source(name)
    return _cached_path(source) if source else None


def _cached_path(source: str) -> Optional[str]:
    if '://' in source:                        # a plain URL: torch.hub's checkpoint cache
        import torch.hub
        path = Path(torch.hub.get_dir()) / 'checkpoints' / Path(urlparse(source).path).name
        return str(path) if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache
    found = (try_to_load_from_cache(source, f) for f in ('model.safetensors', 'pytorch_model.bin'))
    return next((f for f in found if isinstance(f, str)), None)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
