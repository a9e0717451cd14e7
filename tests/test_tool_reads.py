"""Files the tools write and read back (issue 27): a run's `summary.json` (tools/ablate.py,
tools/teacher_table.py, tools/pipeline.py) and the ablation's cached metrics are read by one
bounded reader, `distill.integrity.read_json`: a regular file of at most 16 MB. A FIFO (the read
would block), a link to /dev/zero (it would never end) or a 100 MB file is one line naming it."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from distill.ablation import runner, teachers
from distill.errors import RecipeError
from distill.integrity import read_json

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))       # tools/ as a package


def make(kind: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == 'fifo':
        os.mkfifo(path)
    elif kind == 'dev-zero':
        path.symlink_to('/dev/zero')
    else:                                   # 100 MB, sparse: nothing is written to the disk
        with open(path, 'wb') as f:
            f.truncate(100 << 20)
    return path


KINDS = ['fifo', 'dev-zero', '100MB']
PLAIN_READ = 'import sys, pathlib; data = pathlib.Path(sys.argv[1]).read_bytes(); print(len(data))'


@pytest.fixture(autouse=True)
def no_hang():
    """A read that blocks fails the test instead of hanging the run."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail('the read hung'))
    signal.alarm(30)
    yield
    signal.alarm(0)


def test_the_files_are_what_a_plain_read_cannot_survive(tmp_path):
    """Positive controls, each in a fresh process: a plain read of the FIFO blocks, of the link to
    /dev/zero never ends (stopped by a 256 MB memory limit), and takes the 100 MB whole."""
    def plain(path, timeout, limit=None):
        pre = (lambda: __import__('resource').setrlimit(__import__('resource').RLIMIT_AS, (limit, limit))) if limit else None
        return subprocess.run([sys.executable, '-c', PLAIN_READ, str(path)], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=pre)
    with pytest.raises(subprocess.TimeoutExpired):
        plain(make('fifo', tmp_path / 'fifo' / 'summary.json'), timeout=3)
    assert 'MemoryError' in plain(make('dev-zero', tmp_path / 'zero' / 'summary.json'), 60, 256 << 20).stderr
    assert plain(make('100MB', tmp_path / 'big' / 'summary.json'), 60).stdout.strip() == str(100 << 20)


@pytest.mark.parametrize('kind', KINDS)
def test_read_json_refuses_in_one_line(kind, tmp_path):
    path = make(kind, tmp_path / 'run' / 'summary.json')
    with pytest.raises(RecipeError) as e:
        read_json(path)
    message = str(e.value)
    assert len(message.splitlines()) == 1 and message.startswith(f'{path}: not read (summary.json ')
    assert ('more than' in message) == (kind == '100MB'), message


@pytest.mark.parametrize('kind', KINDS)
def test_the_tools_readers_go_through_it(kind, tmp_path, monkeypatch):
    """ablate's `finished` and result, teacher_table's `read`, pipeline's `train`."""
    run_dir = tmp_path / 'run'
    make(kind, run_dir / 'summary.json')
    (run_dir / 'model.safetensors').write_bytes(b'')
    with pytest.raises(RecipeError, match='summary.json: not read'):
        runner.finished(run_dir, epochs=3)
    with pytest.raises(RecipeError, match='summary.json: not read'):
        teachers.read(teachers.TeacherRun(arm=None, seed=0, threads=1, dir=run_dir), last_epochs=1)
    from tools import pipeline
    monkeypatch.setattr(pipeline.subprocess, 'run', lambda *a, **k: None)   # the trainer: not run here
    with pytest.raises(RecipeError, match='summary.json: not read'):
        pipeline.train(ROOT / 'recipes' / 'digits' / 'teacher.yaml', run_dir, [])


def test_a_genuine_summary_still_reads(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    assert not runner.finished(run_dir, epochs=2)                      # none yet: not finished, no error
    summary = {'epochs': 2, 'final': {'val/top1': 50.0}, 'train_seconds': 7.0,
               'history': [{'epoch': 1, 'val/top1': 40.0}, {'epoch': 2, 'val/top1': 50.0}]}
    (run_dir / 'summary.json').write_text(json.dumps(summary))
    (run_dir / 'model.safetensors').write_bytes(b'')
    assert runner.finished(run_dir, epochs=2)
    got = teachers.read(teachers.TeacherRun(arm=None, seed=0, threads=1, dir=run_dir), last_epochs=1)
    assert got['final'] == 50.0 and got['earlier'] == 40.0 and got['seconds'] == 7.0


def test_teacher_table_table_only_says_it_in_one_line(tmp_path):
    """The command end to end: `--table-only` over a run whose summary.json is a FIFO."""
    from distill.ablation.teachers import load_config, plan
    config_path = ROOT / 'recipes' / 'clutter' / 'teachers.yaml'
    if not config_path.is_file():
        pytest.skip('no teacher-table config in this checkout')
    text = config_path.read_text()
    import yaml
    raw = yaml.safe_load(text)
    raw['output_dir'] = str(tmp_path / 'table')
    (tmp_path / 'teachers.yaml').write_text(yaml.safe_dump(raw))
    runs = plan(load_config(tmp_path / 'teachers.yaml'), [])
    make('fifo', runs[0].dir / 'summary.json')
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'teacher_table.py'), '--config',
                             str(tmp_path / 'teachers.yaml'), '--table-only'], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), result.stderr[-2000:]
    assert 'summary.json: not read' in lines[0]


def test_a_failed_trainer_is_quoted_from_the_end_of_its_log(tmp_path, monkeypatch):
    """run_trainer quotes a failed run's last `error:` line from the log's last 64 kB: a log of
    100 MB (sparse) ahead of it costs no more than that; a log replaced by a FIFO or a link to
    /dev/zero is not read (the exit code is quoted instead)."""
    fail = tmp_path / 'fail.py'
    fail.write_text("import sys\nprint('error: data.path /nowhere is not a folder')\nsys.exit(2)\n")
    monkeypatch.setattr(runner, 'TRAIN_SCRIPT', fail)
    log = tmp_path / 'train.log'
    with open(log, 'wb') as f:
        f.truncate(100 << 20)
    assert runner.run_trainer([], log, 1) == 'error: data.path /nowhere is not a folder'

    real_popen = subprocess.Popen

    def swap_log(cmd, stdout, **kwargs):       # the log becomes something else while the run goes
        proc = real_popen(cmd, stdout=stdout, **kwargs)
        proc.wait()
        Path(stdout.name).unlink()
        make(kind, Path(stdout.name))
        return proc
    for kind in ('fifo', 'dev-zero'):
        (tmp_path / kind).mkdir()
        monkeypatch.setattr(runner.subprocess, 'Popen', swap_log)
        assert runner.run_trainer([], tmp_path / kind / 'train.log', 1) == 'exit 2'
        monkeypatch.setattr(runner.subprocess, 'Popen', real_popen)
