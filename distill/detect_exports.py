"""A folded detector (`best.deploy.pt`) through ultralytics' own CPU exports, each checked
against the PyTorch detector on the same images.

    from distill.detect_exports import check_exports
    for row in check_exports('runs/detect/exp/weights/best.deploy.pt', imgsz=640, data='data.yaml'):
        print(row)

The exports are the ones CPU users pick: `format=onnx` and `format=openvino`, each in fp32,
`quantize=16` (fp16 weights; ultralytics 8.4's spelling of `half=True`) and `quantize=8` (int8,
calibrated by ultralytics on `data`: ONNX Runtime static quantization of the weighted ops for
ONNX, NNCF for OpenVINO; `int8=True` in older versions). Each goes through
`distill.detection.export_detector` (what `tools/detect.py export` runs: the safe loading of
the checkpoint), in a folder of its own, and its decoded output
(boxes and class scores of every anchor) is compared with the PyTorch detector's: the relative
error of the whole output and of the class scores alone (boxes are in pixels and dominate the
first), and the share of anchors whose best class agrees among those PyTorch scores
above 0.25 (ultralytics' default confidence). The ONNX int8 row also compares ONNX Runtime's
int8 kernels with the same file's QDQ graph run unfused (`kernel_err`): the int8 exports are
made for the CPU's kind (`tools/detect.py export` -> models.quantize.third_party_int8), so the
kernels compute that graph's integers; on a CPU without VNNI a full 8-bit file would not.
"""
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import torch

# (format, quantize): None = fp32.
EXPORTS = (('onnx', None), ('onnx', 16), ('onnx', 8), ('openvino', None), ('openvino', 16), ('openvino', 8))
CONF = 0.25


def _run_onnx(path: Path, unfused: bool = False):
    from models.quantize import ort_session
    session = ort_session(path)
    if unfused:             # the QDQ graph node by node: the int8 kernels' reference
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _run_openvino(folder: Path, fp32: bool):
    import openvino as ov
    xml = next(folder.glob('*.xml'))
    # f32 for the fp32 export: OpenVINO would otherwise compute in bf16 on CPUs that have it.
    config = {'INFERENCE_PRECISION_HINT': 'f32'} if fp32 else {}
    compiled = ov.Core().compile_model(ov.Core().read_model(str(xml)), 'CPU', config)
    return lambda x: torch.from_numpy(compiled(x.numpy())[0].copy())


def detector_outputs(weights: Path, images: torch.Tensor) -> torch.Tensor:
    """The PyTorch detector's decoded predictions (batch, 4 + classes, anchors), loaded safely."""
    from distill.detection import checkpoint, detector_class
    from models.handoff.safe_load import ultralytics_safe_mode
    path = checkpoint(weights)          # read without running code from it
    ultralytics_safe_mode()
    net = detector_class(path)(str(path)).model.float().eval()
    with torch.no_grad():
        out = net(images)
    return out[0] if isinstance(out, (list, tuple)) else out


def compare(expected: torch.Tensor, got: torch.Tensor) -> dict:
    """Relative error and class agreement on the anchors PyTorch is confident about."""
    import models
    scores = expected[:, 4:]
    confident = scores.max(1).values > CONF
    same = scores.argmax(1) == got[:, 4:].argmax(1)
    return {'rel_err': models.relative_error(expected, got),
            'score_err': models.relative_error(scores, got[:, 4:]),
            'confident': int(confident.sum()),
            'class_agreement': 100. * float(same[confident].float().mean()) if confident.any() else None}


def check_exports(weights, imgsz: int, data: Optional[str] = None, images: Optional[torch.Tensor] = None,
                  exports: Sequence = EXPORTS, log=print) -> List[dict]:
    """Export `weights` in every (format, quantize) of `exports` and compare each with PyTorch
    on `images` (default: 2 seeded random images in [0, 1]). int8 needs `data` (a dataset YAML).
    A failing export is a row with its error, not an exception: the table says what works."""
    from distill.detection import export_detector
    weights = Path(weights)
    if images is None:
        images = torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    expected = detector_outputs(weights, images)
    rows = []
    for fmt, quantize in exports:
        row = {'format': fmt, 'quantize': quantize or 32}
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / weights.name
            shutil.copy(weights, copy)
            settings = {'format': fmt, 'imgsz': imgsz, **({'quantize': quantize} if quantize else {})}
            if quantize == 8:
                if data is None:
                    row['error'] = 'int8 needs data= (a dataset YAML to calibrate on)'
                    rows.append(row)
                    continue
                settings['data'] = data
            try:
                export_detector(copy, settings)
                if fmt == 'onnx':
                    run = _run_onnx(next(p for p in Path(tmp).glob('*.onnx')))
                    if quantize == 8:
                        reference = _run_onnx(next(p for p in Path(tmp).glob('*.onnx')), unfused=True)
                        kernels = torch.cat([run(x[None]) for x in images])
                        row['kernel_err'] = compare(torch.cat([reference(x[None]) for x in images]), kernels)['rel_err']
                else:
                    run = _run_openvino(next(p for p in Path(tmp).iterdir() if p.is_dir() and 'openvino' in p.name),
                                        fp32=quantize is None)
                # ultralytics exports a fixed batch of 1 unless dynamic=True: one image a call.
                row.update(compare(expected, torch.cat([run(x[None]) for x in images])))
            except Exception as e:          # reported in the table, like a failed export
                row['error'] = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:200]
        log(format_row(row))
        rows.append(row)
    return rows


def format_row(row: dict) -> str:
    name = f'{row["format"]} quantize={row["quantize"]}'
    if 'error' in row:
        return f'{name}: failed: {row["error"]}'
    agree = row['class_agreement']
    agree = '-' if agree is None else f'{agree:.1f} %'
    kernels = f'; int8 kernels vs its QDQ graph {row["kernel_err"]:.2e}' if 'kernel_err' in row else ''
    return (f'{name}: relative error {row["rel_err"]:.2e} (class scores {row["score_err"]:.2e}), same class on '
            f'{agree} of {row["confident"]} anchors PyTorch scores above {CONF}{kernels}')
