"""The inputs of a run, checked before anything is built: every problem at once, each a line
that names the recipe key and the fix (a run on ImageNet should not fail on its teacher after
the data was fixed, one problem per launch)."""
from pathlib import Path
from typing import List

import timm

from .train_state import guard_output_dir
from .config import Recipe, RecipeError
from .data import data_path_problems


class InputErrors(RecipeError):
    """Several problems with a run's inputs; `problems` holds one message per problem."""
    same_on_every_process = True     # every process checks the same inputs: one report

    def __init__(self, problems: List[str]):
        super().__init__('; '.join(problems))
        self.problems = problems


def check_inputs(recipe: Recipe) -> List[str]:
    problems = []
    if recipe.student.arch not in timm.list_models():
        problems.append(f'student.arch {recipe.student.arch!r} is not a timm model; e.g. riformer_s12, riformer_mini')
    problems += data_path_problems(recipe.data)
    for key in ('teacher', 'logit_teacher'):
        teacher = getattr(recipe, key)
        if teacher is not None:
            problems += teacher_problems(key, teacher)
    if recipe.student.pretrained_checkpoint:
        problems += file_problems('student.pretrained_checkpoint', recipe.student.pretrained_checkpoint,
                                  'point it at a RIFormer checkpoint or remove it')
    try:
        guard_output_dir(Path(recipe.train.output_dir), recipe.to_dict(), recipe.resume)
    except RecipeError as e:
        problems.append(str(e))
    return problems


def file_problems(key: str, path, fix: str) -> List[str]:
    path = Path(path)
    if not path.exists():
        return [f'{key} {path}: no such file; {fix}']
    if path.is_dir():
        return [f'{key} {path} is a directory; point it at the checkpoint file inside']
    return []


def teacher_problems(key: str, teacher) -> List[str]:
    arch = teacher.arch.split('.')[0]
    if arch not in timm.list_models():
        return [f'{key}.arch {teacher.arch!r} is not a timm model; e.g. poolformer_s12 or, with timm\'s '
                f'weights, poolformer_s12.sail_in1k']
    if teacher.checkpoint:
        return file_problems(f'{key}.checkpoint', teacher.checkpoint,
                             f'train the teacher first (for the digits recipes: python distill/train.py '
                             f'recipes/digits/teacher.yaml), point {key}.checkpoint at a PoolFormer file '
                             f'(timm, sail-sg or mmpretrain layout), or use timm\'s weights with '
                             f'{key}.checkpoint=null {key}.pretrained=true')
    return pretrained_problems(key, teacher.arch)


def pretrained_problems(key: str, name: str) -> List[str]:
    """timm's weights for `name` must be in the local cache or downloadable from here."""
    from models.pretrained import unavailable_reason, weights_source
    why = unavailable_reason(name)
    if why is None:
        return []
    if weights_source(name) is None:
        tagged = timm.list_pretrained(f'{name.split(".")[0]}*')[:3]
        return [f'{key}.arch {name}: timm has no pretrained weights for it; use a tag that has '
                f'({", ".join(tagged) or "e.g. poolformer_s12.sail_in1k"}) or {key}.checkpoint=PATH']
    return [f'{key}.arch {name}: {why}; fetch them once on a machine with network '
            f'(python -c "import timm; timm.create_model(\'{name}\', pretrained=True)", then copy HF_HOME) or '
            f'set {key}.checkpoint=PATH to a local file']
