"""Differences between runs of an ablation, read the declared way: mean(a) - mean(b) of a metric
with a 95 % interval, over seeds (Welch and bootstrap) or, when the runs have several teachers,
over teachers and the students within them (stats.two_level)."""
from typing import List

from .plan import Run
from .stats import difference, two_level


def by_teacher(runs: List[Run], name: str, metric: str) -> dict:
    """{teacher seed: [metric of each student]} of run `name`'s successful runs."""
    groups = {}
    for run in runs:
        if run.name == name and run.result.get('status') != 'failed':
            groups.setdefault(run.teacher_seed, []).append(run.result.get(metric))
    return groups


def several_teachers(runs: List[Run]) -> bool:
    return len({run.teacher_seed for run in runs}) > 1


def difference_between(runs: List[Run], a: str, b: str, metric: str, several: bool):
    """mean(a) - mean(b) with its interval (stats.two_level with several teachers, Welch
    otherwise); None when a side has fewer than 2 runs."""
    ga, gb = by_teacher(runs, a, metric), by_teacher(runs, b, metric)
    if several:
        return two_level(ga, gb)
    return difference(sum(ga.values(), []), sum(gb.values(), []))


def compare_runs(runs: List[Run], comparisons) -> List[dict]:
    """Each declared comparison with its difference."""
    several = several_teachers(runs)
    return [{'comparison': c, 'difference': difference_between(runs, c.a, c.b, c.metric, several)}
            for c in comparisons]


def answer(d) -> str:
    """The declared reading of an interval: which side is better, or that none is shown."""
    if d is None:
        return 'fewer than 2 runs a side'
    return 'a better' if d.low > 0 else 'b better' if d.high < 0 else 'no difference shown'
