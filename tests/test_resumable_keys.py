"""Issue 31: one declaration (distill/config.py: SESSION_KEYS, RESUMABLE_CHANGES) says which recipe
keys a resumed run may change; preflight, the resume check, the resume report and HPARAMS read it,
so a resume that changes train.threads is accepted by all of them alike."""
import json
from pathlib import Path

import pytest
import yaml
from helpers import FAST_TRAIN

from distill import config, run_log, train_state
from distill import train as train_mod
from distill.config import RecipeError, load_recipe
from distill.preflight import check_inputs

DIGITS = Path(__file__).resolve().parents[1] / 'recipes' / 'digits'

pytestmark = pytest.mark.usefixtures('fresh_accelerate_state')   # conftest.py


def saved_run(tmp_path, *overrides):
    """An output_dir holding the recipe.yaml of a plain digits run (no checkpoints)."""
    out = tmp_path / 'run'
    out.mkdir()
    recipe = load_recipe(DIGITS / 'plain.yaml', [f'train.output_dir={out}', 'train.threads=1', *overrides])
    (out / 'recipe.yaml').write_text(yaml.safe_dump(recipe.to_dict()))
    return out


def test_the_lists_come_from_one_declaration():
    assert train_state.RESUMABLE_CHANGES is config.RESUMABLE_CHANGES
    assert run_log.SESSION_KEYS is config.SESSION_KEYS and train_mod.SESSION_KEYS is config.SESSION_KEYS
    assert config.RESUMABLE_CHANGES == {'resume', 'train.epochs', 'train.progress', 'train.threads'}
    assert config.RESUMABLE_CHANGES - {'train.epochs'} <= set(config.SESSION_KEYS)


def test_a_resume_that_changes_threads_passes_preflight_and_the_resume_check(tmp_path):
    out = saved_run(tmp_path)
    recipe = load_recipe(DIGITS / 'plain.yaml', [f'train.output_dir={out}', 'train.threads=2', 'resume=true'])
    assert check_inputs(recipe) == []
    train_state.guard_output_dir(out, recipe.to_dict(), resume=True)       # does not raise
    changes = train_state.resumed_changes(out, recipe.to_dict())
    assert changes == {'train.threads': (1, 2)}
    assert train_mod.describe_resume(changes, train_state.TrainState(), 1e-3, recipe.optim, 10) == []
    assert 'train.threads' not in run_log.hparam_values(recipe.to_dict())


def test_a_resume_that_changes_what_the_run_trains_is_refused_alike(tmp_path):
    out = saved_run(tmp_path)
    recipe = load_recipe(DIGITS / 'plain.yaml', [f'train.output_dir={out}', 'train.threads=2', 'train.seed=7',
                                                  'resume=true'])
    problems = check_inputs(recipe)
    assert len(problems) == 1 and 'changed: train.seed' in problems[0] and 'train.threads' not in problems[0]
    with pytest.raises(RecipeError, match=r'changed: train\.seed\)'):
        train_state.guard_output_dir(out, recipe.to_dict(), resume=True)


def test_a_run_resumes_with_another_thread_count(tmp_path, capsys):
    out = tmp_path / 'r'
    common = [str(DIGITS / 'plain.yaml'), *FAST_TRAIN, f'train.output_dir={out}']
    assert train_mod.main([*common, 'train.epochs=1', 'train.threads=1']) == 0
    assert train_mod.threads_of_run(out) == 1
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    capsys.readouterr()
    assert train_mod.main([*common, 'train.epochs=2', 'train.threads=2', 'resume=true']) == 0
    said = capsys.readouterr().out
    assert 'resume: train.epochs 1 -> 2' in said and 'train.threads' not in said
    assert json.loads((out / 'checkpoints' / 'epoch_0002' / 'train_state.json').read_text())['threads'] == 2
    assert train_mod.threads_of_run(out) == 2
    assert yaml.safe_load((out / 'recipe.yaml').read_text())['train']['threads'] == 2
