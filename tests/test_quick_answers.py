"""A newcomer's first commands (issue 30): help and argument errors without importing torch,
every mistake of an override line at once, a one-line hint for a python without the venv, and
one error line under `accelerate launch`.

Speed is not timed here (a loaded CI machine would make that flaky); what makes it fast is
checked instead: the command does not import torch (`python -X importtime` lists every module a
process imports)."""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distill.config import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.name for p in (ROOT / 'tools').glob('*.py') if p.name != '__init__.py')
TYPOS = ['trian.epochs=20', 'train.batch_size=sixty', 'distill.l_rell.weight=0']


def run(*argv, python=sys.executable, flags=(), env=None):
    return subprocess.run([python, *flags, *map(str, argv)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def imported(result) -> set:
    """The top-level modules a `-X importtime` run imported (its stderr lists one per line)."""
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith('import time:') and '|' in line:
            names.add(line.rsplit('|', 1)[1].strip().split('.')[0])
    return names


def test_tools_list_is_what_the_tests_cover():
    assert {'reparam.py', 'export.py', 'benchmark.py', 'detect.py', 'pipeline.py'} <= set(TOOLS)


@pytest.mark.parametrize('tool', TOOLS)
def test_help_does_not_import_torch(tool):
    result = run(ROOT / 'tools' / tool, '--help', flags=['-X', 'importtime'])
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'usage:' in result.stdout
    assert not {'torch', 'timm', 'models', 'ultralytics'} & imported(result)


def console_scripts() -> dict:
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / 'setup.cfg')
    lines = [line for line in cfg['options.entry_points']['console_scripts'].splitlines() if '=' in line]
    return dict(tuple(part.strip() for part in line.split('=', 1)) for line in lines)


@pytest.mark.parametrize('name', sorted(console_scripts()))
def test_installed_commands_help_without_torch(name):
    module, func = console_scripts()[name].split(':')
    code = f'import sys; sys.argv = [{name!r}, "--help"]; from {module} import {func}; sys.exit({func}())'
    result = run('-c', code, flags=['-X', 'importtime'])
    assert result.returncode == 0 and 'usage' in result.stdout.lower(), result.stderr[-2000:]
    assert not {'torch', 'timm', 'models', 'ultralytics'} & imported(result)


@pytest.mark.parametrize('argv,message', [
    (['reparam.py', 'x.safetensors', '--tol', 'abc'], "argument --tol: invalid float value: 'abc'"),
    (['export.py', 'x.safetensors', '--format', 'onxx'], "argument --format: invalid choice: 'onxx'"),
    (['benchmark.py', '--batch-sizes', 'many'], "'many' is not a comma-separated list of integers"),
    (['detect.py', 'trian'], "invalid choice: 'trian'"),
    (['teacher_targets.py', '--batch', '0'], "'0': give a positive integer"),
])
def test_argument_errors_are_one_line_without_torch(argv, message):
    result = run(ROOT / 'tools' / argv[0], *argv[1:], flags=['-X', 'importtime'])
    errors = [line for line in result.stderr.splitlines() if not line.startswith('import time:')]
    assert result.returncode == 2
    assert errors == [errors[0]] and errors[0].startswith('error: ') and message in errors[0], errors
    assert 'torch' not in imported(result)


def test_train_help_and_override_typos_without_torch():
    help_ = run(ROOT / 'distill' / 'train.py', '--help', flags=['-X', 'importtime'])
    assert help_.returncode == 0 and 'usage: riformer-train' in help_.stdout
    assert 'torch' not in imported(help_)
    result = run(ROOT / 'distill' / 'train.py', 'recipes/digits/imitation.yaml', *TYPOS, flags=['-X', 'importtime'])
    errors = [line for line in result.stderr.splitlines() if not line.startswith('import time:')]
    assert result.returncode == 2
    assert len(errors) == 1 and errors[0].startswith('error: 3 mistakes'), errors
    for part in ("unknown recipe key 'trian' (did you mean train?)", "train.batch_size: expected int, got 'sixty'",
                 "unknown recipe key 'distill.l_rell' (did you mean distill.l_rel?)"):
        assert part in errors[0]
    assert 'torch' not in imported(result)


def test_every_override_mistake_at_once(tmp_path):
    recipe = tmp_path / 'r.yaml'
    recipe.write_text('distill: {ce: {weight: 1}}\n')
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe, ['train.epoch=2', 'optim.lr=fast', 'train.epochs', 'data.scale=[a, 1.0]'])
    assert e.value.problems == [
        "override 'train.epochs': expected key.sub=value",     # then in the order of the recipe's sections
        "unknown recipe key 'train.epoch' (did you mean train.epochs?)",
        "optim.lr: expected float, got 'fast'",
        "data.scale[0]: expected float, got 'a'",
    ]
    assert str(e.value).startswith('4 mistakes in the recipe and its overrides: ')
    with pytest.raises(RecipeError, match=r"^optim.lr: expected float, got 'fast'$"):   # one: as before
        load_recipe(recipe, ['optim.lr=fast'])


def test_mistyped_recipe_path_gets_the_close_file(monkeypatch):
    monkeypatch.chdir(ROOT)
    for typo, meant in (('recipes/digits/imitaton.yaml', 'recipes/digits/imitation.yaml'),
                        ('recipe/digits/teacher.yaml', 'recipes/digits/teacher.yaml'),
                        ('recipes/riformer_s21.yaml', 'recipes/riformer_s24.yaml')):
        with pytest.raises(RecipeError, match=f'^{typo}: no such recipe file; did you mean {meant}\\?$'):
            load_recipe(typo)
    with pytest.raises(RecipeError, match=r'^recipes/digits/zzz.yaml: no such recipe file$'):   # nothing close
        load_recipe('recipes/digits/zzz.yaml')


def test_python_without_the_venv_gets_one_line():
    # -S: no site-packages, as a system python without torch; the stdlib is all there is.
    for argv in (['distill/train.py', 'recipes/digits/imitation.yaml'], ['tools/reparam.py', '--help'],
                 ['tools/pipeline.py']):
        result = run(*argv, flags=['-S'])
        assert result.returncode == 2, (argv, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and 'Traceback' not in result.stderr, (argv, result.stderr)
        assert lines[0].startswith(f'error: {sys.executable} has no torch, timm, yaml: ')
        assert 'source .venv/bin/activate' in lines[0]


def test_missing_venv_names_make_setup(monkeypatch, capsys):
    import distill.cli as cli
    import distill.venv
    monkeypatch.setattr(distill.venv.Path, 'is_file', lambda self: False)      # no .venv/bin/python
    with pytest.raises(SystemExit) as e:
        cli.require_venv(('torch', 'no_such_package_xyz'))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and 'has no no_such_package_xyz:' in err and 'torch' not in err.split(':')[1]
    assert '`make setup`' in err and 'source .venv/bin/activate' in err


@pytest.mark.skipif(shutil.which('accelerate', path=str(Path(sys.executable).parent)) is None,
                    reason='accelerate launch not installed')
def test_accelerate_launch_prints_our_line_once(tmp_path):
    accelerate = str(Path(sys.executable).parent / 'accelerate')
    env = {**os.environ, 'HF_HOME': str(tmp_path / 'hf')}        # no accelerate config of the user's
    cases = [(['train.epoch=3'], ["error: unknown recipe key 'train.epoch' (did you mean train.epochs?)"]),
             # found after the trainer's imports, by its input checks
             ([f'train.output_dir={tmp_path / "out"}', 'data.source=folder', f'data.path={tmp_path / "nowhere"}',
               f'teacher.checkpoint={tmp_path / "t.safetensors"}'],
              [f'error: data.path {tmp_path / "nowhere"} does not exist', f'error: teacher.checkpoint {tmp_path}'])]
    for overrides, starts in cases:
        result = subprocess.run([accelerate, 'launch', 'distill/train.py', 'recipes/digits/imitation.yaml', *overrides],
                                capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        errors = [line for line in result.stderr.splitlines() if 'error' in line.lower()]
        assert result.returncode != 0
        assert len(errors) == len(starts) and all(e.startswith(s) for e, s in zip(errors, starts)), result.stderr
        assert 'Traceback' not in result.stderr and 'RuntimeError' not in result.stderr, result.stderr


def test_stop_launcher_signals_only_an_accelerate_launch_parent(tmp_path):
    """A stand-in launcher named accelerate (argv: accelerate launch ...) gets SIGTERM from a
    child that quits on an input error; with -q, or as plain python, it does not."""
    launcher = tmp_path / 'accelerate'
    child = f'import sys; sys.path.insert(0, {str(ROOT)!r}); from distill.cli.train import quit_on_input_error; ' \
            f'quit_on_input_error("bad")'
    launcher.write_text(textwrap.dedent(f"""\
        import signal, subprocess, sys
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        code = subprocess.call([sys.executable, '-c', {child!r}])
        sys.exit(100 + code)
    """))
    for args, code in ((['launch', 'x.py'], 143), (['launch', '-q', 'x.py'], 102), (['other'], 102)):
        result = subprocess.run([sys.executable, str(launcher), *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.strip() == 'error: bad'


def test_light_constants_match_the_heavy_modules():
    from distill import benchmark, teacher
    from distill.cli import benchmark as benchmark_cli, teacher_targets
    from distill.terms import TERMS
    from distill import losses
    assert benchmark_cli.DTYPES == tuple(benchmark.DTYPES)
    assert teacher_targets.PRECISIONS == tuple(teacher.PRECISIONS)
    assert TERMS['l_rel'].loss is losses.RelationMSE and TERMS['ce'].loss is losses.LabelCE


def test_errors_are_one_class_whichever_import_came_first():
    code = ('import distill.errors as light, models, models.errors as heavy; '
            'assert light.RIFormerError is heavy.RIFormerError is models.RIFormerError; '
            'assert light.UsageError is models.UsageError')
    assert run('-c', code).returncode == 0
    assert run('-c', 'import models, distill.errors as light; assert light.RecipeError is models.RecipeError').returncode == 0
    # the package attribute too, whichever came first (a module found in sys.modules is not set on its package)
    assert run('-c', 'import distill.errors as light, models; assert models.errors.CheckpointError is light.CheckpointError'
               ).returncode == 0


def test_detect_help_shows_examples():
    result = run(ROOT / 'tools' / 'detect.py', '--help')
    assert 'examples:' in result.stdout and 'python tools/detect.py train   --cfg' in result.stdout


def test_pipeline_echoes_a_runnable_command(tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import pipeline
    finally:
        sys.path.remove(str(ROOT / 'tools'))
    ran = []
    monkeypatch.setattr(pipeline.subprocess, 'run', lambda cmd, check: ran.append(cmd))
    (tmp_path / 'summary.json').write_text('{"train_seconds": 1.5, "epochs": 2}')
    assert pipeline.train(ROOT / 'recipes/digits/teacher.yaml', tmp_path, []) == (1.5, 2)
    echoed = capsys.readouterr().out.strip()
    assert echoed == (f'$ python distill/train.py recipes/digits/teacher.yaml train.output_dir={tmp_path} '
                      'train.progress=false resume=true')
    assert ran[0][:2] == [sys.executable, str(ROOT / 'distill' / 'train.py')]


def test_a_teacher_run_lists_its_model_not_a_student(tmp_path):
    from distill.train import closing_lines
    for name in ('model.safetensors', 'best.safetensors'):
        (tmp_path / name).write_bytes(b'x')
    summary = {'final': {'val/top1': 98.0}, 'epochs': 12, 'best_top1': 98.5, 'best_epoch': 11}
    teacher = closing_lines(tmp_path, load_recipe(ROOT / 'recipes/digits/teacher.yaml'), summary, riformer=False)
    assert '(the final model)' in teacher and '(the model of epoch 11)' in teacher and 'student' not in teacher
    student = closing_lines(tmp_path, load_recipe(ROOT / 'recipes/digits/imitation.yaml'), summary, riformer=True)
    assert '(the final student)' in student and '(the student of epoch 11)' in student


def test_long_commands_print_the_time_left(capsys):
    from distill.cli.ablate import TimeLeft
    from distill.cli.benchmark import Progress
    left = TimeLeft(real=4)
    left.start -= 600                     # 10 minutes in, one trained run done
    left('[1/6] plain seed 0: skipped (finished) (0s), deploy top-1 90.00')
    left('[2/6] plain seed 1: trained (270s of training, 300s in all), deploy top-1 90.00', flush=True)
    left('[3/6] kd seed 1: failed (3s), FAILED: x')
    left('[4/6] kd seed 2: trained (270s of training, 300s in all), deploy top-1 90.00')
    left('[5/6] x: same recipe as y (labels unused): reused')
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith('90.00') and lines[1].endswith('; about 20 min left (2 runs)')
    assert lines[2].endswith('; about 5 min left (1 run)') and lines[3].endswith('90.00') and lines[4].endswith('reused')
    progress = Progress(batch_sizes=2)
    progress('timing 3 rows at batch 16: warm-up 2, 7 repetitions')
    progress('  warm-up a: first call 1.00 s')
    progress.reps_start -= 60                               # the first repetition took a minute
    progress('  repetition 1/7 done (load 1.0)')
    assert capsys.readouterr().out.strip() == ('timing 3 rows at batch 16: warm-up 2, 7 repetitions\n'
                                               '  warm-up a: first call 1.00 s\n'
                                               '  repetition 1/7 done (load 1.0): about 6 min left at this batch '
                                               'size, then 1 more batch size(s)')


def test_one_epoch_is_singular(tmp_path):
    from distill.train import closing_lines
    summary = {'final': {'val/top1': 98.0}, 'epochs': 1, 'best_top1': 98.0, 'best_epoch': 1}
    lines = closing_lines(tmp_path, load_recipe(ROOT / 'recipes/digits/teacher.yaml'), summary, riformer=False)
    assert lines.startswith('finished 1 epoch: best top-1 98.00 at epoch 1')


def test_a_resumed_run_keeps_its_finished_mark(tmp_path):
    """run/finished: 1 where a session finished stays 1 when the run is resumed for more epochs;
    the resumed session marks 0 at the first epoch it trains, then 1 at its end."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    fast = ['data.val_fraction=0.8', 'train.batch_size=32', 'train.progress=false', f'train.output_dir={tmp_path}']
    for extra in (['train.epochs=1'], ['train.epochs=2', 'resume=true']):
        result = run(ROOT / 'distill' / 'train.py', 'recipes/digits/plain.yaml', *fast, *extra)
        assert result.returncode == 0, result.stderr[-2000:]
    acc = EventAccumulator(str(tmp_path / 'tb'))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars('run/finished')] == [(0, 0.), (1, 1.), (2, 0.), (2, 1.)]
