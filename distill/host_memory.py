"""Keep freed host memory in the process instead of handing it back to the OS (glibc malloc).

PyTorch's CPU tensors come from malloc. glibc serves every allocation above its mmap threshold
(32 MB at most, e.g. S12's 51 MB MLP hidden maps at batch 16) with fresh pages from mmap and
unmaps them on free, and gives the top of its heap back once enough of it is free. A training
step allocates and frees the same large tensors every step, so each of them pays a page fault
per 4 KB page on first touch, in a VM a costly one: on a 2-vCPU KVM guest the fp32
PoolFormer-S12 teacher forward (batch 16) took 706-756 ms this way and 549-593 ms with the
memory kept (`tools/benchmark.py --archs s12 --forms teacher --channels-last [--system-malloc]`). Both calls below are glibc's documented `mallopt` parameters, the same as
running with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`; the cost is that the process
keeps its peak footprint (what the next step needs anyway). Other C libraries (musl, macOS)
are left alone. Processes forked afterwards (data-loader workers) inherit the setting.
"""
import ctypes
import sys
from typing import Optional

# From glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int; INT_MAX bytes of free heap top before a trim is, for a trainer, never.
NEVER_TRIM = 2**31 - 1

_state = {'kept': False}


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version          # glibc only: musl has a mallopt that does nothing
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Make glibc serve large allocations from its heap and never trim it, for the rest of the
    process. Returns whether the setting is in effect (False where the C library is not glibc).

    Example:
        >>> from distill.host_memory import keep_freed_memory
        >>> keep_freed_memory() in (True, False)
        True
    """
    libc = _glibc()
    if libc is None:
        return False
    if libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1:
        _state['kept'] = True
    return _state['kept']


def describe() -> str:
    """One line for logs and benchmark headers."""
    if _state['kept']:
        return 'glibc malloc keeps freed memory (no mmap, no trim)'
    return 'system malloc defaults'
