"""Ablation configs: YAML validated into typed dataclasses by the recipes' own machinery
(`distill.config.build`: unknown keys with close matches, typed values), plus the checks a type
cannot express (names, the variant subsets of each setting, a teacher file)."""
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import List, Optional

import yaml

from ..config import RecipeError, build


class AblateError(RecipeError):
    """Bad input to the ablation; printed as one `error:` line, exit code 2."""


@dataclass
class AblationTeacher:
    """The PoolFormer teacher of every variant that has one, and of the similarity metrics.
    With `recipe`, a missing checkpoint is trained first from that recipe (into the folder of
    `checkpoint`), so that one command runs the whole study.

    With `seeds`, one teacher per seed (the recipe trained with train.seed=SEED, `checkpoint` a
    pattern holding `{seed}`): teachers become the unit of replication, every teacher-dependent
    variant runs each student seed under each teacher, and comparisons resample teachers, then
    students within them (stats.two_level)."""
    arch: str = 'poolformer_mini'
    checkpoint: str = ''
    recipe: Optional[str] = None
    # key.sub=value for the teacher's training, e.g. data.split_seed=1 for another draw of the
    # task (the config's `overrides` apply to the students only).
    overrides: List[str] = field(default_factory=list)
    seeds: Optional[List[int]] = None

    def checkpoints(self) -> List[tuple]:
        """[(teacher seed or None, checkpoint path)]: one per teacher."""
        if self.seeds is None:
            return [(None, self.checkpoint)]
        return [(seed, self.checkpoint.replace('{seed}', str(seed))) for seed in self.seeds]


@dataclass
class Variant:
    name: str = ''
    recipe: str = ''                    # path of a training recipe
    overrides: List[str] = field(default_factory=list)      # key.sub=value, as on the command line
    description: Optional[str] = None


@dataclass
class Setting:
    """Overrides applied to every variant it runs, e.g. `data.label_fraction=0.1`."""
    name: str = ''
    overrides: List[str] = field(default_factory=list)
    variants: Optional[List[str]] = None   # the variants it runs (default: all)


@dataclass
class Comparison:
    """A difference to report with its confidence interval: mean(a) - mean(b) over seeds of
    `metric`; a and b are run names, VARIANT (first setting) or VARIANT@SETTING."""
    name: str = ''
    a: str = ''
    b: str = ''
    metric: str = 'top1'                # top1 | agreement | erf_rms_radius | erf_area50
    question: Optional[str] = None      # what the difference answers, for the report


@dataclass
class ERFConfig:
    """Effective receptive fields (distill/erf.py) of the centre unit of `block`'s output,
    averaged over the first `images` validation images, for every run and the teacher."""
    block: str = 'stages.2'
    images: int = 128
    show: List[str] = field(default_factory=list)     # run names whose mean ERF the figure shows


METRICS = ('top1', 'agreement', 'erf_rms_radius', 'erf_area50')


@dataclass
class Decision:
    """The rule that turns the comparisons into an answer, declared with them: the recommendation
    is the candidate (a run name) with the highest mean `metric`, "with confidence" when its
    interval against each other candidate lies above 0. `confirms`: the output folder of the study
    this draw confirms (its decision.json); confirmed when every comparison answered there is
    answered the same way here and the recommendation is the same."""
    candidates: List[str] = field(default_factory=list)
    metric: str = 'top1'
    confirms: Optional[str] = None

    def validate(self, names: List[str]):
        if len(self.candidates) < 2 or len(set(self.candidates)) != len(self.candidates):
            raise AblateError(f'decision.candidates: expected at least 2 distinct run names, got {self.candidates}')
        bad = [n for n in self.candidates if n not in names]
        if bad:
            raise AblateError(f'decision.candidates: unknown run(s) {bad}; runs: {", ".join(names)}')
        if self.metric not in ('top1', 'agreement'):       # "highest is best" holds for these
            raise AblateError(f'decision.metric {self.metric!r}: use top1 or agreement')


@dataclass
class AblationConfig:
    teacher: Optional[AblationTeacher] = None
    variants: List[Variant] = field(default_factory=list)
    settings: List[Setting] = field(default_factory=list)    # default: one setting without overrides
    seeds: List[int] = field(default_factory=lambda: [0])
    overrides: List[str] = field(default_factory=list)       # applied to every run
    output_dir: str = 'runs/ablation'
    comparisons: List[Comparison] = field(default_factory=list)
    erf: Optional[ERFConfig] = None
    decision: Optional[Decision] = None

    def run_names(self) -> List[str]:
        """VARIANT for the first setting, VARIANT@SETTING for the others (as plan names runs)."""
        return [v if i == 0 else f'{v}@{s.name}' for i, s in enumerate(self.settings) for v in s.variants]

    def validate(self, path) -> 'AblationConfig':
        if self.teacher is None or not self.teacher.checkpoint:
            raise AblateError(f'{path}: teacher: expected {{arch, checkpoint}} (the PoolFormer teacher of the '
                              f'variants and of the similarity metrics)')
        seeds = self.teacher.seeds
        if seeds is not None:
            if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
                raise AblateError(f'{path}: teacher.seeds: expected distinct non-negative integers, got {seeds}')
            if '{seed}' not in self.teacher.checkpoint:
                raise AblateError(f'{path}: teacher.checkpoint must hold {{seed}} when teacher.seeds is given '
                                  f'(e.g. runs/teachers/seed_{{seed}}/model.safetensors), got {self.teacher.checkpoint}')
        elif '{seed}' in self.teacher.checkpoint:
            raise AblateError(f'{path}: teacher.checkpoint holds {{seed}} but teacher.seeds is missing')
        if self.teacher.recipe is not None:
            if not Path(self.teacher.recipe).is_file():
                raise AblateError(f'{path}: teacher.recipe {self.teacher.recipe}: no such recipe')
            if Path(self.teacher.checkpoint).name != 'model.safetensors':
                raise AblateError(f'{path}: teacher.checkpoint must end in model.safetensors when teacher.recipe '
                                  f'trains it (the trainer writes OUTPUT_DIR/model.safetensors)')
        if not self.variants:
            raise AblateError('variants: expected a non-empty list of mappings')
        if not self.settings:
            self.settings = [Setting(name='default')]
        for kind, items in (('variant', self.variants), ('setting', self.settings)):
            names = set()
            for i, item in enumerate(items):
                if not item.name:
                    raise AblateError(f'{kind}s[{i}]: expected a mapping with a name')
                if item.name in names:
                    raise AblateError(f'{kind}s: name {item.name!r} appears twice')
                if any(c in item.name for c in '/@ '):
                    raise AblateError(f'{kind}s {item.name!r}: names may not contain "/", "@" or spaces')
                names.add(item.name)
        for v in self.variants:
            if not v.recipe:
                raise AblateError(f'variant {v.name!r}: needs a recipe (path of a training recipe)')
        known = [v.name for v in self.variants]
        for s in self.settings:
            subset = s.variants or known
            bad = [n for n in subset if n not in known]
            if bad:
                raise AblateError(f'setting {s.name!r}: unknown variant(s) {bad}; declared: {known}')
            s.variants = subset
        names = self.run_names()
        for c in self.comparisons:
            if not c.name:
                raise AblateError('comparisons: every comparison needs a name')
            for side in (c.a, c.b):
                if side not in names:
                    raise AblateError(f'comparison {c.name!r}: unknown run {side!r}; runs: {", ".join(names)}')
            if c.metric not in METRICS:
                raise AblateError(f'comparison {c.name!r}: metric {c.metric!r}; use one of {", ".join(METRICS)}')
            if c.metric.startswith('erf') and self.erf is None:
                raise AblateError(f'comparison {c.name!r}: metric {c.metric} needs an erf section')
        if self.decision is not None:
            self.decision.validate(names)
        if self.erf is not None:
            if self.erf.images < 1:
                raise AblateError(f'erf.images must be at least 1, got {self.erf.images}')
            bad = [n for n in self.erf.show if n not in names]
            if bad:
                raise AblateError(f'erf.show: unknown run(s) {bad}; runs: {", ".join(names)}')
        return self


def read_mapping(path: Path, noun: str, keys: str) -> dict:
    """The YAML mapping in `path` (`yaml.safe_load`), or an AblateError naming the problem."""
    if not path.is_file():
        raise AblateError(f'{path}: no such {noun}')
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise AblateError(f'{path}: not valid YAML ({str(e).splitlines()[0]})') from None
    if not isinstance(raw, dict):
        raise AblateError(f'{path}: an {noun} is a mapping ({keys})' if noun[0] in 'aeiou' else
                          f'{path}: a {noun} is a mapping ({keys})')
    return raw


def load_ablation_config(path) -> AblationConfig:
    """Read and validate an ablation config (YAML, `yaml.safe_load`)."""
    path = Path(path)
    raw = read_mapping(path, 'ablation config', 'teacher, seeds, settings, variants')
    known = sorted(f.name for f in fields(AblationConfig))
    unknown = set(raw) - set(known)
    if unknown:
        raise AblateError(f'{path}: unknown key(s) {sorted(unknown)}; known: {known}')
    # Checked before typing, so that the message says what a seed list is rather than which item failed.
    seeds = raw.get('seeds', [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                         for s in seeds):
        raise AblateError(f'{path}: seeds: expected a non-empty list of non-negative integers, got {seeds!r}')
    try:
        config = build(AblationConfig, raw, '', noun='ablation config')
    except RecipeError as e:
        raise AblateError(f'{path}: {e}') from None
    return config.validate(path)
