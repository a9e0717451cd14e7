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
from typing import Dict, Optional, Sequence

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
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return diff, diff, diff                 # scipy answers nan for a zero standard error
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
    return diff, float(ci.low), float(ci.high)


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


@dataclass(frozen=True)
class TwoLevelDifference:
    """mean(a) - mean(b) when teachers are the unit of replication: each side's mean is the mean
    over teachers of the mean over that teacher's students, and the interval comes from a
    bootstrap that resamples teachers, then students within each resampled teacher."""
    mean_a: float
    mean_b: float
    diff: float
    low: float                  # two-level bootstrap 95 % interval of diff
    high: float
    teachers: int               # teachers shared by both sides (0: not paired by teacher)
    n_a: int                    # runs on each side
    n_b: int
    between_sd: Optional[float]   # s.d. over teachers of the per-teacher difference (paired sides)
    within_sd: float              # pooled s.d. of students around their teacher's mean, both sides

    @property
    def resolved(self) -> bool:
        return self.low > 0 or self.high < 0


def _clean(groups):
    out = {}
    for teacher, values in groups.items():
        values = [float(v) for v in values if v is not None and not math.isnan(v)]
        if values:
            out[teacher] = values
    return out


def mean_of_teachers(groups: Dict) -> Optional[float]:
    """The mean over teachers of each teacher's mean ({teacher: [values of its students]}; the
    plain mean with one teacher), missing values left out; None without a value."""
    groups = _clean(groups)
    return statistics.fmean(statistics.fmean(v) for v in groups.values()) if groups else None


def _pooled_within_sd(*sides) -> float:
    squares, dof = 0., 0
    for groups in sides:
        for values in groups.values():
            m = statistics.fmean(values)
            squares += sum((v - m) ** 2 for v in values)
            dof += len(values) - 1
    return math.sqrt(squares / dof) if dof else float('nan')


def two_level(a: Dict, b: Dict, level: float = 0.95, resamples: int = 10000,
              seed: int = 0) -> Optional[TwoLevelDifference]:
    """Compare two variants whose runs are grouped by teacher ({teacher: [values of its students]}).

    When both sides saw the same teachers (the design of a study with teacher seeds), teachers
    are resampled jointly, so each resampled teacher contributes its own a - b; otherwise (e.g. a
    variant without a teacher) each side's teachers are resampled on their own. Within a teacher,
    each side's students are resampled independently (student seeds are not paired). None when
    a side has fewer than 2 runs."""
    a, b = _clean(a), _clean(b)
    if sum(map(len, a.values())) < 2 or sum(map(len, b.values())) < 2:
        return None
    rng = random.Random(seed)

    def side_mean(groups, teachers):
        return statistics.fmean(statistics.fmean(rng.choices(groups[t], k=len(groups[t]))) for t in teachers)

    paired = set(a) == set(b) and len(a) > 1
    shared = sorted(a, key=str) if paired else []
    diffs = []
    for _ in range(resamples):
        if paired:
            ta = tb = rng.choices(shared, k=len(shared))
        else:
            ta, tb = rng.choices(list(a), k=len(a)), rng.choices(list(b), k=len(b))
        diffs.append(side_mean(a, ta) - side_mean(b, tb))
    diffs.sort()
    tail = (1 - level) / 2
    mean_a, mean_b = mean_of_teachers(a), mean_of_teachers(b)
    per_teacher = [statistics.fmean(a[t]) - statistics.fmean(b[t]) for t in shared]
    return TwoLevelDifference(
        mean_a, mean_b, mean_a - mean_b, diffs[int(tail * (resamples - 1))],
        diffs[int(math.ceil((1 - tail) * (resamples - 1)))], len(shared),
        sum(map(len, a.values())), sum(map(len, b.values())),
        statistics.stdev(per_teacher) if len(per_teacher) > 1 else None, _pooled_within_sd(a, b))


def teacher_spread(groups: Dict) -> tuple:
    """(s.d. of the teachers' means, pooled s.d. of students within a teacher) of one variant."""
    groups = _clean(groups)
    means = [statistics.fmean(v) for v in groups.values()]
    return (statistics.stdev(means) if len(means) > 1 else None), _pooled_within_sd(groups)
