#!/usr/bin/env python
"""Export a deploy backbone: ONNX, TorchScript, mmpretrain's RIFormer layout, or a deploy file.

    python tools/export.py riformer_s12.deploy.safetensors --format onnx [--features --out-indices 1 2 3]
    python tools/export.py riformer_s12.deploy.safetensors --format torchscript
    python tools/export.py riformer_s12.deploy.safetensors --format mmpretrain        # for mmdet / mmpretrain
    python tools/export.py fasternet_t0 --weights fasternet_t0.pth --format deploy
    python tools/export.py riformer_s12.deploy.safetensors --format openvino          # OpenVINO IR (.xml + .bin)
    python tools/export.py riformer_s12.deploy.safetensors --format torchscript --dtype bf16
    python tools/export.py riformer_s12.deploy.safetensors --format onnx --int8 RECIPE_OR_FOLDER   # ORT QDQ int8
    python tools/export.py riformer_s12.deploy.safetensors --format openvino --int8 RECIPE_OR_FOLDER   # NNCF int8
    python tools/export.py riformer_s12.deploy.safetensors --format pt2e --int8 RECIPE_OR_FOLDER   # torchao PT2E int8

SOURCE: a deploy checkpoint (tools/reparam.py, or an EfficientViT/FasterNet deploy file written
by `--format deploy`), or an EfficientViT/FasterNet timm name with optional local `--weights`.
ONNX has dynamic batch and spatial size; ONNX, OpenVINO and TorchScript files are checked against
PyTorch (ONNX Runtime / OpenVINO's CPU plugin in f32 / torch.jit.load) at two input sizes and kept
only if they agree within --tol; the share of inputs with the same prediction is printed too.

bf16 (`--dtype bf16`, TorchScript): the bf16 deploy form traced, for CPUs with AVX512-BF16/AMX
(the command says where bf16 would be emulated); checked within --tol, default 3e-2.
int8 (`--int8 DATA`: a recipe, whose training split is used, or a folder of images): post-training
static quantization calibrated on --calib-images images (models/quantize.py: ONNX Runtime QDQ,
OpenVINO NNCF, or torchao's PT2E program saved with torch.export.save, which
`models.quantize.load_pt2e(f)` reopens safely and `models.quantize.compile_int8` compiles). int8 files
are checked against the fp32 PyTorch model on 64 further images of DATA, not random inputs
(calibrated ranges only mean something on real images): relative error within --tol (default
0.25) and the share of the same predictions, printed. GroupNorm stays fp32 in every int8 file.
"""
import sys
import warnings
from pathlib import Path

from . import Parser, one_line_errors

# torch and models are imported where they are used, after the arguments are parsed: --help and
# argument errors in a fraction of a second instead of the seconds torch takes.

FORMATS = ('onnx', 'torchscript', 'mmpretrain', 'deploy', 'openvino', 'pt2e')
SUFFIX = {'onnx': '.onnx', 'torchscript': '.torchscript.pt', 'mmpretrain': '.mmpretrain.pth',
          'deploy': '.deploy.safetensors', 'openvino': '.xml', 'pt2e': '.pt2'}
CHECK_IMAGES = 64      # held-out images of --int8 DATA that int8 files are checked on


def load_source(source, weights=None, features=False, out_indices=None):
    """(model, name) for a deploy checkpoint path or an efficient backbone name."""
    import models
    from models import UsageError
    from models.efficient import EFFICIENT_NAMES
    if source in models.ARCHS:
        raise UsageError(f'{source}: a RIFormer is exported from its deploy checkpoint (tools/reparam.py), not a name')
    model = models.load_model(source, deploy=True, features_only=features, out_indices=out_indices, weights=weights)
    if source in EFFICIENT_NAMES:
        return model, source
    return model, models.read_metadata(source).get('arch') or models.read_checkpoint(source).config.arch


def _outputs(y):
    return [t.detach() for t in (y if isinstance(y, (list, tuple)) else [y])]


def check(reference, run, sizes, batch, in_chans, tol, inputs=None, agreement=None):
    """Worst relative error of `run(x)` against `reference(x)` over the input sizes (random
    inputs) or over `inputs` (a list of image batches). With `agreement` (a list), the share of
    inputs whose argmax matches is appended to it (%, for classifiers)."""
    import torch
    import models
    from models import CheckpointError
    worst, same, total = 0., 0, 0
    if inputs is None:
        inputs = [torch.randn(batch + i, in_chans, size, size, generator=torch.Generator().manual_seed(i))
                  for i, size in enumerate(sizes)]
    for x in inputs:
        with torch.no_grad():
            expected = [t.float() for t in _outputs(reference(x))]
        got = [torch.as_tensor(t).float() for t in run(x)]
        if len(got) != len(expected):
            raise CheckpointError(f'exported model gives {len(got)} outputs, PyTorch {len(expected)}')
        for a, b in zip(expected, got):
            if tuple(a.shape) != tuple(b.shape):
                raise CheckpointError(f'exported output shape {tuple(b.shape)} != PyTorch {tuple(a.shape)} '
                                      f'at {x.shape[-1]}px')
            worst = max(worst, models.relative_error(a, b))
        if len(expected) == 1 and expected[0].dim() == 2:
            same += int((expected[0].argmax(1) == got[0].argmax(1)).sum())
            total += len(expected[0])
    if agreement is not None and total:
        agreement.append(100. * same / total)
    if not worst <= tol:
        raise CheckpointError(f'export check failed: max relative error {worst:.3g} > tol {tol:g}')
    return worst


def export_onnx(model, out, size, in_chans, opset):
    """The ONNX export (any input size, one output per feature map), checked with ONNX Runtime."""
    import torch
    from models import quantize
    quantize.export_onnx(model, out, size, in_chans, opset, dynamic_size=True)

    def run(x):
        import onnxruntime as ort
        session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
        return [torch.from_numpy(a) for a in session.run(None, {'input': x.numpy()})]
    return run


def export_openvino(model, out, size, in_chans, opset, int8_batches=None):
    """OpenVINO IR through the ONNX export (OpenVINO reads it directly); with `int8_batches`,
    NNCF's int8 quantization calibrated on them. Checked with OpenVINO's CPU plugin in f32."""
    import tempfile
    from models import quantize
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / 'model.onnx'
        export_onnx(model, onnx_path, size, in_chans, opset)
        ov_model = quantize.to_openvino(onnx_path)
    if int8_batches is not None:
        ov_model = quantize.quantize_openvino(ov_model, int8_batches)
    quantize.save_openvino(ov_model, out)
    import openvino as ov
    loaded = ov.Core().read_model(str(out))
    run = quantize.openvino_runner(loaded, precision=None if int8_batches is not None else 'fp32')
    return lambda x: [run(x)]


def export_onnx_int8(model, out, size, in_chans, opset, batches):
    """ONNX Runtime's static QDQ int8 model of the fp32 ONNX export."""
    import torch
    import tempfile
    from models import quantize
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / 'model.onnx'
        export_onnx(model, fp32, size, in_chans, opset)
        quantize.quantize_onnx(fp32, out, batches)
    session = quantize.ort_session(out)
    name = session.get_inputs()[0].name
    return lambda x: [torch.from_numpy(a) for a in session.run(None, {name: x.numpy()})]


def export_pt2e(model, out, batches):
    """torchao's PT2E int8 program, saved with torch.export.save (dynamic batch); checked as
    reloaded, in its reference form (quantize / dequantize around fp32 convolutions)."""
    import torch
    from models import quantize
    converted = quantize.quantize_pt2e(model, batches)
    program = torch.export.export(converted, (batches[0],), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, str(out))
    loaded = quantize.load_pt2e(out)
    return lambda x: _outputs(loaded(x))


def export_torchscript(model, out, size, in_chans):
    import torch
    from models.quantize import TupleOutputs
    # Traced: every supported backbone is a static graph of convs and norms; checked below at a
    # second input size so a shape baked into the trace would be caught.
    wrapped = TupleOutputs(model) if isinstance(model(torch.zeros(1, in_chans, size, size)), list) else model
    traced = torch.jit.trace(wrapped, torch.zeros(1, in_chans, size, size), check_trace=False)
    traced.save(str(out))
    loaded = torch.jit.load(str(out))
    return lambda x: _outputs(loaded(x))


def build_parser() -> Parser:
    parser = Parser(description=__doc__.split('\n\n')[0])
    parser.add_argument('source', help='deploy checkpoint or efficient backbone name')
    parser.add_argument('--format', required=True, choices=FORMATS, help='what to write: ' + ', '.join(FORMATS))
    parser.add_argument('-o', '--output', help='output file (default: next to the source / in the cwd for names)')
    parser.add_argument('--features', action='store_true', help='export stage outputs instead of logits')
    parser.add_argument('--out-indices', type=int, nargs='+', help='stages to output with --features (default: all)')
    parser.add_argument('--weights', help='local timm checkpoint for an efficient backbone name')
    parser.add_argument('--image-size', type=int, default=None,
                        help="export / check size (default 224; with --int8 a recipe's own size)")
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (onnx and openvino; default 17)')
    parser.add_argument('--dtype', default='fp32', choices=['fp32', 'bf16'],
                        help='bf16: the bf16 deploy form (--format torchscript; CPUs with AVX512-BF16/AMX)')
    parser.add_argument('--int8', metavar='DATA',
                        help='int8 post-training quantization calibrated on DATA: a recipe (its training split) '
                             'or a folder of images (--format onnx, openvino or pt2e)')
    parser.add_argument('--calib-images', type=int, default=256, help='calibration images from DATA (default 256)')
    parser.add_argument('--tol', type=float, default=None,
                        help='max relative error vs PyTorch fp32 (default 1e-4; bf16 3e-2; int8 0.25)')
    return parser


@one_line_errors
def main(argv=None):
    # torch flags the TorchScript-based exporters as deprecated; they are what needs no extra
    # packages (the dynamo ONNX exporter wants onnxscript), and every file is checked below.
    warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export.*')
    warnings.filterwarnings('ignore', message=r'.*`torch\.jit\..*` is deprecated.*')
    args = build_parser().parse_args(argv)
    from models import CheckpointError
    from models.paths import check_output, one_line_write_failure
    check_precision_args(args)
    out = output_path(args)
    check_output(written_files(out, args.format), [args.source, args.weights, args.int8])
    if args.format == 'mmpretrain':
        from models.handoff.mmpretrain import export_mmpretrain
        report = export_mmpretrain(args.source, out)
        print(f'{args.source} -> {out}\n  {report}')
        return 0
    if args.format == 'deploy':
        return write_deploy(args, out)
    model, name = load_source(args.source, args.weights, args.features, args.out_indices)
    model.eval()
    in_chans = 3
    out.parent.mkdir(parents=True, exist_ok=True)
    calib, held_out = calibration_split(args)
    size = args.image_size or (calib[0].shape[-1] if calib else 224)
    # a partial file (a full disk left a 0-byte .onnx) is no export: removed, one line
    with one_line_write_failure(out, cleanup=lambda: remove_output(out)):
        run = write_export(args, model, out, size, in_chans, calib)
    sizes = (size, size + 32)
    agreement = []
    try:
        worst = check(model, run, sizes, 1, in_chans, args.tol, inputs=held_out, agreement=agreement)
    except CheckpointError:
        remove_output(out)
        raise
    report_export(args, name, out, worst, sizes, held_out, agreement)
    return 0


def output_path(args) -> Path:
    """-o, else next to the source (in the cwd for a name), marked .int8 / .bf16 where it is."""
    out = Path(args.output) if args.output else default_output(args.source, args.format, args.features)
    if args.int8 and not args.output:
        out = out.with_name(out.name[:-len(SUFFIX[args.format])] + '.int8' + SUFFIX[args.format])
    elif args.dtype == 'bf16' and not args.output:
        out = out.with_name(out.name[:-len(SUFFIX[args.format])] + '.bf16' + SUFFIX[args.format])
    return out


def calibration_split(args):
    """(calibration batches, held-out check batches) from --int8 DATA; (None, None) without it."""
    if not args.int8:
        return None, None
    import torch
    from distill.calibration import calibration_batches
    from models import UsageError
    images = torch.cat(calibration_batches(args.int8, args.calib_images + CHECK_IMAGES, 32, args.image_size))
    if len(images) <= CHECK_IMAGES:
        raise UsageError(f'{args.int8}: {len(images)} images; int8 needs more than {CHECK_IMAGES} '
                         f'(calibration + check)')
    return list(images[:-CHECK_IMAGES].split(32)), list(images[-CHECK_IMAGES:].split(32))


def report_export(args, name: str, out: Path, worst: float, sizes, held_out, agreement):
    """What was written and how well it agrees with PyTorch fp32."""
    import models
    kind = {'int8': ' int8', 'bf16': ' bf16'}.get('int8' if args.int8 else args.dtype, '')
    print(f'{args.source} ({name}, {"features" if args.features else "classifier"}{kind}) -> {out}')
    where = (f'{CHECK_IMAGES} held-out images of {args.int8} (fp32 PyTorch)' if held_out else
             f'{sizes[0]}px (batch 1) and {sizes[1]}px (batch 2)')
    same = f', same prediction on {agreement[0]:.1f} %' if agreement else ''
    print(f'  checked against PyTorch at {where}: max relative error {worst:.2e}{same}')
    if args.dtype == 'bf16' and models.bf16_note():
        print(f'  note: {models.bf16_note()}')
    if args.int8:
        from models.quantize import int8_note
        print(f'  GroupNorm stays fp32 (models/quantize.py); this CPU: {int8_note()}')


def _copy(model):
    import copy
    return copy.deepcopy(model)


def check_precision_args(args):
    """--dtype / --int8 / --format combinations that exist, and the default tolerance."""
    from distill.errors import UsageError
    if args.int8 and args.format not in ('onnx', 'openvino', 'pt2e'):
        raise UsageError(f'--int8 is for --format onnx, openvino or pt2e, not {args.format}')
    if args.format == 'pt2e' and not args.int8:
        raise UsageError('--format pt2e writes the int8 program: give --int8 DATA (a recipe or a folder of images)')
    if args.dtype == 'bf16' and args.format != 'torchscript':
        raise UsageError('--dtype bf16 is for --format torchscript (or models.load_deploy(..., dtype="bf16") in '
                         'Python; OpenVINO picks bf16 at run time on CPUs that have it)')
    if args.int8 and args.features:
        raise UsageError('--int8 exports classifiers (its check compares predictions); drop --features')
    if args.calib_images < 1:
        raise UsageError('--calib-images must be >= 1')
    if args.tol is None:
        args.tol = 0.25 if args.int8 else 3e-2 if args.dtype == 'bf16' else 1e-4


def write_export(args, model, out, size, in_chans, calib):
    """Write the export of `model` to `out` as args ask; a function running it, for the check."""
    import torch
    import models
    with torch.no_grad():
        if args.format == 'onnx':
            return (export_onnx_int8(model, out, size, in_chans, args.opset, calib) if calib
                    else export_onnx(model, out, size, in_chans, args.opset))
        if args.format == 'openvino':
            return export_openvino(model, out, size, in_chans, args.opset, calib)
        if args.format == 'pt2e':
            return export_pt2e(model, out, calib)
        if args.dtype == 'bf16':
            return export_torchscript(models.to_bf16(_copy(model), warn=False), out, size, in_chans)
        return export_torchscript(model, out, size, in_chans)


def written_files(out: Path, fmt: str) -> list:
    """The files an export to `out` writes (OpenVINO: the .xml and its .bin)."""
    return [out, out.with_suffix('.bin')] if fmt == 'openvino' else [out]


def remove_output(out: Path):
    out.unlink(missing_ok=True)
    if out.suffix == '.xml':
        out.with_suffix('.bin').unlink(missing_ok=True)


def write_deploy(args, out):
    from models import UsageError
    from models.efficient import EFFICIENT_NAMES, create_training, save_efficient_deploy, to_deploy
    if args.source not in EFFICIENT_NAMES:
        raise UsageError(
            f'--format deploy folds an efficient backbone by name ({", ".join(EFFICIENT_NAMES)}); '
            f'RIFormer deploy files come from tools/reparam.py')
    training = create_training(args.source, num_classes=1000 if args.weights else 0, weights=args.weights)
    deploy = to_deploy(args.source, training)
    worst = check(training, lambda t: _outputs(deploy(t)), (args.image_size or 224,), 2, 3, args.tol)
    save_efficient_deploy(out, args.source, deploy, extra={
        'max_rel_error': f'{worst:.3e}', 'source': str(args.weights or 'random init')})
    print(f'{args.source} -> {out}\n  BN folded; deploy vs training max relative error {worst:.2e}')
    return 0


def default_output(source, fmt, features):
    tag = '.features' if features else ''
    path = Path(source)
    stem = path.name
    for suffix in ('.safetensors', '.pth', '.pt'):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
    if stem.endswith('.deploy') and fmt != 'deploy':
        stem = stem[:-len('.deploy')]
    return path.with_name(stem + tag + SUFFIX[fmt])


if __name__ == '__main__':
    sys.exit(main())
