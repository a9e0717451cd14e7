"""Issue 27, item 1: no class or function named in a detector checkpoint runs, and no string of
its stored model YAML reaches a parser's eval, on any route.

Three attempts, each first shown live under plain loading (else its refusal proves nothing):

* constructor: the pickle calls ultralytics' DetectionModel(cfg) itself, with an `activation`
  that runs a command (torch's weights-only unpickler calls an allowed class with the file's
  arguments);
* stored YAML: a genuine detector pickle whose stored YAML has that `activation` (only layer
  classes in the pickle; ultralytics' rebuild for fine-tuning evaluates it);
* URL: the pickle calls AutoBackend('http://127.0.0.1:PORT/w.pt'), which downloads a second
  file and unpickles it fully (served here by a local server that counts its requests).

Then every route refuses each with one `error:` line, exit 2, no marker file, no request.
"""
import http.server
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest
import torch

pytest.importorskip('ultralytics')
from models.errors import CheckpointError  # noqa: E402
from models.handoff.detector import load_pickled, reparameterize_detector, save_detector  # noqa: E402
from models.handoff.safe_load import vet_checkpoint  # noqa: E402
from models.handoff.yaml_guard import check_model_yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'YOLO_AUTOINSTALL': 'False', 'YOLO_OFFLINE': '1', 'YOLO_VERBOSE': 'False', 'OMP_NUM_THREADS': '1'}
ENV.pop('ULTRALYTICS_SAFE_LOAD', None)          # as a user has it: ultralytics' safe mode off

# A tiny ultralytics detector with a RIFormerBlock in its neck (something for reparam to fold).
TINY = {'nc': 2, 'backbone': [[-1, 1, 'Conv', [16, 3, 2]], [-1, 1, 'Conv', [32, 3, 2]], [-1, 1, 'Conv', [64, 3, 2]]],
        'head': [[-1, 1, 'RIFormerBlock', [64]], [[3], 1, 'Detect', ['nc']]]}


def evil_activation(marker) -> str:
    return f"__import__('os').system('touch {marker}') or __import__('torch').nn.SiLU()"


class Calls:
    """Unpickles as a call `func(*args)` (what a crafted checkpoint does)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Server:
    """A local HTTP server for one folder that counts the requests it gets."""

    def __init__(self, folder: Path):
        counter = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):
                super().__init__(*a, directory=str(folder), **k)

            def do_GET(self):
                counter.requests += 1
                super().do_GET()

            def log_message(self, *a):
                pass

        self.requests = 0
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def attempt(request, tmp_path):
    """(checkpoint, marker, server or None) of the attempt named by the test's parameter."""
    import models.handoff.yolo  # noqa: F401  (RIFormerBlock as a YAML name)
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.tasks import DetectionModel
    marker, path, server = tmp_path / 'pwned', tmp_path / 'attempt.pt', None
    if request.param == 'constructor':
        torch.save({'model': Calls(DetectionModel, {**TINY, 'activation': evil_activation(marker)})}, path)
    elif request.param == 'stored-yaml':
        net = DetectionModel(dict(TINY), verbose=False)
        net.yaml['activation'] = evil_activation(marker)
        save_detector(net, path)
    else:
        served = tmp_path / 'served'
        served.mkdir()
        torch.save({'model': Calls(os.system, f'touch {marker}')}, served / 'w.pt')
        server = Server(served)
        torch.save({'model': Calls(AutoBackend, f'{server.url}/w.pt')}, path)
    yield path, marker, server
    if server:
        server.close()


ATTEMPTS = ['constructor', 'stored-yaml', 'url']


def isolated(folder: Path) -> dict:
    """The environment of a user's process, with ultralytics' settings in `folder` naming
    `folder/downloads` as the folder its downloads go to (`weights_dir`; by default the git
    checkout's `weights/`, which is this repository)."""
    import json
    from ultralytics.utils import SETTINGS
    settings = {**SETTINGS.defaults, 'weights_dir': str(folder / 'downloads'), 'runs_dir': str(folder / 'runs'),
                'datasets_dir': str(folder / 'datasets'), 'sync': False}
    (folder / 'settings' / 'Ultralytics').mkdir(parents=True, exist_ok=True)
    (folder / 'settings' / 'Ultralytics' / 'settings.json').write_text(json.dumps(settings))
    return {**ENV, 'YOLO_CONFIG_DIR': str(folder / 'settings')}


def python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], cwd=cwd, env=isolated(cwd), capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize('attempt', ATTEMPTS, indirect=True)
def test_each_attempt_is_live_under_plain_loading(attempt, tmp_path):
    """Positive control, in a fresh process as a user would load: torch.load(weights_only=False)
    (and, for the stored YAML, the rebuild ultralytics does when it fine-tunes) runs the payload."""
    path, marker, server = attempt
    python(f'import torch; m = torch.load({str(path)!r}, weights_only=False)["model"]\n'
           f'if hasattr(m, "yaml"): type(m)(m.yaml)', cwd=tmp_path)
    assert marker.exists(), 'the payload did not run under plain loading: the refusals below would prove nothing'
    if server:
        assert server.requests >= 1 and (tmp_path / 'downloads' / 'w.pt').exists()


ROUTES = {
    'reparam': ['tools/reparam.py', '{ckpt}'],
    'detect predict': ['tools/detect.py', 'predict', '--weights', '{ckpt}', '--source', '{dir}'],
    'detect val': ['tools/detect.py', 'val', '--weights', '{ckpt}'],
    'detect export': ['tools/detect.py', 'export', '--weights', '{ckpt}', '--format', 'onnx'],
    'detect train --weights': ['tools/detect.py', 'train', '--weights', '{ckpt}', '--data', '{dir}/data.yaml'],
    'detect train --resume': ['tools/detect.py', 'train', '--resume', '{ckpt}'],
    'riformer-yolo': ['-m', 'distill.cli.yolo', 'detect', 'val', 'model={ckpt}'],
    'export': ['tools/export.py', '{ckpt}', '--format', 'onnx'],
}


# The URL attempt is refused by the same reader as the others; three routes (one per command) suffice for it.
CASES = [(route, kind) for kind in ATTEMPTS for route in ROUTES
         if kind != 'url' or route in ('reparam', 'detect val', 'riformer-yolo')]


@pytest.mark.parametrize('route, attempt', CASES, indirect=['attempt'])
def test_every_route_refuses_every_attempt(route, attempt, tmp_path):
    path, marker, server = attempt
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'data.yaml').write_text('path: .\ntrain: images\nval: images\nnames: {0: box}\n')
    args = [a.format(ckpt=path, dir=work) for a in ROUTES[route]]
    if args[0].startswith('tools/'):
        args[0] = str(ROOT / args[0])
    result = subprocess.run([sys.executable, *args], cwd=work if route != 'riformer-yolo' else ROOT,
                            env=isolated(work), capture_output=True, text=True, timeout=300)
    assert not marker.exists(), 'the payload ran'
    assert server is None or server.requests == 0, 'the URL was fetched'
    assert not (work / 'downloads').exists() and not list(work.rglob('*.pt')), 'a download was written'
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and err[0].startswith('error: '), result.stderr[-2000:]
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('attempt', ATTEMPTS, indirect=True)
def test_library_loaders_refuse_every_attempt(attempt, tmp_path):
    path, marker, server = attempt
    from models.handoff.yolov5 import load_detection_model
    for load in (load_pickled, vet_checkpoint, load_detection_model,
                 lambda p: reparameterize_detector(p, tmp_path / 'out.pt', log=lambda line: None)):
        with pytest.raises(CheckpointError, match='refused|stored model YAML'):
            load(path)
    assert not marker.exists() and (server is None or server.requests == 0)
    assert not (tmp_path / 'out.pt').exists()


def test_a_genuine_detector_round_trips(tmp_path):
    """The inert read and rebuild give the saved detector back: same outputs, names kept."""
    import models.handoff.yolo  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel
    net = DetectionModel(dict(TINY), verbose=False).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    net.names = {0: 'cat', 1: 'dog'}
    save_detector(net, tmp_path / 'ok.pt')
    loaded = load_pickled(tmp_path / 'ok.pt')['model'].eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x)[0], loaded(x)[0])
    assert loaded.names == {0: 'cat', 1: 'dog'} and type(loaded) is DetectionModel


def test_tensors_that_do_not_fit_the_stored_yaml_are_refused(tmp_path):
    import models.handoff.yolo  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel
    net = DetectionModel(dict(TINY), verbose=False)
    net.yaml['backbone'][0][3] = [8, 3, 2]          # the YAML no longer makes the stored layers
    save_detector(net, tmp_path / 'mismatch.pt')
    with pytest.raises(CheckpointError, match='do not fit the stored model YAML'):
        load_pickled(tmp_path / 'mismatch.pt')


# The yolov5 and yolo9 parsers eval every module name and string argument in their module's
# namespace: `check_model_yaml` admits layer classes, literals and their own variables only.
def yolov5_like_namespace():
    import ultralytics.nn.modules as layers
    return types.SimpleNamespace(__name__='yolov5.models.yolo', Conv=layers.Conv, Detect=layers.Detect, nn=torch.nn,
                                 **{'__builtins__': __builtins__})


@pytest.mark.parametrize('where', ['module', 'argument', 'activation'])
def test_yaml_strings_a_parser_would_eval_are_refused(where, tmp_path):
    marker = tmp_path / 'pwned'
    code = f"__import__('os').system('touch {marker}') or Conv"
    cfg = {'nc': 2, 'backbone': [[-1, 1, 'Conv', [16, 3, 2]]], 'head': [[-1, 1, 'Conv', [16, 3, 2]]]}
    if where == 'module':
        cfg['head'][0][2] = code
    elif where == 'argument':
        cfg['head'][0][3] = [16, code, 2]
    else:
        cfg['activation'] = evil_activation(marker)
    text = cfg.get('activation') or code
    namespace = yolov5_like_namespace()
    eval(text, dict(vars(namespace)))            # positive control: the parser's eval runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match='the stored model YAML has'):
        check_model_yaml(cfg, 'yolov5', namespace)
    assert not marker.exists()


def test_the_yaml_a_detector_needs_passes():
    cfg = {'nc': 2, 'activation': 'nn.LeakyReLU(0.1)', 'anchors': [[10, 13, 16, 30, 33, 23]],
           'backbone': [[-1, 1, 'Conv', [16, 3, 2]], [-1, 1, 'nn.Upsample', [None, 2, 'nearest']]],
           'head': [[[-1], 1, 'Detect', ['nc', 'anchors']]]}
    assert check_model_yaml(cfg, 'yolov5', yolov5_like_namespace()) is cfg


@pytest.mark.parametrize('key, value, words', [
    ('repeats', 10 ** 6, 'repeats'), ('width', 10 ** 7, 'a size above'), ('multiple', 1e9, 'width_multiple'),
])
def test_sizes_that_would_allocate_without_bound_are_refused(key, value, words):
    cfg = {'nc': 2, 'backbone': [[-1, 1, 'Conv', [16, 3, 2]]], 'head': [[-1, 1, 'Conv', [16, 3, 2]]]}
    if key == 'repeats':
        cfg['head'][0][1] = value
    elif key == 'width':
        cfg['head'][0][3] = [value, 3, 2]
    else:
        cfg['width_multiple'] = value
    with pytest.raises(CheckpointError, match=words):
        check_model_yaml(cfg, 'ultralytics', yolov5_like_namespace())


@pytest.mark.parametrize('attempt', ['constructor'], indirect=True)
def test_riformer_yolo_vets_model_written_with_spaces_and_refuses_urls(attempt, tmp_path):
    """`model = x.pt` (ultralytics merges the spaces) is vetted like `model=x.pt`; a `model=` URL
    is refused before anything is fetched."""
    path, marker, _ = attempt
    served = tmp_path / 'served'
    served.mkdir()
    server = Server(served)
    try:
        for args in (['model', '=', str(path)], [f'model={server.url}/w.pt']):
            result = subprocess.run([sys.executable, '-m', 'distill.cli.yolo', 'detect', 'val', *args], cwd=ROOT,
                                    env=isolated(tmp_path), capture_output=True, text=True, timeout=300)
            err = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(err) == 1 and err[0].startswith('error: '), result.stderr[-2000:]
        assert server.requests == 0 and not marker.exists()
    finally:
        server.close()


@pytest.mark.parametrize('attempt', ['constructor'], indirect=True)
def test_plain_yolo_is_outside_the_guards_and_riformer_yolo_is_not(attempt, tmp_path):
    """What docs/SECURITY.md tells users of ultralytics' own `yolo` command: it unpickles the
    checkpoint itself and runs the payload; `riformer-yolo` with the same arguments refuses it."""
    yolo = Path(sys.executable).parent / 'yolo'
    if not yolo.exists():
        pytest.skip("ultralytics' yolo command is not installed next to this python")
    path, marker, _ = attempt
    subprocess.run([str(yolo), 'detect', 'val', f'model={path}'], cwd=tmp_path, env=isolated(tmp_path),
                   capture_output=True, text=True, timeout=300)
    assert marker.exists(), 'plain yolo did not run the payload: the note in docs/SECURITY.md is out of date'
    marker.unlink()
    result = subprocess.run([sys.executable, '-m', 'distill.cli.yolo', 'detect', 'val', f'model={path}'], cwd=ROOT,
                            env=isolated(tmp_path), capture_output=True, text=True, timeout=300)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and err[0].startswith('error: '), result.stderr[-2000:]
    assert not marker.exists()


# The yolov5 and yolo9 code bases (installed on the side, see docs/DETECTORS.md; skipped where
# absent): their parser evals module names, string arguments and the activation.
def tiny_yaml(codebase: str) -> dict:
    head = [[[2], 1, 'Detect', ['nc', 'anchors']]] if codebase == 'yolov5' else [[[2], 1, 'DDetect', ['nc']]]
    return {'nc': 2, 'depth_multiple': 1.0, 'width_multiple': 1.0,
            'anchors': [[10, 13, 16, 30, 33, 23]] if codebase == 'yolov5' else 3,
            'backbone': [[-1, 1, 'Conv', [16, 3, 2]], [-1, 1, 'Conv', [32, 3, 2]], [-1, 1, 'Conv', [64, 3, 2]]],
            'head': head}


def with_payload(cfg: dict, where: str, marker) -> dict:
    command = f"__import__('os').system('touch {marker}')"
    if where == 'module':
        cfg['backbone'][1][2] = f'{command} or Conv'
    elif where == 'argument':
        cfg['backbone'][1][3] = [32, f'{command} or 3', 2]
    else:
        cfg['activation'] = f'{command} or nn.SiLU()'
    return cfg


@pytest.mark.parametrize('where', ['module', 'argument', 'activation', 'constructor'])
@pytest.mark.parametrize('codebase', ['yolov5', 'yolo9'])
def test_yolov5_and_yolo9_checkpoints_run_nothing(codebase, where, tmp_path):
    yolo = pytest.importorskip(f'{codebase}.models.yolo', reason=f'{codebase} not installed')
    from models.handoff.yolov5 import load_detection_model
    marker, path = tmp_path / 'pwned', tmp_path / 'attempt.pt'
    evil = with_payload(tiny_yaml(codebase), 'activation' if where == 'constructor' else where, marker)
    if where == 'constructor':
        torch.save({'model': Calls(yolo.DetectionModel, evil)}, path)
    else:
        net = yolo.DetectionModel(tiny_yaml(codebase), ch=3, nc=2)
        net.yaml = evil
        save_detector(net, path)
    # Positive control, in a fresh process: plain loading (and their rebuild from the stored YAML) runs it.
    python(f'import torch; m = torch.load({str(path)!r}, weights_only=False)["model"]\n'
           f'if hasattr(m, "yaml"): type(m)(m.yaml)', cwd=tmp_path)
    assert marker.exists(), 'the payload did not run under plain loading'
    marker.unlink()
    with pytest.raises(CheckpointError, match='refused|the stored model YAML has'):
        load_detection_model(path)
    with pytest.raises(CheckpointError, match='refused|the stored model YAML has'):
        reparameterize_detector(path, tmp_path / 'out.pt', log=lambda line: None)
    assert not marker.exists() and not (tmp_path / 'out.pt').exists()


@pytest.mark.parametrize('codebase', ['yolov5', 'yolo9'])
def test_a_genuine_yolov5_or_yolo9_detector_round_trips(codebase, tmp_path):
    yolo = pytest.importorskip(f'{codebase}.models.yolo', reason=f'{codebase} not installed')
    from models.handoff.yolov5 import load_detection_model
    net = yolo.DetectionModel(tiny_yaml(codebase), ch=3, nc=2).eval()
    save_detector(net, tmp_path / 'ok.pt')
    loaded = load_detection_model(tmp_path / 'ok.pt', fuse=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x)[0], loaded(x)[0]) and type(loaded) is type(net)


# A dataset YAML's `download:` entry is code ultralytics runs when the images are missing.
def evil_dataset(folder: Path, marker) -> Path:
    path = folder / 'evil-data.yaml'
    path.write_text(f'path: {folder / "nowhere"}\ntrain: images\nval: images\nnames: {{0: box}}\n'
                    f'download: "import os; os.system(\'touch {marker}\')"\n')
    return path


@pytest.fixture
def genuine(tmp_path):
    import models.handoff.yolo  # noqa: F401
    from ultralytics.nn.tasks import DetectionModel
    return save_detector(DetectionModel(dict(TINY), verbose=False), tmp_path / 'genuine.pt')


def test_a_dataset_download_script_is_live_under_plain_ultralytics(tmp_path):
    marker = tmp_path / 'pwned'
    data = evil_dataset(tmp_path, marker)
    python(f'from ultralytics.data.utils import check_det_dataset\ntry: check_det_dataset({str(data)!r})\n'
           f'except Exception: pass', cwd=tmp_path)
    assert marker.exists(), 'the download: script did not run under plain ultralytics'


@pytest.mark.parametrize('route', [
    ['tools/detect.py', 'val', '--weights', '{ckpt}', '--data', '{data}'],
    ['tools/detect.py', 'train', '--weights', '{ckpt}', '--data', '{data}', '--epochs', '1', '--imgsz', '64'],
    ['tools/detect.py', 'export', '--weights', '{ckpt}', '--format', 'onnx', 'quantize=8', 'data={data}'],
    ['-m', 'distill.cli.yolo', 'detect', 'val', 'model={ckpt}', 'data={data}'],
], ids=lambda r: ' '.join(r[1:3]) if r[0] == '-m' else ' '.join(r[:2]))
def test_a_dataset_download_script_is_refused_on_every_route(route, genuine, tmp_path):
    marker = tmp_path / 'pwned'
    data = evil_dataset(tmp_path, marker)
    args = [a.format(ckpt=genuine, data=data) for a in route]
    if args[0].startswith('tools/'):
        args[0] = str(ROOT / args[0])
    result = subprocess.run([sys.executable, *args], cwd=ROOT if args[0] == '-m' else tmp_path,
                            env=isolated(tmp_path), capture_output=True, text=True, timeout=300)
    assert not marker.exists(), 'the download: script ran'
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and 'has a download: entry' in err[0], result.stderr[-2000:]


def test_a_dataset_yaml_that_is_a_fifo_or_a_device_is_refused_before_a_read(tmp_path):
    """A FIFO would hang the read and a link to /dev/zero never end it: refused by what the path
    is, before it is opened; a genuine dataset YAML passes."""
    from models.handoff.safe_load import vet_dataset
    fifo = tmp_path / 'data.yaml'
    os.mkfifo(fifo)
    zero = tmp_path / 'zero.yaml'
    zero.symlink_to('/dev/zero')
    for path in (fifo, zero, tmp_path):
        with pytest.raises(CheckpointError, match='not a regular file'):
            vet_dataset(path)
    good = tmp_path / 'good.yaml'
    good.write_text('path: .\ntrain: images\nval: images\nnames: {0: a}\n')
    assert vet_dataset(good)


def test_ultralytics_own_dataset_check_runs_no_script_in_our_processes(tmp_path):
    """Where ultralytics reads a dataset YAML our routes did not see (the one a checkpoint's
    training settings name), its check runs in our safe mode: no script, no download."""
    from models.handoff.safe_load import ultralytics_safe_mode
    marker = tmp_path / 'pwned'
    data = evil_dataset(tmp_path, marker)
    ultralytics_safe_mode()
    import ultralytics.engine.validator as validator
    with pytest.raises(FileNotFoundError):
        validator.check_det_dataset(str(data))
    assert not marker.exists()


def test_a_model_yaml_given_to_the_launcher_is_checked_first(tmp_path):
    """`--cfg` YAMLs go through the same allow-list before any parser sees them."""
    import yaml
    marker = tmp_path / 'pwned'
    recipe = yaml.safe_load((ROOT / 'recipes' / 'detect' / 'yolov8-riformer_s12.yaml').read_text())
    recipe['activation'] = evil_activation(marker)
    cfg = tmp_path / 'evil.yaml'
    cfg.write_text(yaml.safe_dump(recipe))
    python('import models.handoff.yolo, yaml\nfrom ultralytics.nn.tasks import parse_model\n'
           f'try: parse_model(yaml.safe_load(open({str(cfg)!r})), 3, verbose=False)\nexcept Exception: pass',
           cwd=tmp_path)
    assert marker.exists(), 'the activation did not run in ultralytics\' own parser'
    marker.unlink()
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'detect.py'), 'info', '--cfg', str(cfg),
                             '--backbone', 'fasternet_t0'], cwd=tmp_path, env=isolated(tmp_path),
                            capture_output=True, text=True, timeout=300)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and 'has activation =' in err[0], result.stderr[-2000:]
    assert not marker.exists()


@pytest.mark.parametrize('codebase', ['yolov5', 'yolo9'])
def test_a_model_yaml_given_to_the_yolov5_yolo9_builder_is_checked_first(codebase, tmp_path):
    pytest.importorskip(f'{codebase}.models.yolo', reason=f'{codebase} not installed')
    from models.errors import HandoffError
    from models.handoff.yolov5 import build_detection_model
    marker = tmp_path / 'pwned'
    with pytest.raises(HandoffError, match='module'):
        build_detection_model(with_payload(tiny_yaml(codebase), 'module', marker), f'{codebase}.models.yolo', nc=2)
    assert not marker.exists()


def test_a_model_yaml_given_to_riformer_yolo_is_checked_first(tmp_path):
    """`riformer-yolo ... model=x.yaml`: the YAML's strings go through the same allow-list as a
    checkpoint's stored YAML before ultralytics parses it; the project's own detector YAMLs pass."""
    import yaml
    from models.handoff.safe_load import vet_model_yaml
    for name in ('yolov8-riformer_s12.yaml', 'rtdetr-riformer_s12.yaml', 'yolov8-riformer_s12-neck.yaml'):
        vet_model_yaml(ROOT / 'recipes' / 'detect' / name)
    marker = tmp_path / 'pwned'
    recipe = yaml.safe_load((ROOT / 'recipes' / 'detect' / 'yolov8-riformer_s12.yaml').read_text())
    recipe['activation'] = evil_activation(marker)
    cfg = tmp_path / 'evil.yaml'
    cfg.write_text(yaml.safe_dump(recipe))
    # The positive control (ultralytics' own parser runs this activation) is
    # test_a_model_yaml_given_to_the_launcher_is_checked_first, on the same YAML.
    result = subprocess.run([sys.executable, '-m', 'distill.cli.yolo', 'detect', 'val', f'model={cfg}'], cwd=ROOT,
                            env=isolated(tmp_path), capture_output=True, text=True, timeout=300)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1 and 'has activation =' in err[0], result.stderr[-2000:]
    assert not marker.exists()
    fifo = tmp_path / 'fifo.yaml'
    os.mkfifo(fifo)
    result = subprocess.run([sys.executable, '-m', 'distill.cli.yolo', 'detect', 'val', f'model={fifo}'], cwd=ROOT,
                            env=isolated(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'not a regular file' in result.stderr, result.stderr[-2000:]
