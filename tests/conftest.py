import atexit
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

# The suite must not touch the user's environment: every library that keeps settings or caches
# under the home directory (ultralytics writes `runs_dir` into its settings file on import;
# yolov5 its fonts; matplotlib its font cache; accelerate reads its default config from HF_HOME)
# gets a temporary directory, set here, before any test module imports them. Subprocesses
# inherit it.
USER_DIRS = tempfile.mkdtemp(prefix='riformer-tests-home-')
atexit.register(shutil.rmtree, USER_DIRS, ignore_errors=True)
for var in ('YOLO_CONFIG_DIR', 'YOLOV5_CONFIG_DIR', 'MPLCONFIGDIR', 'HF_HOME', 'TORCH_HOME',
            'XDG_CONFIG_HOME', 'XDG_CACHE_HOME'):
    os.environ[var] = os.path.join(USER_DIRS, var.lower())
    os.makedirs(os.environ[var], exist_ok=True)
os.environ['YOLO_AUTOINSTALL'] = 'False'     # ultralytics: never pip-install from a test
os.environ['YOLO_OFFLINE'] = '1'

torch_threads = os.environ.get('TEST_TORCH_THREADS')
if torch_threads:
    import torch
    torch.set_num_threads(int(torch_threads))


import pytest  # noqa: E402


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; a test that runs the trainer in this process
    resets it afterwards, so that the next one can build its own Accelerator. Modules that run
    the trainer use it for every test: `pytestmark = pytest.mark.usefixtures('fresh_accelerate_state')`."""
    yield
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
