"""How many CPU threads a run computes with.

torch's OpenMP threads spin while they wait for each other. On a machine where another process
keeps a core busy, a run with as many threads as cores spends most of its time waiting for the
thread that shares its core: the digits teacher took 14-22 s an epoch with 2 threads on a
2-core machine with one core busy, 2 s with 1 thread. So by default a run takes the cores that
are idle when it starts (at least one), measured over a short interval from the lines of
/proc/stat for the CPUs this process may use (the load average would count the previous run of
a pipeline as busy for a minute).

A recipe's `train.threads` or OMP_NUM_THREADS in the environment decides instead.
"""
import os
import time
from typing import Optional, Set, Tuple


def allowed_cpus() -> Optional[Set[int]]:
    """The CPUs this process may run on (its affinity mask); None where the OS does not say."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:                       # not Linux
        return None


def available_cores() -> int:
    cpus = allowed_cpus()
    return len(cpus) if cpus is not None else (os.cpu_count() or 1)


def read_proc_stat() -> str:
    """/proc/stat's text (a function of its own so that tests can give a host of their own)."""
    with open('/proc/stat') as f:
        return f.read()


def cpu_times(stat: str, cpus: Optional[Set[int]]) -> Tuple[int, int, int]:
    """(total, idle, count) jiffies summed over the per-CPU lines (`cpuN ...`) of /proc/stat's text
    for the CPUs in `cpus` (all of them when None); idle counts iowait, total leaves out guest
    time (already counted in user)."""
    total = idle = count = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(' ')
        if not (name.startswith('cpu') and name[3:].isdigit()):
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        fields = [int(v) for v in rest.split()]
        total += sum(fields[:8])
        idle += fields[3] + (fields[4] if len(fields) > 4 else 0)
        count += 1
    if not count:
        raise ValueError('no per-CPU lines for the allowed CPUs in /proc/stat')
    return total, idle, count


def busy_cores(interval: float = 0.25) -> Optional[float]:
    """Cores' worth of CPU time other processes used over `interval` seconds on the CPUs this
    process may use (this one sleeps meanwhile); None where /proc/stat cannot be read. A process
    pinned to a few cores of a big host looks at those cores only, not at the host's average."""
    cpus = allowed_cpus()
    try:
        total0, idle0, _ = cpu_times(read_proc_stat(), cpus)
        time.sleep(interval)
        total1, idle1, count = cpu_times(read_proc_stat(), cpus)
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    share = 1 - (idle1 - idle0) / (total1 - total0)
    return share * count


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
