"""How sure a difference between two variants is: the difference of their means over seeds with
a 95 % confidence interval, t-based (Welch: unequal variances, no pairing) and by bootstrap.

Seeds are not paired: a seed fixes the init of a randomly initialised student and the data
order, but teacher-initialised students share their init whatever the seed, so nothing makes
seed k of one variant a closer match to seed k of another. Welch's interval is the one the
report reads; the bootstrap (resampling each variant's seeds independently) is a check that
does not assume normal means.
"""
import math
import random
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from scipy import stats


@dataclass(frozen=True)
class Difference:
    mean_a: float
    mean_b: float
    diff: float                 # mean_a - mean_b
    low: float                  # Welch 95 % interval of diff
    high: float
    boot_low: float             # bootstrap 95 % interval of diff
    boot_high: float
    n_a: int
    n_b: int

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the sign of the difference is known at this level."""
        return self.low > 0 or self.high < 0


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95):
    """(diff, low, high) of mean(a) - mean(b); needs two values on each side."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f'a confidence interval needs at least 2 seeds per side, got {len(a)} and {len(b)}')
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    # Welch-Satterthwaite degrees of freedom.
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return diff, diff - half, diff + half


def bootstrap(a: Sequence[float], b: Sequence[float], level: float = 0.95, resamples: int = 10000,
              seed: int = 0):
    """Percentile interval of mean(a*) - mean(b*) over resamples of each side's seeds."""
    rng = random.Random(seed)
    diffs = sorted(statistics.fmean(rng.choices(a, k=len(a))) - statistics.fmean(rng.choices(b, k=len(b)))
                   for _ in range(resamples))
    tail = (1 - level) / 2
    return diffs[int(tail * (resamples - 1))], diffs[int(math.ceil((1 - tail) * (resamples - 1)))]


def difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Optional[Difference]:
    """Both intervals of mean(a) - mean(b), or None when a side has fewer than 2 values."""
    a = [float(x) for x in a if x is not None and not math.isnan(x)]
    b = [float(x) for x in b if x is not None and not math.isnan(x)]
    if len(a) < 2 or len(b) < 2:
        return None
    diff, low, high = welch(a, b, level)
    boot_low, boot_high = bootstrap(a, b, level)
    return Difference(statistics.fmean(a), statistics.fmean(b), diff, low, high, boot_low, boot_high, len(a), len(b))
