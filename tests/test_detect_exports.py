"""A folded ultralytics detector (tools/reparam.py DETECTOR.pt -> best.deploy.pt) through
ultralytics' own CPU exports (distill/detect_exports.py): ONNX and OpenVINO in fp32,
quantize=16 and quantize=8, each compared with the PyTorch detector on the same images.
Tolerances on the decoded output and on the class scores alone: fp32 1e-4 (same graph), fp16
5e-2, int8 0.1 (a one-epoch detector on four 64 px images; real accuracy is a val run's job).
ONNX int8 also against its own QDQ graph run unfused: see KERNEL_TOL."""
import os

os.environ['YOLO_AUTOINSTALL'] = 'False'
os.environ['YOLO_OFFLINE'] = '1'
os.environ.setdefault('YOLO_VERBOSE', 'False')

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import deploy_checkpoint, randomize  # noqa: E402

pytest.importorskip('ultralytics')
pytest.importorskip('openvino')
pytest.importorskip('nncf')
from distill.cli import detect, reparam  # noqa: E402
from distill.detect_exports import EXPORTS, check_exports  # noqa: E402
from test_detect_reparam import RECIPE, neck_blocks, tiny_data, train_args  # noqa: E402,F401

pytestmark = pytest.mark.slow          # trains, exports or runs a tool end to end

# 16-bit exports: OpenVINO computes them in bf16 on CPUs with AVX512-BF16 (8 mantissa bits, 4e-3
# per rounding), and a one-epoch detector's scores moved by up to 0.0225 across runs (2e-2 failed
# once in CI): 5e-2 still fails any export that computes something else.
TOL = {32: 1e-4, 16: 5e-2, 8: 0.1}
# ONNX Runtime's int8 kernels against the file's QDQ graph run unfused, whole decoded output. The
# export is made for the CPU's kind (7-bit weights without VNNI), so no sum clips; what is left is
# the unfused graph (it sums in fp32) rounding a requantized value differently now and then:
# measured 2.0e-3 for a full 8-bit export with VNNI, 0 for a 7-bit one with VNNI and on an
# emulated AVX2 CPU (qemu -cpu Haswell, docs/RESULTS.md). A full 8-bit export on that AVX2 CPU
# clips: 0.20-0.22 (0.188 on a real one, in the issue).
KERNEL_TOL = 1e-2


@pytest.fixture(scope='module')
def folded(tmp_path_factory, tiny_data):  # noqa: F811
    import ultralytics
    from models.handoff.detector import save_detector
    root = tmp_path_factory.mktemp('detexport')
    deploy = deploy_checkpoint(root / 'riformer_s12.deploy.safetensors', seed=11)
    assert detect.main(['train', '--cfg', str(RECIPE), '--scale', 's', '--backbone', str(deploy),
                        *train_args(tiny_data, root / 'runs', 'neck')]) == 0
    net = ultralytics.YOLO(str(root / 'runs' / 'neck' / 'weights' / 'last.pt')).model.float()
    for i, block in enumerate(neck_blocks(net)):          # blocks with something to fold
        randomize(block, seed=30 + i)
    src = save_detector(net, root / 'best.pt', extra={'train_args': {'imgsz': 64, 'task': 'detect'}})
    assert reparam.main([str(src)]) == 0
    return root / 'best.deploy.pt'


def test_ultralytics_cpu_exports_match_the_pytorch_detector(folded, tiny_data):  # noqa: F811
    from models.cpu import onednn_isa_cap
    # Under oneDNN's ISA cap OpenVINO cannot run (helpers.skip_openvino_under_onednn_cap).
    exports = [e for e in EXPORTS if not (onednn_isa_cap() and e[0] == 'openvino')]
    rows = check_exports(folded, 64, data=str(tiny_data), exports=exports)
    assert [(r['format'], r['quantize']) for r in rows] == [(f, q or 32) for f, q in exports]
    for r in rows:
        assert 'error' not in r, r
        assert r['rel_err'] < TOL[r['quantize']] and r['score_err'] < TOL[r['quantize']], r
    (int8,) = [r for r in rows if (r['format'], r['quantize']) == ('onnx', 8)]
    assert int8['kernel_err'] < KERNEL_TOL, int8


def test_int8_without_data_is_a_row_not_a_crash(folded):
    rows = check_exports(folded, 64, exports=[('onnx', 8)], log=lambda line: None)
    assert rows == [{'format': 'onnx', 'quantize': 8, 'error': 'int8 needs data= (a dataset YAML to calibrate on)'}]
