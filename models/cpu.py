"""What this CPU computes natively, read from /proc/cpuinfo: bf16 (the teacher's `auto` precision,
the bf16 deploy form) and int8 dot products (the int8 deploy routes). Pure functions of the
flags file and PyTorch's dispatch level, so that every part of the project reads them alike."""
import os
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


# oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA, formerly DNNL_MAX_CPU_ISA; read by oneDNN before its
# first primitive) -> the int8 dot-product flags its kernels may still use under it.
_ONEDNN_CAPS = (('AMX', {'amx_int8', 'avx512_vnni', 'avx_vnni'}), ('AVX10', {'amx_int8', 'avx512_vnni', 'avx_vnni'}),
                ('AVX512_CORE_VNNI', {'avx512_vnni', 'avx_vnni'}), ('AVX512_CORE_BF16', {'avx512_vnni', 'avx_vnni'}),
                ('AVX512_CORE_FP16', {'avx512_vnni', 'avx_vnni'}), ('AVX2_VNNI', {'avx_vnni'}))
# Which runtimes' int8 kernels run on oneDNN (and so obey its ISA cap): PyTorch's PT2E route.
# ONNX Runtime's MLAS picks its kernels from CPUID alone (no cap exists); OpenVINO bundles its
# own oneDNN and decides for itself.
INT8_RUNTIMES = ('pt2e', 'onnxruntime', 'openvino')


def onednn_isa_cap(environ=None) -> str:
    """oneDNN's ISA cap from the environment ('AVX2', 'AVX512_CORE', ...), '' when none is set."""
    environ = os.environ if environ is None else environ
    cap = (environ.get('ONEDNN_MAX_CPU_ISA') or environ.get('DNNL_MAX_CPU_ISA') or '').strip().upper()
    return '' if cap in ('ALL', 'DEFAULT') else cap


def int8_dot_products(runtime: str = 'pt2e', flags: Optional[Set[str]] = None, environ=None) -> str:
    """The int8 dot-product instructions `runtime`'s kernels use on this CPU ('avx512_vnni'), or
    '' when they have none: the flags of `cpu_int8_support`, less what oneDNN's ISA cap
    (ONEDNN_MAX_CPU_ISA) rules out for the oneDNN-based PT2E route."""
    if runtime not in INT8_RUNTIMES:
        raise ValueError(f'unknown int8 runtime {runtime!r} (one of {", ".join(INT8_RUNTIMES)})')
    found = cpu_int8_support(flags)
    cap = onednn_isa_cap(environ) if runtime == 'pt2e' else ''
    if cap and found:
        allowed = next((kept for name, kept in _ONEDNN_CAPS if name in cap), set())
        found = ','.join(f for f in found.split(',') if f in allowed)
    return found


def int8_saturates(runtime: str = 'pt2e', flags: Optional[Set[str]] = None, environ=None,
                   machine: Optional[str] = None) -> bool:
    """Whether `runtime`'s int8 convolutions on this CPU add u8 x s8 products in pairs into
    saturating 16-bit sums: x86 without VNNI/AMX (AVX2's and AVX-512's vpmaddubsw). Full 8-bit
    activations and weights can then overflow (2 x 255 x 127 > 32767); 7-bit activations or
    weights (`reduce_range`) cannot. Arm's and VNNI's int8 kernels accumulate in 32 bits."""
    machine = (platform.machine() if machine is None else machine).lower()
    if machine not in ('x86_64', 'amd64', 'i386', 'i686', 'x86'):
        return False
    return not int8_dot_products(runtime, flags, environ)
