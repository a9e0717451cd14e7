"""The suite leaves the user's home alone: settings and caches of the libraries it drives go to
the temporary directory that conftest.py sets up."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import conftest


def test_settings_dirs_point_into_the_temporary_home():
    for var in ('YOLO_CONFIG_DIR', 'HF_HOME', 'MPLCONFIGDIR', 'XDG_CONFIG_HOME'):
        assert Path(os.environ[var]).is_relative_to(conftest.USER_DIRS), var


def test_ultralytics_writes_its_settings_into_the_temporary_home(tmp_path):
    pytest.importorskip('ultralytics')
    # A fresh process imports ultralytics the way a test module does; its settings file (where
    # it records runs_dir) must land under the test home, not ~/.config/Ultralytics.
    code = 'import ultralytics.utils as u; print(u.SETTINGS.file)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         cwd=tmp_path).stdout.strip().splitlines()[-1]
    assert Path(out).is_relative_to(conftest.USER_DIRS), out
    assert Path(out).exists()
