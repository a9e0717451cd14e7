"""Recipe variants over several seeds, and how they compare (`tools/ablate.py` is its command line).

The config (YAML, `config.py`) declares the teacher, the seeds, common overrides, settings (e.g.
full labels and 10% labels; each a name, overrides and optionally a subset of the variants) and
the variants (name, base recipe, dotted overrides). Each run trains `distill/train.py` in a
subprocess into OUT/runs/VARIANT/seed_N/ (VARIANT@SETTING for every setting but the first), then
the final student is evaluated: RIFormer students in their reparameterized deploy form, other
students as trained. Beside top-1 it measures what imitation is about: top-1 agreement with the
teacher and, at each imitated block, the linear CKA and normalised MSE of student vs teacher
features (distill/similarity.py).

    config.py     the typed config and its checks
    plan.py       runs and their recipes; runs that would compute the same thing become aliases
    runner.py     training subprocesses (resumable; finished runs are skipped), results
    evaluator.py  a finished student against the teacher
    stats.py      differences between variants with 95 % confidence intervals
    compare.py    the declared comparisons over runs (two-level with several teachers) and their reading
    decision.py   the declared decision rule and the confirmation draw's check (decision.json)
    report.py     ablation.md, summary.csv, runs.csv, comparisons.csv, ablation.png, erf.png
"""
from .config import AblateError, AblationConfig, AblationTeacher, Setting, Variant, load_ablation_config
from .evaluator import Evaluator, load_student
from .plan import Run, canonical, check_existing, plan
from .report import aggregate, report
from .runner import execute, train_teacher

__all__ = [
    'AblateError', 'AblationConfig', 'AblationTeacher', 'Evaluator', 'Run', 'Setting', 'Variant', 'aggregate',
    'canonical', 'check_existing', 'execute', 'load_ablation_config', 'load_student', 'plan', 'report', 'train_teacher',
]
