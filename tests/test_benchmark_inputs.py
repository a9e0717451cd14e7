"""tools/benchmark.py checks what it is handed before it times anything (issue 27, items 6 and 7):
a damaged checkpoint or a bad recipe of --accuracy, and an --archs that names nothing or
everything, are one `error:` line and exit 2, with no row built."""
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import models
from models.checkpoint_io import write_safetensors
from distill.cli import benchmark as benchmark_tool
from helpers import randomize

ROOT = Path(__file__).resolve().parents[1]
RECIPE = 'recipes/digits/imitation.yaml'


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """An intact deploy student and teacher, and copies of each with one flipped tensor byte."""
    folder = tmp_path_factory.mktemp('ckpt')
    student = models.reparameterize(randomize(timm.create_model('riformer_mini', num_classes=10), seed=3).eval())
    teacher = randomize(timm.create_model('poolformer_mini', num_classes=10), seed=4).eval()
    paths = {'student': folder / 'student.deploy.safetensors', 'teacher': folder / 'teacher.safetensors'}
    models.save_model(paths['student'], student)
    write_safetensors(paths['teacher'], teacher.state_dict(),     # as the trainer writes a teacher
                      {'format': 'timm', 'arch': 'poolformer_mini', 'num_classes': '10'})
    for name in ('student', 'teacher'):
        data = bytearray(paths[name].read_bytes())
        data[-100] ^= 1                     # inside the last tensor: the checksum no longer matches
        paths[f'damaged_{name}'] = folder / f'damaged_{name}.safetensors'
        paths[f'damaged_{name}'].write_bytes(bytes(data))
    return paths


def refused(capsys, args, message):
    """main(args) is one error line naming `message`, exit 2, and no row was built or timed."""
    code = benchmark_tool.main(['--smoke', '--archs', 'deploy_mini', '--forms', 'fp32'] + [str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.strip().splitlines() == [err.strip()] and err.startswith('error: ') and message in err, err
    assert 'build ' not in out and 'plan:' not in out, out


def test_intact_checkpoints_and_recipe_are_read_before_timing(checkpoints):
    # The positive control: the same call with intact files gets its models and batches up front.
    args = benchmark_tool.build_parser().parse_args(
        ['--accuracy', RECIPE, '--student', str(checkpoints['student']), '--teacher', str(checkpoints['teacher'])])
    inputs = benchmark_tool.accuracy_inputs(args)
    assert [name for name, _ in inputs['students']] == [str(checkpoints['student'])]
    assert inputs['teacher'] is not None and len(inputs['val']) > 0 and len(inputs['calib']) > 0
    assert benchmark_tool.accuracy_inputs(benchmark_tool.build_parser().parse_args([])) is None


@pytest.mark.parametrize('which', ['student', 'teacher'])
def test_a_damaged_checkpoint_is_one_line_before_any_row(checkpoints, which, capsys):
    refused(capsys, ['--accuracy', RECIPE, f'--{which}', checkpoints[f'damaged_{which}']], 'damaged')


def test_a_bad_recipe_is_one_line_before_any_row(checkpoints, tmp_path, capsys):
    no_loss = tmp_path / 'no_loss.yaml'
    no_loss.write_text((ROOT / RECIPE).read_text().replace('soft: {weight: 1.0', 'soft: {weight: 0.0')
                       .replace('{weight: 1.0, start', '{weight: 0.0, start'))
    refused(capsys, ['--accuracy', no_loss, '--student', checkpoints['student']], 'every loss weight is 0')
    no_data = tmp_path / 'no_data.yaml'
    no_data.write_text((ROOT / RECIPE).read_text().replace('source: digits', f'source: folder\n  path: {tmp_path / "none"}'))
    refused(capsys, ['--accuracy', no_data, '--student', checkpoints['student']], 'no train/ folder')
    not_yaml = tmp_path / 'not_yaml.yaml'
    not_yaml.write_text('student: [unclosed\n')
    code = benchmark_tool.main(['--smoke', '--accuracy', str(not_yaml), '--student', str(checkpoints['student'])])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [err.strip()] and err.startswith('error: '), err


@pytest.mark.parametrize('archs, message', [
    ('', '--archs names no architecture'),
    (' , ', '--archs names no architecture'),
    ('*', "--archs '*' would time every architecture"),
    ('s12,*', "--archs '*' would time every architecture"),
    ('?*', "--archs '?*' would time every architecture"),
])
def test_archs_naming_nothing_or_everything_is_one_line(archs, message, capsys):
    code = benchmark_tool.main(['--smoke', '--archs', archs])
    out, err = capsys.readouterr()
    assert code == 2 and err.strip().splitlines() == [err.strip()] and message in err, err
    assert 'plan:' not in out


@pytest.mark.slow      # the tool in a process of its own (torch's import)
def test_the_command_prints_no_traceback_for_a_damaged_checkpoint(checkpoints):
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'benchmark.py'), '--smoke', '--archs', 'deploy_mini',
         '--accuracy', RECIPE, '--student', str(checkpoints['damaged_student'])],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and 'damaged' in result.stderr
    assert 'Traceback' not in result.stderr and 'plan:' not in result.stdout
