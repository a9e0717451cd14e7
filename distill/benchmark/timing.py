"""The timer: interleaved, rotated repetitions, so that load from other processes spreads over
every timed step instead of hitting one; and the machine's load, to report next to timings."""
import math
import os
import time
from typing import Callable, Dict, Hashable, List, Optional

import torch

Step = Callable[[], object]


def synchronizer(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if str(device).startswith('cuda') else (lambda: None)


def load_average() -> str:
    try:
        return ' '.join(f'{v:.2f}' for v in os.getloadavg())
    except OSError:
        return 'n/a'


def time_steps(steps: Dict[Hashable, Step], reps: int, warmup: int, min_time: float,
               sync: Callable[[], None] = lambda: None, log=print,
               labels: Optional[Dict[Hashable, str]] = None) -> Dict[Hashable, List[float]]:
    """Seconds per call of every step: `warmup` untimed calls each, then `reps` interleaved
    repetitions. One measurement runs a step often enough to last about `min_time` (decided from
    the last warm-up call), so that fast models are not timed at the clock's resolution. The
    first call's time is logged (with torch.compile it is the compile time)."""
    calls = {}
    for key, step in steps.items():
        elapsed = 0.
        for i in range(max(warmup, 1)):
            sync()
            start = time.perf_counter()
            step()
            sync()
            elapsed = time.perf_counter() - start
            if i == 0:
                log(f'  warm-up {(labels or {}).get(key, key)}: first call {elapsed:.2f} s')
        calls[key] = max(1, math.ceil(min_time / max(elapsed, 1e-6))) if min_time > 0 else 1
    samples = {key: [] for key in steps}
    keys = list(steps)
    for rep in range(reps):
        shift = rep % len(keys)
        for key in keys[shift:] + keys[:shift]:     # rotate: no row is always first or last
            step, n = steps[key], calls[key]
            sync()
            start = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            samples[key].append((time.perf_counter() - start) / n)
        log(f'  repetition {rep + 1}/{reps} done (load {load_average()})')
    return samples
