"""The README's commands run as written: every `sh` block, then every `python` block, in order,
in one shell, in a fresh copy of the repository after the demo. The shortcuts that keep this
within a 2-core CI run are listed in the README's last section ("Commands in this README") and
implemented in `shortcut` below; nothing else is changed."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import models
from helpers import official_file_in_torch_hub_cache, randomize

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

ROOT = Path(__file__).resolve().parents[1]
DEMO = '.venv/bin/python tools/pipeline.py --epochs 1'   # stands in for `make demo` (the venv exists)


def readme_blocks(text):
    """(language, code) of every fenced block, in order."""
    return re.findall(r'^```(\w+)\n(.*?)^```', text, flags=re.M | re.S)


def shell_lines(code):
    """One line per command: `\\` continuations joined."""
    return [line for line in code.replace('\\\n', ' ').splitlines() if line.strip()]


def shortcut(line):
    """The README line as the test runs it."""
    command, comment = re.match(r'^(.*?)(\s+#.*)?$', line).groups()
    if 'distill/train.py' in command:
        command = (re.sub(r'train\.epochs=\d+', 'train.epochs=2', command) if 'train.epochs=' in command
                   else command + ' train.epochs=1')
    if 'tools/ablate.py' in command or 'tools/benchmark.py' in command:
        command += ' --smoke'
    return command + (comment or '')


def test_shortcuts_change_only_what_the_readme_says():
    assert shortcut('python distill/train.py r.yaml  # x') == 'python distill/train.py r.yaml train.epochs=1  # x'
    assert shortcut('python distill/train.py r.yaml train.epochs=20 resume=true') == \
        'python distill/train.py r.yaml train.epochs=2 resume=true'
    assert shortcut('python tools/ablate.py --config a.yaml') == 'python tools/ablate.py --config a.yaml --smoke'
    assert shortcut('python tools/reparam.py x') == 'python tools/reparam.py x'


def fresh_copy(dest: Path) -> Path:
    """The files git would hand a new clone (tracked, plus new files not ignored yet)."""
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split('\0')
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / '.venv').symlink_to(Path(sys.prefix))     # `source .venv/bin/activate` as after `make demo`
    return dest


@pytest.mark.skipif(shutil.which('git') is None or not (ROOT / '.git').exists(), reason='needs a git checkout')
def test_readme_commands_run_as_written(tmp_path):
    blocks = readme_blocks((ROOT / 'README.md').read_text())
    sh = [shortcut(line) for lang, code in blocks if lang == 'sh' for line in shell_lines(code)]
    py = [code for lang, code in blocks if lang == 'python']
    assert any('distill/train.py' in line for line in sh) and any('--pretrained' in line for line in sh)
    script = ['set -eo pipefail', f'{DEMO}  # make demo'] + sh
    script += [f"python - <<'README_PYTHON'\n{code}README_PYTHON" for code in py]

    repo = fresh_copy(tmp_path / 'repo')
    # `--pretrained riformer_s12` / pretrained=True: the official file's place in the torch hub cache.
    official_file_in_torch_hub_cache(tmp_path / 'torch', 'riformer_s12',
                                     randomize(timm.create_model('riformer_s12', head_norm_first=True), seed=9))
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    env.update(TORCH_HOME=str(tmp_path / 'torch'), PATH='/usr/bin:/bin', MPLBACKEND='Agg')
    result = subprocess.run(['bash', '-c', '\n'.join(script)], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, f'{result.stdout[-3000:]}\n{result.stderr[-3000:]}'

    # What the commands promise exists.
    assert (repo / 'runs/digits/feature/summary.json').is_file()
    assert '"epochs": 2' in (repo / 'runs/digits/imitation/summary.json').read_text()
    assert models.load_deploy(repo / 'riformer_s12.deploy.safetensors').form == 'deploy'
    assert (repo / 'runs/digits/imitation/model.deploy.safetensors').is_file()
    assert (repo / 'runs/digits/ablation/ablation.md').is_file() and (repo / 'runs/bench.md').is_file()
