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
costs a PoolFormer-family model, and the benchmark's breakdown shows it. PT2E traces RIFormer's
deploy blocks in their one-pass form (models/deploy_norms.py: both norms' statistics from one
float reduction over the block input, products of statistics kept out of int8), which Inductor
compiles into a reduction and one pointwise pass that writes the residual and fc1's quantized
input; the ONNX export keeps the two GroupNorms, which ORT and OpenVINO fuse as InstanceNorm.

Which CPU an int8 model is made for (`int8_target`): x86 CPUs without VNNI/AMX (AVX2, and
AVX-512 before Cascade Lake / Zen 4) multiply u8 activations by s8 weights with vpmaddubsw,
which adds each pair of products into a *saturating 16-bit* sum: 2 x 255 x 127 = 64770 does not
fit, so full 8-bit activations and weights can clip (measured: PT2E kernels 2.6 % off their own
reference graph, ONNX Runtime 2.2 %; docs/RESULTS.md). VNNI/AMX (and Arm) accumulate in 32
bits. So each route quantizes for the kind of CPU it is made for, by default the one it runs on
(its kernels' ISA: `models.cpu.int8_saturates`, which honours oneDNN's ONEDNN_MAX_CPU_ISA for
PT2E), or the kind named by RIFORMER_INT8_TARGET (`vnni` or `no-vnni`):

* `no-vnni`: PT2E takes 7-bit activations (the X86 quantizer's `reduce_range`: 2 x 127 x 128 fits),
  ONNX Runtime 7-bit weights (`reduce_range`: 2 x 255 x 64 fits; its documentation's advice for
  non-VNNI x86), OpenVINO NNCF's overflow fix on every layer (half the weight range). No sum can
  clip: the kernels compute what they compute with VNNI, at the cost of one bit of resolution.
* `vnni`: full 8-bit everywhere (NNCF: its default, the fix on the first layer only).

The choice is recorded in the model (PT2E: the activations' quant range itself; ONNX:
`metadata_props`; OpenVINO: `rt_info`), and running a `vnni` model where the kernels saturate
warns (`Int8TargetWarning`).
"""
import contextlib
import os
import warnings
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .errors import UsageError

ROUTES = ('pt2e', 'onnxruntime', 'openvino')
INT8_TARGETS = ('vnni', 'no-vnni')
TARGET_ENV = 'RIFORMER_INT8_TARGET'
# What each route does for each target (said in the commands' output and the docs).
SETTINGS = {
    ('pt2e', 'vnni'): 'full 8-bit activations',
    ('pt2e', 'no-vnni'): '7-bit activations (reduce_range)',
    ('onnxruntime', 'vnni'): 'full 8-bit weights',
    ('onnxruntime', 'no-vnni'): '7-bit weights (reduce_range)',
    ('openvino', 'vnni'): "NNCF's default overflow fix (first layer only)",
    ('openvino', 'no-vnni'): "NNCF's overflow fix on every layer (7-bit weights)",
}
METADATA_KEY = 'riformer.int8_target'


class Int8TargetWarning(UserWarning):
    """An int8 model made for CPUs with VNNI runs where the int8 kernels saturate."""


def int8_target(runtime: str, target: Optional[str] = None) -> str:
    """The kind of CPU an int8 model of `runtime` ('pt2e', 'onnxruntime', 'openvino') is made
    for: `target`, else RIFORMER_INT8_TARGET, else this CPU's: 'no-vnni' where `runtime`'s int8
    kernels add products into saturating 16-bit sums (`models.cpu.int8_saturates`), 'vnni'
    where they accumulate in 32 bits (VNNI, AMX, Arm)."""
    from .cpu import int8_saturates
    target = target or os.environ.get(TARGET_ENV) or ('no-vnni' if int8_saturates(runtime) else 'vnni')
    if target not in INT8_TARGETS:
        raise UsageError(f'int8 target {target!r}: use one of {", ".join(INT8_TARGETS)} ({TARGET_ENV})')
    return target


def describe_target(runtime: str, target: str) -> str:
    """One line: what `runtime`'s int8 model made for `target` CPUs quantizes to."""
    kind = 'CPUs with VNNI/AMX' if target == 'vnni' else 'CPUs without VNNI (16-bit pair sums)'
    return f'{runtime} int8 for {kind}: {SETTINGS[runtime, target]}'


def _warn_if_saturates(made_for: Optional[str], runtime: str, where: str) -> None:
    from .cpu import int8_saturates
    if made_for == 'vnni' and int8_saturates(runtime):
        warnings.warn(f'{where}: int8 model made for CPUs with VNNI (full 8-bit); {runtime}\'s int8 kernels on this '
                      f'CPU have no VNNI/AMX and add products into saturating 16-bit sums (errors of a few %); '
                      f're-quantize on this CPU or with {TARGET_ENV}=no-vnni', Int8TargetWarning, stacklevel=3)


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


def quantize_pt2e(model: nn.Module, batches: Sequence[torch.Tensor], target: Optional[str] = None) -> torch.fx.GraphModule:
    """The PT2E int8 model of `model` (fp32, eval mode; not changed), calibrated on `batches`:
    a GraphModule with quantize / dequantize around each convolution (the reference form:
    runs anywhere, in fp32 arithmetic, for checking). Dynamic batch size. `target`: the kind of
    CPU it is made for (`int8_target`; 'no-vnni': 7-bit activations)."""
    _require('torchao')
    import copy
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)
    if not batches:
        raise UsageError('calibration needs at least one batch of images')
    target = int8_target('pt2e', target)
    model = _reference(copy.deepcopy(model).float())
    example = (batches[0].float(),)
    batch = torch.export.Dim.DYNAMIC
    with torch.no_grad():
        exported = torch.export.export(model, example, dynamic_shapes=({0: batch},)).module()
        config = get_default_x86_inductor_quantization_config(reduce_range=target == 'no-vnni')
        # No int8 multiplications: the X86 quantizer would quantize every product of two tensors of
        # one shape, i.e. the deploy blocks' one-pass norm statistics (models/deploy_norms.py),
        # whose inputs must stay in float; the models have no other such product.
        quantizer = X86InductorQuantizer().set_global(config).set_function_type_qconfig(torch.mul, None)
        prepared = prepare_pt2e(exported, quantizer)
        for images in batches:
            prepared(images.float())
        return convert_pt2e(prepared)


def pt2e_target(converted: torch.fx.GraphModule) -> Optional[str]:
    """The kind of CPU a PT2E model was made for, read from its graph: 'no-vnni' when every
    activation is quantized to 7 bits (quant_max 127), 'vnni' when one takes the full uint8
    range; None without quantized activations."""
    q = torch.ops.quantized_decomposed
    highs = [n.args[4] for n in converted.graph.nodes
             if n.op == 'call_function' and n.target in (q.quantize_per_tensor.default, q.quantize_per_tensor.tensor)
             and len(n.args) > 5 and n.args[5] == torch.uint8]
    if not highs:
        return None
    return 'vnni' if max(highs) > 127 else 'no-vnni'


def lower_int8(converted: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """The PT2E model lowered to oneDNN's int8 operators without compiling (torchao's x86
    lowering): eager int8 convolutions, for inputs of `example`'s shape only."""
    from torchao.quantization.pt2e.lowering import lower_pt2e_quantized_to_x86
    _warn_if_saturates(pt2e_target(converted), 'pt2e', 'lower_int8')
    with torch.no_grad():
        return lower_pt2e_quantized_to_x86(converted, (example,))


def load_pt2e(path) -> torch.fx.GraphModule:
    """A PT2E int8 program saved by `tools/export.py --format pt2e`, as a module (compile it with
    `compile_int8`), in any process (the int8 operators are registered first). Safe: nothing
    from the file is unpickled (models/pt2_read.py: a file naming pickled constants is refused,
    torch's fallback to unpickling objects is forced off)."""
    from .pt2_read import read_program
    module = read_program(path)
    _warn_if_saturates(pt2e_target(module), 'pt2e', str(path))
    return module


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
    _warn_if_saturates(pt2e_target(converted), 'pt2e', 'compile_int8')
    return Frozen(converted)


# ---------------------------------------------------------------------------------------------
# ONNX: export, ONNX Runtime static QDQ quantization, sessions


class TupleOutputs(nn.Module):
    """`body` with its list of feature maps as a tuple: exporters name one output per map."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return tuple(self.body(x))


def export_onnx(model: nn.Module, path, image_size: int, in_chans: int = 3, opset: int = 17,
                dynamic_size: bool = False) -> Path:
    """The fp32 ONNX file of `model`: input 'input', output 'output' (or 'out0', 'out1', ... for a
    backbone that returns a list of maps); the batch is dynamic, and with `dynamic_size` the
    height and width too."""
    model = _reference(model).float()
    path = Path(path)
    example = torch.zeros(1, in_chans, image_size, image_size)
    with torch.no_grad():
        outputs = model(example)
    several = isinstance(outputs, (list, tuple)) and len(outputs) > 1
    names = [f'out{i}' for i in range(len(outputs))] if several else ['output']
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'} if dynamic_size else {0: 'batch'}}
    for name in names:
        axes[name] = {0: 'batch', 2: 'h', 3: 'w'} if several else {0: 'batch'}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')   # the TorchScript-based exporter's deprecation notice
        # The TorchScript-based exporter handles dynamic_axes without onnxscript (not a dependency).
        torch.onnx.export(TupleOutputs(model) if several else model, (example,), str(path),
                          input_names=['input'], output_names=names, opset_version=opset, dynamo=False,
                          dynamic_axes=axes)
    return path


class _Reader:
    """ORT's CalibrationDataReader protocol over our batches."""

    def __init__(self, batches, name='input'):
        self.items = iter([{name: b.float().numpy()} for b in batches])

    def get_next(self):
        return next(self.items, None)

    def rewind(self):   # pragma: no cover - ORT calls it for some calibration methods only
        pass


def quantize_onnx(fp32_path, out_path, batches: Sequence[torch.Tensor], target: Optional[str] = None) -> Path:
    """ONNX Runtime's static int8 quantization of the fp32 ONNX file, QDQ format: per-channel
    int8 weights, uint8 activations, calibrated (min-max) on `batches`; Conv and Gemm only
    (GroupNorm, GELU and the adds stay fp32: see the module docstring). `target`: the kind of CPU
    it is made for (`int8_target`; 'no-vnni': 7-bit weights), recorded in the file's metadata."""
    _require('onnxruntime')
    import logging
    import tempfile
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    target = int8_target('onnxruntime', target)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        pre = os.path.join(tmp, 'pre.onnx')
        quant_pre_process(str(fp32_path), pre)
        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR   # one 'Axis 1 is out-of-range' line per norm weight
        try:
            quantize_static(pre, str(out_path), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=['Conv', 'Gemm'], reduce_range=target == 'no-vnni')
        finally:
            root.setLevel(level)
    record_onnx_target(out_path, target)
    return out_path


def record_onnx_target(path, target: str) -> None:
    """Write the int8 target into the ONNX file's metadata_props (`riformer.int8_target`)."""
    import onnx
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = target
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def onnx_target(model) -> Optional[str]:
    """The kind of CPU an int8 ONNX model (an onnx.ModelProto) was made for: its recorded
    `riformer.int8_target`, else read from its int8 weights (7-bit: 'no-vnni', full range: 'vnni');
    None for a model without int8 weights."""
    from onnx import TensorProto, numpy_helper
    props = {p.key: p.value for p in model.metadata_props}
    if props.get(METADATA_KEY) in INT8_TARGETS:
        return props[METADATA_KEY]
    widest = None
    for init in model.graph.initializer:
        if init.data_type == TensorProto.INT8 and len(init.dims) >= 2:     # weights, not zero points
            values = numpy_helper.to_array(init)
            widest = max(widest or 0, int(abs(values.astype('int16')).max()))
    if widest is None:
        return None
    return 'vnni' if widest > 64 else 'no-vnni'


def ort_session(path, threads: Optional[int] = None):
    """An ONNX Runtime CPU session with all graph optimizations, `threads` intra-op threads and
    no busy-waiting (ORT's spinning would steal the cores from whatever runs next)."""
    ort = _require('onnxruntime')
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    session = _ort_open(ort, path, options)
    try:
        import onnx
    except ImportError:          # pragma: no cover - onnx comes with the export extra
        return session
    _warn_if_saturates(onnx_target(onnx.load(str(path), load_external_data=False)), 'onnxruntime', str(path))
    return session


def _ort_open(ort, path, options):
    """ONNX Runtime's session of `path`; a file it refuses (not ONNX, an initializer whose
    external data lies outside the model's folder, an unknown operator) is one line naming it."""
    from .errors import CheckpointError
    try:
        return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as e:       # ORT's Fail / InvalidGraph / InvalidProtobuf / NoSuchFile ...
        text = str(e).strip().splitlines()
        raise CheckpointError(f'{path}: ONNX Runtime does not load it '
                              f'({text[0][:300] if text else type(e).__name__})') from None


def ort_runner(session) -> Callable[[torch.Tensor], torch.Tensor]:
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.float().contiguous().numpy()})[0])


# ---------------------------------------------------------------------------------------------
# OpenVINO (+ NNCF)


def to_openvino(onnx_path):
    """The OpenVINO model of an fp32 ONNX file."""
    ov = _require('openvino')
    return ov.convert_model(str(onnx_path))


def quantize_openvino(ov_model, batches: Sequence[torch.Tensor], target: Optional[str] = None):
    """NNCF's int8 post-training quantization of an OpenVINO model, calibrated on `batches`.
    `target`: the kind of CPU it is made for (`int8_target`; 'no-vnni': NNCF's overflow fix on
    every layer), recorded in the model's rt_info."""
    nncf = _require('nncf')
    nncf.set_log_level(40)       # its progress bars and notes would drown the command's output
    target = int8_target('openvino', target)
    data = [b.float().numpy() for b in batches]
    int8 = nncf.quantize(ov_model, nncf.Dataset(data), subset_size=sum(len(b) for b in data),
                         advanced_parameters=nncf_parameters(target))
    int8.set_rt_info(target, ['riformer', 'int8_target'])
    return int8


def nncf_parameters(target: str):
    """NNCF's advanced parameters for `target`: the overflow fix on every layer for 'no-vnni',
    its default (None) for 'vnni'."""
    if target != 'no-vnni':
        return None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    return AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)


def openvino_target(ov_model) -> Optional[str]:
    """The int8 target recorded in an OpenVINO model's rt_info, None where there is none."""
    if ov_model.has_rt_info(['riformer', 'int8_target']):
        value = ov_model.get_rt_info(['riformer', 'int8_target']).astype(str)
        return value if value in INT8_TARGETS else None
    return None


# 'f32' keeps fp32 arithmetic: on CPUs with AVX512-BF16/AMX OpenVINO would otherwise run an fp32
# model in bf16 without being asked (its default inference precision there).
OV_PRECISIONS = {'fp32': 'f32', 'bf16': 'bf16'}


def openvino_refusal() -> Optional[str]:
    """Why OpenVINO cannot run in this process, or None. oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA),
    which stands in for another CPU in PyTorch, reaches only part of OpenVINO's CPU plugin: with
    AVX2 on an AVX-512 CPU its bf16 models gave empty outputs and its int8 models crashed the
    process (a segfault, no Python error)."""
    from .cpu import onednn_isa_cap
    cap = onednn_isa_cap()
    if cap:
        return (f'OpenVINO does not follow ONEDNN_MAX_CPU_ISA={cap} (its int8 kernels crash under it); '
                f'unset ONEDNN_MAX_CPU_ISA for OpenVINO')
    return None


def openvino_runner(ov_model, threads: Optional[int] = None, precision: Optional[str] = 'fp32'):
    """A compiled OpenVINO CPU model as a callable tensor -> tensor. `precision`: 'fp32' or
    'bf16' for fp32 models; None for int8 models (OpenVINO picks the int8 kernels)."""
    refusal = openvino_refusal()
    if refusal:
        raise UsageError(refusal)
    ov = _require('openvino')
    config = {'INFERENCE_NUM_THREADS': threads or torch.get_num_threads(), 'PERFORMANCE_HINT': 'LATENCY'}
    _warn_if_saturates(openvino_target(ov_model), 'openvino', 'openvino_runner')
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


@contextlib.contextmanager
def third_party_int8(target: Optional[str] = None, log=print):
    """Within: int8 exports made by other code (ultralytics' `quantize=8`) quantize for `target`
    like ours: `onnxruntime.quantization.quantize_static` gets `reduce_range` for 'no-vnni' (7-bit
    weights) and records the target in the file's metadata; `nncf.quantize` gets the overflow fix
    on every layer for 'no-vnni' and records it in rt_info. `log` says what was chosen."""
    patches = []
    try:
        import onnxruntime.quantization as ortq
    except ImportError:
        ortq = None
    if ortq is not None:
        ort_target = int8_target('onnxruntime', target)
        original_ort = ortq.quantize_static

        def quantize_static(model_input, model_output, *args, **kwargs):
            kwargs.setdefault('reduce_range', ort_target == 'no-vnni')
            made_for = 'no-vnni' if kwargs['reduce_range'] else 'vnni'
            log(describe_target('onnxruntime', made_for))
            result = original_ort(model_input, model_output, *args, **kwargs)
            record_onnx_target(model_output, made_for)
            return result
        patches.append((ortq, 'quantize_static', original_ort, quantize_static))
    try:
        import nncf
    except ImportError:
        nncf = None
    if nncf is not None:
        ov_target = int8_target('openvino', target)
        original_nncf = nncf.quantize

        def quantize(model, *args, **kwargs):
            if kwargs.get('advanced_parameters') is None:
                kwargs['advanced_parameters'] = nncf_parameters(ov_target)
            log(describe_target('openvino', ov_target))
            result = original_nncf(model, *args, **kwargs)
            if hasattr(result, 'set_rt_info'):
                result.set_rt_info(ov_target, ['riformer', 'int8_target'])
            return result
        patches.append((nncf, 'quantize', original_nncf, quantize))
    for module, name, _, patched in patches:
        setattr(module, name, patched)
    try:
        yield
    finally:
        for module, name, original, _ in patches:
            setattr(module, name, original)


def int8_note() -> str:
    """Whether this CPU has int8 dot-product instructions (VNNI / AMX) or adds int8 products into
    saturating 16-bit sums, and what each int8 route therefore quantizes to here."""
    from .cpu import int8_dot_products, onednn_isa_cap
    found = int8_dot_products('onnxruntime')
    head = f'native int8 dot products: {found}' if found else \
        'no VNNI/AMX: int8 convolutions add u8 x s8 products in pairs into saturating 16-bit sums'
    if found and not int8_dot_products('pt2e'):
        head += f' (PT2E: none under ONEDNN_MAX_CPU_ISA={onednn_isa_cap()})'
    try:
        routes = '; '.join(f'{r} {SETTINGS[r, int8_target(r)]}' for r in ROUTES)
    except UsageError as e:
        routes = str(e)
    return f'{head}; int8 models made here: {routes}'


def int8_isa(runtime: str) -> str:
    """The int8 instructions `runtime`'s kernels run on here, for tables: 'avx512_vnni' (or
    'amx_int8,avx512_vnni'), without VNNI/AMX 'avx2' or 'avx512' (vpmaddubsw: 16-bit pair sums),
    off x86 the machine's name."""
    from .cpu import cpu_flags, int8_dot_products, int8_saturates, onednn_isa_cap
    found = int8_dot_products(runtime)
    if found:
        return found
    if not int8_saturates(runtime):
        import platform
        return platform.machine().lower()
    cap = onednn_isa_cap() if runtime == 'pt2e' else ''
    wide = 'avx512bw' in cpu_flags() and (not cap or cap.startswith('AVX512'))
    return 'avx512' if wide else 'avx2'


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
