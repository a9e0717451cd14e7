"""int8 post-training static quantization of a deploy model, and the CPU runtimes it runs in.
Three maintained routes, each calibrated on a few hundred of the user's images
(`distill.calibration.calibration_batches`):

* **PT2E** (`quantize_pt2e`): torch.export, then torchao's PT2E flow with the X86 Inductor
  quantizer (`torch.ao.quantization.quantize_pt2e` is gone from torch 2.14; it lives in
  `torchao.quantization.pt2e`): per-channel int8 weights, per-tensor uint8 activations,
  observers calibrated on the images. `compile_int8` runs it through Inductor with freezing
  (oneDNN int8 convolutions with fused post-ops, VNNI / AMX where the CPU has them);
  `lower_int8` is torchao's eager lowering to the same oneDNN int8 kernels (no compile, fixed
  shape: for checks on any CPU).
* **ONNX Runtime** (`quantize_onnx`): the fp32 ONNX export, ORT's shape pre-processing, then
  `quantize_static` in QDQ format (per-channel int8 weights, uint8 activations).
* **OpenVINO** (`quantize_openvino`): the ONNX export converted by `openvino.convert_model`,
  then NNCF's `nncf.quantize` (its default mixed preset).

Where GroupNorm stays in floating point, and why: RIFormer's deploy block is
x + GN1(x); x + fc2(GELU(fc1(GN2(x)))). Every route quantizes the convolutions and the linear
head (all the arithmetic) and leaves GroupNorm(1) in fp32: its per-sample mean and variance
over a whole C x H x W map need float accumulation, no int8 GroupNorm kernel exists in
oneDNN, ORT or OpenVINO's CPU plugin, and the quantizers do not annotate it (PT2E's X86
quantizer has no GroupNorm pattern; ORT is asked for Conv and Gemm only, so GroupNorm, exported
as InstanceNormalization + Mul + Add, GELU's Erf and the residual adds stay fp32; NNCF keeps
normalizations in float). So each block dequantizes before GN1 and GN2 and quantizes their
outputs again in front of fc1: that int8 <-> fp32 traffic around GroupNorm is what int8
costs a PoolFormer-family model, and the benchmark's breakdown shows it.
"""
import os
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .errors import UsageError

ROUTES = ('pt2e', 'onnxruntime', 'openvino')


def _require(module: str, extra: str = 'export'):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f'{module} is not installed: pip install -e ".[{extra}]"') from None


def _reference(model: nn.Module) -> nn.Module:
    # Tracers must see standard ops: the fused oneDNN path of the deploy blocks would hide
    # the convolutions from the quantizers (it is skipped under tracing; this makes it certain).
    from .poolformer_fused import fused_blocks
    for block in fused_blocks(model):
        block.fused = False
    return model.eval()


# ---------------------------------------------------------------------------------------------
# PT2E (torchao) + Inductor


def quantize_pt2e(model: nn.Module, batches: Sequence[torch.Tensor]) -> torch.fx.GraphModule:
    """The PT2E int8 model of `model` (fp32, eval mode; not changed), calibrated on `batches`:
    a GraphModule with quantize / dequantize around each convolution (the reference form:
    runs anywhere, in fp32 arithmetic, for checking). Dynamic batch size."""
    _require('torchao')
    import copy
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    if not batches:
        raise UsageError('calibration needs at least one batch of images')
    model = _reference(copy.deepcopy(model).float())
    example = (batches[0].float(),)
    batch = torch.export.Dim.DYNAMIC
    with torch.no_grad():
        exported = torch.export.export(model, example, dynamic_shapes=({0: batch},)).module()
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        for images in batches:
            prepared(images.float())
        return convert_pt2e(prepared)


def lower_int8(converted: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """The PT2E model lowered to oneDNN's int8 operators without compiling (torchao's x86
    lowering): eager int8 convolutions, for inputs of `example`'s shape only."""
    from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86
    with torch.no_grad():
        return lower_pt2e_quantized_to_x86(converted, (example,))


def load_pt2e(path) -> torch.fx.GraphModule:
    """A PT2E int8 program saved by `tools/export.py --format pt2e`, as a module (compile it with
    `compile_int8`), in any process (the int8 operators are registered first). Safe: nothing
    from the file is unpickled (models/pt2_read.py: a file naming pickled constants is refused,
    torch's fallback to unpickling objects is forced off)."""
    from .pt2_read import read_program
    return read_program(path)


class Frozen:
    """`torch.compile(module)` called with Inductor's freezing on (constant-folded, prepacked
    weights: what Inductor needs to emit oneDNN int8 convolutions, and faster for fp32 CPU
    inference too), under inference mode. The first call compiles."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.compiled = torch.compile(module)

    def __call__(self, x):
        import torch._inductor.config as inductor_config
        with inductor_config.patch(freezing=True), torch.inference_mode():
            return self.compiled(x)


def compile_int8(converted: torch.fx.GraphModule) -> Frozen:
    """The PT2E model compiled by Inductor with freezing: the int8 deploy path."""
    return Frozen(converted)


# ---------------------------------------------------------------------------------------------
# ONNX: export, ONNX Runtime static QDQ quantization, sessions


def export_onnx(model: nn.Module, path, image_size: int, in_chans: int = 3, opset: int = 17) -> Path:
    """The fp32 ONNX file of `model` (dynamic batch; input 'input', output 'output')."""
    model = _reference(model).float()
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')   # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, in_chans, image_size, image_size),), str(path),
                          input_names=['input'], output_names=['output'], opset_version=opset, dynamo=False,
                          dynamic_axes={'input': {0: 'batch'}, 'output': {0: 'batch'}})
    return path


class _Reader:
    """ORT's CalibrationDataReader protocol over our batches."""

    def __init__(self, batches, name='input'):
        self.items = iter([{name: b.float().numpy()} for b in batches])

    def get_next(self):
        return next(self.items, None)

    def rewind(self):   # pragma: no cover - ORT calls it for some calibration methods only
        pass


def quantize_onnx(fp32_path, out_path, batches: Sequence[torch.Tensor]) -> Path:
    """ONNX Runtime's static int8 quantization of the fp32 ONNX file, QDQ format: per-channel
    int8 weights, uint8 activations, calibrated (min-max) on `batches`; Conv and Gemm only
    (GroupNorm, GELU and the adds stay fp32: see the module docstring)."""
    _require('onnxruntime')
    import logging
    import tempfile
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, 'pre.onnx')
        quant_pre_process(str(fp32_path), pre)
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR   # one 'Axis 1 is out-of-range' line per norm weight
        try:
            quantize_static(pre, str(out_path), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=['Conv', 'Gemm'])
        finally:
            root.setLevel(level)
    return out_path


def ort_session(path, threads: Optional[int] = None):
    """An ONNX Runtime CPU session with all graph optimizations, `threads` intra-op threads and
    no busy-waiting (ORT's spinning would steal the cores from whatever runs next)."""
    ort = _require('onnxruntime')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def ort_runner(session) -> Callable[[torch.Tensor], torch.Tensor]:
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.float().contiguous().numpy()})[0])


# ---------------------------------------------------------------------------------------------
# OpenVINO (+ NNCF)


def to_openvino(onnx_path):
    """The OpenVINO model of an fp32 ONNX file."""
    ov = _require('openvino')
    return ov.convert_model(str(onnx_path))


def quantize_openvino(ov_model, batches: Sequence[torch.Tensor]):
    """NNCF's int8 post-training quantization of an OpenVINO model, calibrated on `batches`."""
    nncf = _require('nncf')
    nncf.set_log_level(40)       # its progress bars and notes would drown the command's output
    data = [b.float().numpy() for b in batches]
    return nncf.quantize(ov_model, nncf.Dataset(data), subset_size=sum(len(b) for b in data))


# 'f32' keeps fp32 arithmetic: on CPUs with AVX512-BF16/AMX OpenVINO would otherwise run an fp32
# model in bf16 without being asked (its default inference precision there).
OV_PRECISIONS = {'fp32': 'f32', 'bf16': 'bf16'}


def openvino_runner(ov_model, threads: Optional[int] = None, precision: Optional[str] = 'fp32'):
    """A compiled OpenVINO CPU model as a callable tensor -> tensor. `precision`: 'fp32' or
    'bf16' for fp32 models; None for int8 models (OpenVINO picks the int8 kernels)."""
    ov = _require('openvino')
    config = {'INFERENCE_NUM_THREADS': threads or torch.get_num_threads(), 'PERFORMANCE_HINT': 'LATENCY'}
    if precision is not None:
        config['INFERENCE_PRECISION_HINT'] = OV_PRECISIONS[precision]
    compiled = ov.Core().compile_model(ov_model, 'CPU', config)
    request = compiled.create_infer_request()
    return lambda x: torch.from_numpy(request.infer([x.float().contiguous().numpy()])[0].copy())


def save_openvino(ov_model, path) -> Path:
    """An OpenVINO IR (`.xml` + `.bin`), weights kept in their precision (no fp16 compression)."""
    ov = _require('openvino')
    path = Path(path)
    ov.save_model(ov_model, str(path), compress_to_fp16=False)
    return path


def int8_note() -> str:
    """Whether this CPU has int8 dot-product instructions (VNNI / AMX) or emulates them."""
    from .cpu import cpu_int8_support
    found = cpu_int8_support()
    return f'native int8 dot products: {found}' if found else \
        'no VNNI/AMX: int8 convolutions run on AVX2 multiply-adds, usually little faster than fp32'


def describe_layers(converted: torch.fx.GraphModule) -> Tuple[Dict[str, int], Dict[str, int]]:
    """Which operators of a PT2E model take int8 (dequantized) inputs and which stay in
    floating point, as counts per aten operator ({'conv2d': 16, ...}, {'group_norm': 12, ...})."""
    from collections import Counter
    q = torch.ops.quantized_decomposed
    dq = {q.dequantize_per_tensor.default, q.dequantize_per_channel.default}
    quantized, floating = Counter(), Counter()
    for node in converted.graph.nodes:
        if node.op != 'call_function' or 'quantize' in str(node.target):
            continue
        inputs = [a for a in node.args if isinstance(a, torch.fx.Node)]
        kind = str(node.target).split('.')[1] if str(node.target).startswith('aten.') else str(node.target)
        (quantized if inputs and all(a.target in dq for a in inputs[:1]) else floating)[kind] += 1
    return dict(quantized), dict(floating)
