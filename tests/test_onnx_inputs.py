"""ONNX / OpenVINO files a user hands over (issue 27). No command of ours reads one it did not
write itself: tools/export.py, the deploy benchmark and distill/detect_exports.py open only
their own output; `riformer-yolo model=` takes `.pt` checkpoints and model YAMLs only (an
exported model would go to ultralytics' backend for its runtime, nothing of ours in front).
`models.quantize.ort_session`, the library route a caller could hand any file, refuses an
initializer whose external data lies outside the model's folder with one line, opening nothing."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
from onnx import TensorProto, helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VALUES = np.arange(8, dtype=np.float32)


def model_with_external_weights(path: Path, location: str) -> Path:
    """y = x + w, where the 8 floats of w are read from `location` (relative to the model's folder)."""
    w = TensorProto(name='w', data_type=TensorProto.FLOAT, dims=[8], data_location=TensorProto.EXTERNAL)
    for key, value in (('location', location), ('offset', '0'), ('length', str(VALUES.nbytes))):
        w.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node('Add', ['x', 'w'], ['y'])], 'g',
                              [helper.make_tensor_value_info('x', TensorProto.FLOAT, [8])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, [8])], [w])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]).SerializeToString())
    return path


def test_external_data_inside_the_folder_is_read(tmp_path):
    """Control: the construction works, the external file's values reach the output."""
    from models.quantize import ort_session
    (tmp_path / 'm' / 'weights.bin').parent.mkdir()
    (tmp_path / 'm' / 'weights.bin').write_bytes(VALUES.tobytes())
    session = ort_session(model_with_external_weights(tmp_path / 'm' / 'model.onnx', 'weights.bin'), threads=1)
    np.testing.assert_array_equal(session.run(None, {'x': np.zeros(8, np.float32)})[0], VALUES)


def test_external_data_outside_the_folder_is_one_line_and_opens_nothing(tmp_path):
    """`../secret` is a FIFO: opening it for reading would block, so a prompt answer shows it was
    never opened. Run in a fresh process so that a regression hangs only that process."""
    os.mkfifo(tmp_path / 'secret')
    path = model_with_external_weights(tmp_path / 'm' / 'model.onnx', '../secret')
    code = ('import sys\nfrom models.quantize import ort_session\nfrom models.errors import CheckpointError\n'
            f'try:\n    ort_session({str(path)!r}, threads=1)\nexcept CheckpointError as e:\n'
            '    print(e)\n    sys.exit(3)\n')
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 3 and len(lines) == 1, result.stdout + result.stderr[-2000:]
    assert lines[0].startswith(f'{path}: ONNX Runtime does not load it') and 'escapes model directory' in lines[0]


@pytest.mark.parametrize('exported', ['model.onnx', 'model_openvino_model', 'model.torchscript', 'model.xml'])
def test_riformer_yolo_refuses_an_exported_model_before_opening_it(exported, tmp_path):
    """Each a FIFO or folder: ultralytics would have opened it (and blocked on the FIFO)."""
    target = tmp_path / exported
    target.mkdir() if exported.endswith('_model') else os.mkfifo(target)
    env = {**os.environ, 'YOLO_AUTOINSTALL': 'False', 'YOLO_OFFLINE': '1', 'YOLO_CONFIG_DIR': str(tmp_path / 'cfg'),
           'OMP_NUM_THREADS': '1'}
    result = subprocess.run([sys.executable, '-m', 'distill.cli.yolo', 'detect', 'val', f'model={target}'],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f'error: model={target}: riformer-yolo opens .pt checkpoints and model YAMLs only')
