"""What this CPU computes natively, read from /proc/cpuinfo: bf16 (the teacher's `auto` precision,
the bf16 deploy form) and int8 dot products (the int8 deploy routes). Pure functions of the
flags file and PyTorch's dispatch level, so that every part of the project reads them alike."""
import platform
from pathlib import Path
from typing import Optional, Set

import torch

X86_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_flags(path: str = '/proc/cpuinfo') -> Set[str]:
    """The CPU's feature flags from /proc/cpuinfo ('flags' on x86, 'Features' on Arm); empty
    where the file does not exist (macOS, Windows)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        if key.strip() in ('flags', 'Features'):
            return set(value.split())
    return set()


def cpu_bf16_support(flags: Optional[Set[str]] = None, capability: Optional[str] = None,
                     machine: Optional[str] = None) -> str:
    """Which native bf16 instructions this CPU has and PyTorch will use, as text ('amx_bf16,
    avx512_bf16'), or '' when bf16 would be emulated. The flags come from /proc/cpuinfo; the
    cross-check is PyTorch's dispatch level (`torch.backends.cpu.get_cpu_capability()`): its
    vectorised bf16 kernels need AVX512, which ATEN_CPU_CAPABILITY=avx2 or an older CPU rules out."""
    flags = cpu_flags() if flags is None else flags
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    machine = (platform.machine() if machine is None else machine).lower()
    if machine in ('aarch64', 'arm64'):
        return 'bf16' if 'bf16' in flags else ''
    found = sorted(f for f in X86_BF16_FLAGS if f in flags)
    return ','.join(found) if found and capability.upper().startswith('AVX512') else ''


def cpu_int8_support(flags: Optional[Set[str]] = None) -> str:
    """The int8 dot-product instructions this CPU has ('amx_int8,avx512_vnni'), or '' (int8
    convolutions then run on AVX2 multiply-adds, usually little faster than fp32)."""
    flags = cpu_flags() if flags is None else flags
    return ','.join(f for f in ('amx_int8', 'avx512_vnni', 'avx_vnni') if f in flags)
