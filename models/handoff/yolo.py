"""Ultralytics (8.4) hand-off: importing this module registers our layers for model YAMLs.

ultralytics' `parse_model` looks module names up in `ultralytics.nn.tasks`' globals, so the
classes are placed there (no ultralytics code is changed; see register.py). In a YAML the
backbone is one row returning a list of maps, followed by `Index` rows that pick a map and
declare its channels; RIFormerBlocks can sit anywhere in the neck:

    - [-1, 1, DeployBackbone, [riformer_s12, [1, 2, 3], "'riformer_s12.deploy.safetensors'"]]   # 0
    - [0, 1, Index, [128, 0]]   # P3/8
    - [0, 1, Index, [320, 1]]   # P4/16
    - [0, 1, Index, [512, 2]]   # P5/32
    ...
    - [-1, 3, C2f, [512]]
    - [-1, 1, RIFormerBlock, [512]]   # with scales: as the C2f's; prepare_cfg writes the scaled width

Pitfalls handled here: string arguments go through `ast.literal_eval`, so a path must be quoted
("'path'"; `prepare_cfg` resolves and quotes it); ultralytics takes the scale of a YAML with
`scales:` from its file name, which a written copy loses (`prepare_cfg` fixes the scale in the
YAML, `build_detector` builds from the dict); it passes a RIFormerBlock's width through
unscaled (`prepare_cfg` scales it); an undeclared or wrong channel count breaks the head later
with a shape error (`prepare_cfg` checks `Index` rows against the backbone, a RIFormerBlock
checks its input when the parser runs its stride forward); and ultralytics
rebuilds the model from the YAML stored in a checkpoint when it fine-tunes or resumes, so
`init_checkpoint` stores a YAML that names the architecture only (`DeployBackbone.portable_args`)
and the deploy file is read once, when the fresh detector is built. Its BatchNorm reset
(eps 1e-3) cannot touch the backbone: deploy forms hold no BatchNorm.
"""
import copy
import re
from pathlib import Path
from typing import Optional, Tuple

import yaml

from ..errors import CheckpointError, HandoffError
from ..riformer import ARCHS
from ..loader import clean_source
from .backbone import DeployBackbone, backbone_names
from .layers import collect_width_errors, width_message
from .register import register_in

MODULE_NAME = 'DeployBackbone'


def register():
    """Make our layers (`DeployBackbone`, `RIFormerBlock`) names ultralytics model YAMLs can use."""
    import ultralytics.nn.tasks as tasks
    return register_in(tasks)


register()


def load_cfg(path) -> dict:
    """A model YAML as a dict, with `yaml_file` the path as given: as ultralytics does, a name with
    a scale letter that is not a file (`yolov8s-riformer_s12.yaml`) reads the YAML without it
    (`yolov8-riformer_s12.yaml`), and the letter picks the scale (`choose_scale`)."""
    path = Path(path)
    source = path if path.is_file() else path.with_name(re.sub(r'(\d+)([nslmx])(.+)?$', r'\1\3', path.name))
    if not source.is_file():
        raise HandoffError(f'{path}: no such model YAML')
    if path.suffix not in ('.yaml', '.yml'):
        hint = f'; to fine-tune a trained detector pass --weights {path}' if path.suffix == '.pt' else ''
        raise HandoffError(f'{path}: a model YAML (.yaml) is needed here, got {path.suffix or "no suffix"}{hint}')
    try:
        cfg = yaml.safe_load(source.read_text())
    except UnicodeDecodeError:
        raise HandoffError(f'{source}: not a text file; a model YAML (.yaml) is needed here') from None
    except yaml.YAMLError as e:
        raise HandoffError(f'{source}: not valid YAML ({str(e).splitlines()[0]})') from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get('backbone'), list) or not isinstance(cfg.get('head'), list):
        raise HandoffError(f'{source}: not an ultralytics model YAML (needs backbone: and head: lists)')
    _check_strings(source, cfg, 'ultralytics')
    cfg['yaml_file'] = str(path)
    return cfg


def _check_strings(source, cfg: dict, family: str):
    """The strings a detector parser evaluates in a model YAML, checked (yaml_guard) before it does."""
    import importlib
    from .yaml_guard import PARSER_MODULES, check_model_yaml
    try:
        check_model_yaml(cfg, family, register_in(importlib.import_module(PARSER_MODULES[family])))
    except CheckpointError as e:
        raise HandoffError(f'{source}: {str(e).replace("the stored model YAML", "it")}') from None


def choose_scale(cfg: dict, requested: Optional[str] = None) -> Tuple[Optional[str], str]:
    """(scale, where it came from) for a model YAML with `scales:`: `requested` (--scale), else the
    letter in the file name as ultralytics reads it (`yolov8m-...yaml` -> m), else the YAML's own
    `scale:` (a YAML `prepare_cfg` wrote), else the first scale, as ultralytics. (None, '') for a
    YAML without scales. HandoffError for a scale the YAML lacks or sources that disagree."""
    from ultralytics.nn.tasks import guess_model_scale
    scales = cfg.get('scales') or {}
    sources = {'--scale': requested, 'the file name': guess_model_scale(cfg.get('yaml_file') or '') or None,
               "the YAML's scale:": cfg.get('scale') or None}
    given = {k: v for k, v in sources.items() if v}
    if not scales:
        if requested:
            raise HandoffError(f'--scale {requested}: the model YAML has no scales: (its widths are written out)')
        return None, ''
    if len(set(given.values())) > 1:
        raise HandoffError('the model scale is ambiguous: ' + ', '.join(f'{k} says {v}' for k, v in given.items()))
    origin, scale = next(iter(given.items())) if given else (None, next(iter(scales)))
    if scale not in scales:
        raise HandoffError(f'scale {scale!r} (from {origin}): the model YAML has scales {", ".join(map(str, scales))}')
    if origin is None:
        origin = f'the first of scales {", ".join(map(str, scales))}, as ultralytics takes it; choose with --scale'
        stem = Path(cfg.get('yaml_file') or '').name
        example = 's' if 's' in scales else list(scales)[-1]
        named = re.sub(r'^(yolo(e-)?v?\d+)', rf'\g<1>{example}', stem)
        if named != stem:
            origin += f' or a file name such as {named}'
    return scale, origin


def _apply_scale(cfg: dict, scale: str):
    """Fix `cfg` (a copy) to `scale`: RIFormerBlock widths, written at scale 1.0 as ultralytics'
    own layers are, become the scaled width of the layer before them (ultralytics' parser
    passes them through unscaled), and `scales` keeps only `scale`, so that a build from the
    written file by any name, and a rebuild from a checkpoint's YAML, makes the same model. A
    YAML that already names its `scale:` has its widths written out and is left as it is."""
    from ultralytics.utils.ops import make_divisible
    if cfg.get('scale') != scale:
        _, width, max_channels = cfg['scales'][scale]
        for row in cfg['backbone'] + cfg['head']:
            if isinstance(row, list) and len(row) == 4 and row[2] == 'RIFormerBlock' and row[3]:
                row[3] = [make_divisible(min(row[3][0], max_channels) * width, 8), *row[3][1:]]
    cfg['scales'] = {scale: cfg['scales'][scale]}
    cfg['scale'] = scale


def is_rtdetr(cfg: dict) -> bool:
    return any(row[2] == 'RTDETRDecoder' for row in cfg['head'])


def _resolve(path, base_dir: Optional[Path]) -> str:
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    return str(path.resolve())


def _fresh_args(args: list, backbone: Optional[str], base_dir: Optional[Path]) -> list:
    """[source, out_indices, weights] of a DeployBackbone row for a fresh build: the source as an
    architecture or backbone name, files resolved to absolute paths and quoted."""
    source = args[0] if backbone is None else backbone
    source = source if isinstance(source, dict) else clean_source(source)
    out_indices = args[1] if len(args) > 1 else None
    weights = clean_source(args[2]) if len(args) > 2 and args[2] is not None else None
    if backbone is not None:
        weights = None     # --backbone replaces the row's source and its weights
    if isinstance(source, dict) or source in ARCHS:
        if weights is None:
            raise CheckpointError(
                f'{source}: a RIFormer needs its deploy checkpoint (write one with tools/reparam.py), not a name')
    elif source not in backbone_names():
        weights, source = source, None      # a deploy file: its architecture is read below
    if weights is not None:
        weights = _resolve(weights, base_dir)
        if not Path(weights).exists():
            raise CheckpointError(
                f'{weights}: no such file, and not a backbone name (names: {", ".join(backbone_names())}; '
                f'RIFormer: a deploy checkpoint path)')
    if source is None:
        source = DeployBackbone(repr(weights), out_indices).arch
    return [source, out_indices, repr(weights)] if weights is not None else [source, out_indices]


def prepare_cfg(cfg: dict, backbone: Optional[str] = None, base_dir: Optional[Path] = None,
                scale: Optional[str] = None) -> dict:
    """A copy of `cfg` for building a fresh detector: every DeployBackbone row as
    `[architecture, out_indices, 'absolute deploy file']` (files resolved and quoted for
    ultralytics' literal_eval), and the channel counts of the `Index` rows that read it checked.
    `backbone` (a deploy file or backbone name) replaces the source of every such row; relative
    paths are taken from the current directory (or `base_dir`). A YAML with `scales:` is fixed
    to its scale (`scale`, else `choose_scale`'s), RIFormerBlock widths included."""
    cfg = copy.deepcopy(cfg)
    scale = choose_scale(cfg, scale)[0]
    if scale is not None:
        _apply_scale(cfg, scale)
    rows = cfg['backbone'] + cfg['head']
    found = False
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 4 and row[2] == MODULE_NAME):
            continue
        found = True
        args = list(row[3])
        if not args and backbone is None:
            raise HandoffError(f'row {i}: DeployBackbone needs a source (checkpoint path or name)')
        row[3] = _fresh_args(args, backbone, base_dir)
        module = DeployBackbone(*row[3])
        _check_index_rows(rows, i, module)
    if not found:
        raise HandoffError(f'the model YAML has no {MODULE_NAME} row')
    return cfg


def portable_cfg(cfg: dict, model) -> dict:
    """A copy of `cfg` (the YAML of the built `model`, an ultralytics DetectionModel) whose
    DeployBackbone rows name the architecture only: a rebuild from it needs no file, and loads
    the weights from the checkpoint that stores it."""
    cfg = copy.deepcopy(cfg)
    for row, layer in zip(cfg['backbone'] + cfg['head'], model.model):
        if isinstance(layer, DeployBackbone):
            row[3] = layer.portable_args()
    return cfg


def _check_index_rows(rows, index, module):
    for j, row in enumerate(rows):
        source = row[0] + j if isinstance(row[0], int) and row[0] < 0 else row[0]
        if row[2] != 'Index' or source != index:
            continue
        if len(row[3]) != 2:
            raise HandoffError(f'row {j}: Index needs [channels, index], got {row[3]}')
        channels, which = row[3]
        if not -len(module.channels) <= which < len(module.channels):
            raise HandoffError(f'row {j}: Index {which} out of range; the backbone gives {len(module.channels)} maps')
        if channels != module.channels[which]:
            raise HandoffError(
                f'row {j}: Index declares {channels} channels for output {which}, the backbone gives '
                f'{module.channels[which]} (all: {module.channels}, strides {module.strides})')


def write_cfg(cfg: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def detector_class(cfg: dict):
    """The ultralytics model class (YOLO or RTDETR, which wires the RT-DETR trainer) for `cfg`."""
    from ultralytics import RTDETR, YOLO
    return RTDETR if is_rtdetr(cfg) else YOLO


def build_detector(cfg: dict):
    """The ultralytics DetectionModel (or RTDETRDetectionModel) of `cfg` (prepared by
    `prepare_cfg`), built from the dict so that its `scale` holds (ultralytics guesses the scale
    of a YAML file from its name). Every RIFormerBlock whose width does not match its input is
    reported at once, also for RT-DETR, which runs no forward while building."""
    import torch
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel
    cls = RTDETRDetectionModel if is_rtdetr(cfg) else DetectionModel
    with collect_width_errors(_width_describer(cfg)):
        net = cls(copy.deepcopy(cfg), nc=cfg.get('nc'), verbose=False)
        if is_rtdetr(cfg):
            with torch.no_grad():
                _run_body(net.eval(), size=64)
            net.train()
    net.task = 'detect'
    return net


def _run_body(net, size: int):
    """Every layer but the head on a zero image, as ultralytics' forward routes it."""
    import torch
    x, outputs = torch.zeros(1, 3, size, size), []
    for m in net.model[:-1]:
        if m.f != -1:
            x = outputs[m.f] if isinstance(m.f, int) else [x if j == -1 else outputs[j] for j in m.f]
        x = m(x)
        outputs.append(x)


def _width_describer(cfg: dict):
    """The width error of a RIFormerBlock row, with the value to write in this YAML: the width
    itself, or in a YAML with scales the width at scale 1.0 that scales to it."""
    from ultralytics.utils.ops import make_divisible
    scale = cfg.get('scale')
    if scale not in (cfg.get('scales') or {}):
        return width_message
    _, width, max_channels = cfg['scales'][scale]

    def describe(row, declared, got):
        nominal = round(got / width)
        fits = nominal <= max_channels and make_divisible(nominal * width, 8) == got
        value = f'[-1, 1, RIFormerBlock, [{nominal}]]' if fits else f'a width that scales to {got}'
        return (f'row {row}: RIFormerBlock is {declared} channels at scale {scale} but its input has {got}: '
                f'write {value} (in a YAML with scales: the width at scale 1.0, as for the layer before it)')
    return describe


def init_checkpoint(cfg: dict, run_dir, nc: Optional[int] = None) -> Path:
    """Build a fresh detector from `cfg` (prepared by `prepare_cfg`: deploy weights read from
    their files), and save it as `run_dir/init.pt`, a checkpoint ultralytics trains from
    (`YOLO('init.pt').train(...)`) whose stored YAML names the architecture only. The prepared
    YAML is written next to it as `run_dir/model.yaml`. Returns the checkpoint path."""
    from .detector_file import save_detector
    run_dir = Path(run_dir)
    cfg = copy.deepcopy(cfg)
    if nc is not None:
        cfg['nc'] = nc      # the dataset's classes: the head is then transferred whole
    net = build_detector(cfg)       # first: a YAML that does not build leaves no run folder
    write_cfg(cfg, run_dir / 'model.yaml')
    net.yaml = portable_cfg(net.yaml, net)
    return save_detector(net, run_dir / 'init.pt')
