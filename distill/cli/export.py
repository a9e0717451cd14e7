#!/usr/bin/env python
"""Export a deploy backbone: ONNX, TorchScript, mmpretrain's RIFormer layout, or a deploy file.

    python tools/export.py riformer_s12.deploy.safetensors --format onnx [--features --out-indices 1 2 3]
    python tools/export.py riformer_s12.deploy.safetensors --format torchscript
    python tools/export.py riformer_s12.deploy.safetensors --format mmpretrain        # for mmdet / mmpretrain
    python tools/export.py fasternet_t0 --weights fasternet_t0.pth --format deploy

SOURCE: a deploy checkpoint (tools/reparam.py, or an EfficientViT/FasterNet deploy file written
by `--format deploy`), or an EfficientViT/FasterNet timm name with optional local `--weights`.
ONNX has dynamic batch and spatial size; ONNX and TorchScript files are checked against PyTorch
(ONNX Runtime / torch.jit.load) at two input sizes and kept only if they agree within --tol.
"""
import sys
import warnings
from pathlib import Path

import torch
import torch.nn as nn

import models
from models import CheckpointError, UsageError
from models.efficient import EFFICIENT_NAMES

from . import Parser, one_line_errors

FORMATS = ('onnx', 'torchscript', 'mmpretrain', 'deploy')
SUFFIX = {'onnx': '.onnx', 'torchscript': '.torchscript.pt', 'mmpretrain': '.mmpretrain.pth',
          'deploy': '.deploy.safetensors'}


class ListToTuple(nn.Module):
    """Feature lists as tuples: exporters name one output per map."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return tuple(self.body(x))


def load_source(source, weights=None, features=False, out_indices=None):
    """(model, name) for a deploy checkpoint path or an efficient backbone name."""
    if source in models.ARCHS:
        raise UsageError(f'{source}: a RIFormer is exported from its deploy checkpoint (tools/reparam.py), not a name')
    model = models.load_model(source, deploy=True, features_only=features, out_indices=out_indices, weights=weights)
    if source in EFFICIENT_NAMES:
        return model, source
    return model, models.read_metadata(source).get('arch') or models.read_checkpoint(source).config.arch


def _outputs(y):
    return [t.detach() for t in (y if isinstance(y, (list, tuple)) else [y])]


def check(reference, run, sizes, batch, in_chans, tol):
    """Worst relative error of `run(x)` against `reference(x)` over the input sizes."""
    worst = 0.
    for i, size in enumerate(sizes):
        x = torch.randn(batch + i, in_chans, size, size, generator=torch.Generator().manual_seed(i))
        with torch.no_grad():
            expected = _outputs(reference(x))
        got = run(x)
        if len(got) != len(expected):
            raise CheckpointError(f'exported model gives {len(got)} outputs, PyTorch {len(expected)}')
        for a, b in zip(expected, got):
            if tuple(a.shape) != tuple(b.shape):
                raise CheckpointError(f'exported output shape {tuple(b.shape)} != PyTorch {tuple(a.shape)} at {size}px')
            worst = max(worst, models.relative_error(a, torch.as_tensor(b)))
    if not worst <= tol:
        raise CheckpointError(f'export check failed: max relative error {worst:.3g} > tol {tol:g}')
    return worst


def export_onnx(model, out, size, in_chans, opset):
    num_outputs = len(_outputs(model(torch.zeros(1, in_chans, size, size))))
    names = [f'out{i}' for i in range(num_outputs)] if num_outputs > 1 else ['output']
    axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
    for n in names:
        axes[n] = {0: 'batch', 2: 'h', 3: 'w'} if num_outputs > 1 else {0: 'batch'}
    # The TorchScript-based exporter handles dynamic_axes without onnxscript (not a dependency).
    torch.onnx.export(
        ListToTuple(model) if num_outputs > 1 else model, (torch.zeros(1, in_chans, size, size),), str(out),
        input_names=['input'], output_names=names, dynamic_axes=axes, opset_version=opset, dynamo=False)

    def run(x):
        import onnxruntime as ort
        session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
        return [torch.from_numpy(a) for a in session.run(None, {'input': x.numpy()})]
    return run


def export_torchscript(model, out, size, in_chans):
    # Traced: every supported backbone is a static graph of convs and norms; checked below at a
    # second input size so a shape baked into the trace would be caught.
    wrapped = ListToTuple(model) if isinstance(model(torch.zeros(1, in_chans, size, size)), list) else model
    traced = torch.jit.trace(wrapped, torch.zeros(1, in_chans, size, size), check_trace=False)
    traced.save(str(out))
    loaded = torch.jit.load(str(out))
    return lambda x: _outputs(loaded(x))


@one_line_errors
def main(argv=None):
    # torch flags the TorchScript-based exporters as deprecated; they are what needs no extra
    # packages (the dynamo ONNX exporter wants onnxscript), and every file is checked below.
    warnings.filterwarnings('ignore', message='.*legacy TorchScript-based ONNX export.*')
    warnings.filterwarnings('ignore', message=r'.*`torch\.jit\..*` is deprecated.*')
    parser = Parser(description=__doc__.split('\n\n')[0])
    parser.add_argument('source', help='deploy checkpoint or efficient backbone name')
    parser.add_argument('--format', required=True, choices=FORMATS)
    parser.add_argument('-o', '--output', help='output file (default: next to the source / in the cwd for names)')
    parser.add_argument('--features', action='store_true', help='export stage outputs instead of logits')
    parser.add_argument('--out-indices', type=int, nargs='+', help='stages to output with --features (default: all)')
    parser.add_argument('--weights', help='local timm checkpoint for an efficient backbone name')
    parser.add_argument('--image-size', type=int, default=224, help='export / check size (default 224)')
    parser.add_argument('--opset', type=int, default=17)
    parser.add_argument('--tol', type=float, default=1e-4, help='max relative error vs PyTorch (default 1e-4)')
    args = parser.parse_args(argv)
    try:
        out = Path(args.output) if args.output else default_output(args.source, args.format, args.features)
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
        with torch.no_grad():
            if args.format == 'onnx':
                run = export_onnx(model, out, args.image_size, in_chans, args.opset)
            else:
                run = export_torchscript(model, out, args.image_size, in_chans)
        sizes = (args.image_size, args.image_size + 32)
        try:
            worst = check(model, run, sizes, 1, in_chans, args.tol)
        except CheckpointError:
            out.unlink(missing_ok=True)
            raise
        print(f'{args.source} ({name}, {"features" if args.features else "classifier"}) -> {out}')
        print(f'  checked against PyTorch at {sizes[0]}px (batch 1) and {sizes[1]}px (batch 2): '
              f'max relative error {worst:.2e}')
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


def write_deploy(args, out):
    from models.efficient import create_training, save_efficient_deploy, to_deploy
    if args.source not in EFFICIENT_NAMES:
        raise UsageError(
            f'--format deploy folds an efficient backbone by name ({", ".join(EFFICIENT_NAMES)}); '
            f'RIFormer deploy files come from tools/reparam.py')
    training = create_training(args.source, num_classes=1000 if args.weights else 0, weights=args.weights)
    deploy = to_deploy(args.source, training)
    worst = check(training, lambda t: _outputs(deploy(t)), (args.image_size,), 2, 3, args.tol)
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
