"""tools/ablate.py (distill/ablation) end to end in smoke mode (a 1-epoch teacher, two 1-epoch variants), resume,
bad input; distill/similarity.py on known cases."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from distill.ablation import load_ablation_config, plan
from distill.similarity import linear_cka, normalised_mse
from distill.cli import ablate

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

ROOT = Path(__file__).resolve().parents[1]
# One torch thread per process: the CI machine has 2 shared cores, where spinning OpenMP
# threads of parallel processes slow each other down many-fold.
ENV = {**os.environ, 'OMP_NUM_THREADS': '1'}


def write_config(path: Path, teacher: Path, **extra) -> Path:
    config = {
        'teacher': {'arch': 'poolformer_mini', 'checkpoint': str(teacher)},
        'seeds': [0, 1],
        'settings': [{'name': 'full'}, {'name': 'labels10', 'overrides': ['data.label_fraction=0.1']}],
        'variants': [
            {'name': 'plain', 'recipe': 'recipes/digits/plain.yaml'},
            {'name': 'imitation', 'recipe': 'recipes/digits/imitation.yaml'},
            {'name': 'soft_kd', 'recipe': 'recipes/digits/imitation.yaml',
             'overrides': ['distill.l_in_hidden.weight=0', 'distill.l_out.weight=0', 'distill.l_rel.weight=0']},
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'ablate.py'), *map(str, args)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp('teacher') / 'run'
    proc = subprocess.run([sys.executable, str(ROOT / 'distill' / 'train.py'), 'recipes/digits/teacher.yaml',
                           'train.epochs=1', f'train.output_dir={out}', 'train.progress=false'],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out / 'model.safetensors'


def test_smoke_outputs_and_resume(teacher, tmp_path):
    config = write_config(tmp_path / 'ablation.yaml', teacher)
    out = tmp_path / 'out'
    proc = run_tool('--config', config, '--out', out, '--smoke')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    progress = [line for line in proc.stdout.splitlines() if line.startswith('[')]
    # Smoke: first setting, first two variants, first seed, one epoch.
    assert len(progress) == 2, proc.stdout
    assert progress[0].startswith('[1/2] plain seed 0: trained') and 'deploy top-1' in progress[0]
    assert progress[1].startswith('[2/2] imitation seed 0: trained')
    # The console's training time is the table's (the trainer's own), next to the wall time.
    import re
    console_s = {m.group(1): int(m.group(2)) for m in re.finditer(r'\] (\w+) seed 0: trained \((\d+)s of training', proc.stdout)}

    for name in ('plain', 'imitation'):
        run_dir = out / 'runs' / name / 'seed_0'
        summary = yaml.safe_load((run_dir / 'summary.json').read_text())
        assert summary['epochs'] == 1
        assert list((run_dir / 'tb').rglob('events.out.tfevents*')), 'TensorBoard logs kept per run'
        assert (run_dir / 'model.deploy.safetensors').is_file()

    table = (out / 'ablation.md').read_text()
    rows = [line for line in table.splitlines() if line.startswith('| full |')]
    assert [r.split('|')[2].strip() for r in rows] == ['plain', 'imitation']
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert cells[2] == 'deploy' and cells[3] == '1'
        assert '±' not in cells[4] and 0 < float(cells[4]) <= 100       # one seed: no spread to show
        assert abs(int(cells[-1]) - console_s[cells[1]]) <= 1, (row, proc.stdout)
        assert len(cells[6].split('/')) == 4          # CKA at the 4 imitated blocks

    with open(out / 'summary.csv') as f:
        summary_rows = list(csv.DictReader(f))
    assert [r['variant'] for r in summary_rows] == ['plain', 'imitation']
    with open(out / 'runs.csv') as f:
        run_rows = list(csv.DictReader(f))
    assert len(run_rows) == 2
    for r in run_rows:
        # The deploy model reproduces the trainer's own validation top-1 (exact folds).
        assert float(r['top1']) == pytest.approx(float(r['trainer_top1']), abs=1e-3)
        ckas = [float(v) for k, v in r.items() if k.startswith('cka:')]
        assert len(ckas) == 4 and all(0 <= c <= 1 + 1e-9 for c in ckas)
    imitation = next(r for r in run_rows if r['variant'] == 'imitation')
    plain = next(r for r in run_rows if r['variant'] == 'plain')
    # Imitation starts from the teacher's weights and pulls features onto the teacher's; CE alone does not.
    assert float(imitation['nmse:stages.3.blocks.0']) < float(plain['nmse:stages.3.blocks.0'])
    assert (out / 'ablation.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # Only what ran is listed under "Variants".
    listed = [line.split('`')[1] for line in table.split('Variants:')[1].splitlines() if line.startswith('- `')]
    assert listed == ['plain', 'imitation']

    # A second invocation finds both runs finished: nothing is retrained.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob('runs/*/seed_0/*.safetensors')}
    again = run_tool('--config', config, '--out', out, '--smoke')
    assert again.returncode == 0, again.stderr
    progress = [line for line in again.stdout.splitlines() if line.startswith('[')]
    assert len(progress) == 2 and all('skipped (finished)' in line for line in progress), again.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_plan_reuses_label_free_runs(tmp_path):
    """In the low-label setting, a variant without CE computes exactly what it did with all
    labels: planned as a reuse, not retrained."""
    config = load_ablation_config(write_config(tmp_path / 'a.yaml', tmp_path / 'teacher.safetensors'))
    runs = plan(config, tmp_path / 'out', [0], None, [], smoke=False)
    by_name = {r.name: r for r in runs}
    assert set(by_name) == {'plain', 'imitation', 'soft_kd', 'plain@labels10', 'imitation@labels10', 'soft_kd@labels10'}
    assert by_name['plain@labels10'].alias_of is None                      # CE sees fewer labels
    assert by_name['imitation@labels10'].alias_of is by_name['imitation']
    assert by_name['soft_kd@labels10'].alias_of is by_name['soft_kd']
    assert by_name['plain@labels10'].dir == tmp_path / 'out' / 'runs' / 'plain@labels10' / 'seed_0'
    # The config's teacher replaces the recipe's, and only where the recipe has one.
    assert by_name['imitation'].recipe.teacher.checkpoint == str(tmp_path / 'teacher.safetensors')
    assert by_name['plain'].recipe.teacher is None


@pytest.mark.parametrize('problem, expected', [
    ('missing', 'no such ablation config'),
    ('unknown_key', "unknown key(s) ['variantz']"),
    ('bad_override', "variant 'plain' (setting 'full'): unknown recipe key 'train.epochz'"),
    ('bad_seeds', 'seeds: expected a non-empty list'),
    ('unknown_subset', "setting 'few': unknown variant(s) ['nope']"),
])
def test_bad_config_is_one_line_error(tmp_path, capsys, problem, expected):
    teacher = tmp_path / 'teacher.safetensors'
    teacher.write_bytes(b'')
    path = tmp_path / 'a.yaml'
    if problem != 'missing':
        write_config(path, teacher)
        raw = yaml.safe_load(path.read_text())
        if problem == 'unknown_key':
            raw['variantz'] = raw.pop('variants')
        elif problem == 'bad_override':
            raw['variants'][0]['overrides'] = ['train.epochz=3']
        elif problem == 'bad_seeds':
            raw['seeds'] = ['zero']
        else:
            raw['settings'].append({'name': 'few', 'variants': ['nope']})
        path.write_text(yaml.safe_dump(raw))
    code = ablate.main(['--config', str(path), '--out', str(tmp_path / 'out')])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith('error: ') and err.count('\n') == 1 and expected in err, err
    assert not (tmp_path / 'out').exists()


def test_bad_cli_values_exit_2():
    proc = run_tool('--config', 'recipes/digits/ablation.yaml', '--jobs', '0')
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: --jobs must be at least 1, got 0'


def test_cka_and_nmse_known_cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 30, generator=g)
    q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0)         # rotation, scale, shift
    assert linear_cka(x, torch.randn(200, 30, generator=g)) < 0.3           # unrelated features
    assert normalised_mse(x, x) == 0.0
    assert normalised_mse(torch.zeros_like(x), x) == pytest.approx(1.0)
    assert normalised_mse(2 * x, x) == pytest.approx(1.0)                   # CKA would call this identical


def children_of(pid: int):
    """PIDs whose parent is `pid` (from /proc: no extra dependency)."""
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0]
    except OSError:
        return False
    return state != 'Z'


@pytest.mark.skipif(not Path('/proc/self/stat').is_file(), reason='reads child processes from /proc')
def test_one_signal_stops_the_ablation_and_its_trainers(teacher, tmp_path):
    """`kill PID` of a running ablation ends its training subprocesses too (they would otherwise
    be re-parented and keep training), says so in one line and exits 128 + SIGTERM."""
    import signal
    import time
    config = write_config(tmp_path / 'ablation.yaml', teacher)
    proc = subprocess.Popen([sys.executable, str(ROOT / 'tools' / 'ablate.py'), '--config', str(config),
                             '--out', str(tmp_path / 'out'), '--jobs', '2'],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(children_of(proc.pid)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    trainers = children_of(proc.pid)
    assert len(trainers) == 2, 'the ablation never had two trainers running'
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == ('stopped by SIGTERM: 2 training run(s) ended; the same command '
                                            'continues them')
    time.sleep(1)
    assert not any(alive(pid) for pid in trainers)
