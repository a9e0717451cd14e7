"""The runs of an ablation: every (setting, variant, seed) with its validated recipe. A run whose
recipe computes what an earlier one does (e.g. a label-free variant in a low-label setting)
becomes an alias of it instead of a second training."""
import dataclasses
import json
from pathlib import Path
from typing import List, Optional

import yaml

from ..config import Recipe, RecipeError, flat_keys, load_recipe
from .config import AblateError, AblationConfig

# Recipe keys that do not change what a run computes.
NON_RECIPE_KEYS = {'train.output_dir', 'train.progress', 'resume'}


@dataclasses.dataclass
class Run:
    setting: str
    variant: str
    seed: int
    name: str                       # VARIANT or VARIANT@SETTING: the folder under OUT/runs
    dir: Path
    recipe_path: str
    overrides: List[str]
    recipe: Recipe
    teacher_seed: Optional[int] = None      # which of the config's teachers (teacher.seeds); None: the one
    alias_of: Optional['Run'] = None
    result: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self):
        teacher = '' if self.teacher_seed is None else f' teacher {self.teacher_seed}'
        return f'{self.name}{teacher} seed {self.seed}'


def has_teacher(recipe_path: Path, overrides: List[str]) -> bool:
    raw = yaml.safe_load(recipe_path.read_text()) or {}
    return raw.get('teacher') is not None or any(o.startswith('teacher.') for o in overrides)


def plan(config: AblationConfig, out: Path, seeds, epochs, only, smoke) -> List[Run]:
    """Every (setting, variant, seed) run with its validated recipe; duplicates become aliases."""
    teacher = config.teacher
    settings = config.settings[:1] if smoke else config.settings
    runs, by_key = [], {}
    for i, setting in enumerate(settings):
        names = [n for n in setting.variants if not only or n in only]
        if smoke:
            names = names[:2]
        for name in names:
            variant = next(v for v in config.variants if v.name == name)
            recipe_path = Path(variant.recipe)
            if not recipe_path.is_file():
                raise AblateError(f'variant {name!r}: no recipe file {recipe_path}')
            common = config.overrides + setting.overrides + variant.overrides
            if epochs:
                common.append(f'train.epochs={epochs}')
            run_name = name if i == 0 else f'{name}@{setting.name}'
            # A variant without a teacher runs once per seed, whatever the number of teachers.
            teachers = teacher.checkpoints() if has_teacher(recipe_path, variant.overrides) else [(None, None)]
            for teacher_seed, checkpoint in teachers:
                # The config's teacher replaces the recipe's, so one file decides which teacher is used.
                inject = [f'teacher.arch={teacher.arch}', f'teacher.checkpoint={checkpoint}'] if checkpoint else []
                base = out / 'runs' / run_name
                if teacher_seed is not None:
                    base = base / f'teacher_{teacher_seed}'
                for seed in seeds:
                    run_dir = base / f'seed_{seed}'
                    overrides = inject + common + [f'train.seed={seed}', f'train.output_dir={run_dir}',
                                                   'train.progress=false']
                    try:
                        recipe = load_recipe(recipe_path, overrides)
                    except RecipeError as e:
                        raise AblateError(f'variant {name!r} (setting {setting.name!r}): {e}') from None
                    run = Run(setting.name, name, seed, run_name, run_dir, str(recipe_path), overrides, recipe,
                              teacher_seed)
                    key = canonical(recipe)
                    run.alias_of = by_key.get(key)
                    by_key.setdefault(key, run)
                    runs.append(run)
    if not runs:
        raise AblateError(f'no runs selected (variants: {", ".join(v.name for v in config.variants)})')
    return runs


def canonical(recipe: Recipe) -> str:
    """What a run computes: its recipe without the output folder; the label fraction only
    matters when a term uses labels (CE)."""
    flat = {k: v for k, v in flat_keys(recipe.to_dict()).items() if k not in NON_RECIPE_KEYS}
    if recipe.distill.ce.weight == 0:
        flat.pop('data.label_fraction')
    return json.dumps(flat, sort_keys=True, default=str)


def check_existing(runs: List[Run]):
    """A folder that holds a run of another recipe (e.g. other epochs) must not be skipped or
    resumed as if it were this one."""
    defaults = flat_keys(Recipe().to_dict())
    for run in runs:
        saved = run.dir / 'recipe.yaml'
        if run.alias_of is not None or not saved.is_file():
            continue
        old = flat_keys(yaml.safe_load(saved.read_text()) or {})
        new = flat_keys(run.recipe.to_dict())
        changed = sorted(k for k in set(old) | set(new) if k not in NON_RECIPE_KEYS and old.get(k, defaults.get(k)) != new.get(k))
        if changed:
            raise AblateError(f'{run.dir} holds a run of another recipe (changed: {", ".join(changed[:4])}); '
                              f'use another --out or delete that folder')
