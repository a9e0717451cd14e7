"""How many CPU threads a run computes with.

torch's OpenMP threads spin while they wait for each other. On a machine where another process
keeps a core busy, a run with as many threads as cores spends most of its time waiting for the
thread that shares its core: the digits teacher took 14-22 s an epoch with 2 threads on a
2-core machine with one core busy, 2 s with 1 thread. So by default a run takes the cores that
are idle when it starts (at least one), measured over a short interval from /proc/stat (the
load average would count the previous run of a pipeline as busy for a minute).

A recipe's `train.threads` or OMP_NUM_THREADS in the environment decides instead.
"""
import os
import time
from typing import Optional, Tuple


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                       # not Linux
        return os.cpu_count() or 1


def busy_cores(interval: float = 0.25) -> Optional[float]:
    """Cores' worth of CPU time other processes used over `interval` seconds (this one sleeps
    meanwhile); None where /proc/stat cannot be read."""
    def sample():
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)       # idle + iowait
        return sum(fields[:8]), idle                                   # without guest time (counted in user)
    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    share = 1 - (idle1 - idle0) / (total1 - total0)
    return share * (os.cpu_count() or 1)


def idle_cores(cores: int, busy: Optional[float]) -> int:
    """Cores nobody else uses: at least 1, at most `cores`; a core counts as busy from half use."""
    if busy is None:
        return cores
    return max(1, min(cores, cores - int(busy + 0.5)))


def choose_threads(requested: Optional[int] = None) -> Tuple[int, Optional[str]]:
    """(threads, note): `requested` (train.threads) if set, else OMP_NUM_THREADS's, else the idle
    cores; the note says why a run uses fewer threads than cores (None when it does not)."""
    cores = available_cores()
    if requested:
        return requested, None
    if os.environ.get('OMP_NUM_THREADS', '').isdigit():
        return int(os.environ['OMP_NUM_THREADS']), None
    busy = busy_cores()
    threads = idle_cores(cores, busy)
    if threads < cores:
        return threads, (f'note: the machine is busy ({busy:.1f} of {cores} cores in use by other processes): '
                         f'computing with {threads} thread(s) instead of {cores}, as more would wait on each '
                         f'other (set train.threads=N to choose)')
    return threads, None
