"""Recipes: YAML files validated into typed dataclasses.

A recipe is data, never code: it is parsed with `yaml.safe_load`, every key must be a field
below (unknown keys get an error with the close matches), and every value must have the
field's type. `key.sub=value` overrides on the command line go through the same checks.
"""
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from distill.errors import RecipeError

from .terms import (  # noqa: F401  (TermConfig, FeatureTermConfig: re-exported)
    FEATURE_REDUCTIONS, TERMS, FeatureTermConfig, SoftTermConfig, TermConfig, configured)

TEACHER_PRECISIONS = ('fp32', 'bf16', 'auto')
COMPILE_MODES = ('inductor', 'aot_eager', 'eager')


@dataclass
class StudentConfig:
    arch: str = 'riformer_mini'            # any timm name; RIFormer names get the deploy path
    init_from_teacher: bool = False        # copy the teacher's weights (all but the affine mixers)
    drop_path: float = 0.0
    # affine: RIFormer's learnable mixer. identity: the mixer fixed to the identity (the block is
    # x + ls1 * norm1(x)), the paper's "identity" student of Tables 1 and 7.
    mixer: str = 'affine'
    # Initial layer scale of every block; null: the architecture's (1e-5 / 1e-6, as PoolFormer).
    # Short CPU runs use a larger one so that the token mixer is used at all (recipes/clutter).
    layer_scale_init: Optional[float] = None
    pretrained_checkpoint: Optional[str] = None   # start from these weights (e.g. fine-tuning)
    # torch.compile backend: null (off) | inductor (aot_eager and eager only trace: for tests).
    compile: Optional[str] = None


@dataclass
class TeacherConfig:
    # timm name; with `pretrained`, optionally with timm's weight tag: poolformer_s12.sail_in1k
    arch: str = 'poolformer_s12'
    checkpoint: Optional[str] = None        # local file (.safetensors / .pth); wins over `pretrained`
    pretrained: bool = False                # timm's pretrained weights for `arch` (downloaded once, cached)
    # fp32 | bf16 | auto: bf16 where the device computes it natively (CPU with AVX512-BF16 or
    # AMX, CUDA), else fp32. The teacher only supplies targets; see distill/teacher.py.
    precision: str = 'fp32'
    compile: Optional[str] = None           # torch.compile backend, as student.compile


@dataclass
class ClutterConfig:
    """data.source=clutter_digits: how its images are drawn (distill/clutter.py); the canvas is
    data.image_size, sizes are in pixels, ranges inclusive."""
    train_images: int = 10000
    val_images: int = 2000
    digit_size: List[int] = field(default_factory=lambda: [24, 40])      # the labelled digit's side
    clutter: int = 6                                                      # fragments per image
    fragment_cells: List[int] = field(default_factory=lambda: [2, 4])    # fragment side in 8x8 digit cells
    fragment_size: List[int] = field(default_factory=lambda: [10, 18])   # pasted fragment side


@dataclass
class DataConfig:
    source: str = 'digits'                  # digits | clutter_digits | folder | hf_disk | hf_name
    path: Optional[str] = None              # folder / hf_disk: a directory; hf_name: dataset name
    train_split: str = 'train'
    val_split: str = 'validation'           # for digits: a held-out fraction (val_fraction)
    val_fraction: float = 0.2               # digits, clutter_digits: share of source digits held out
    # digits, clutter_digits: the seed of the train / val split of the source digits (and of the
    # clutter drawn from them): another value is another draw of the task.
    split_seed: int = 0
    clutter: ClutterConfig = field(default_factory=ClutterConfig)   # clutter_digits only
    image_column: str = 'image'
    label_column: str = 'label'
    image_size: int = 224
    hflip: float = 0.5
    scale: List[float] = field(default_factory=lambda: [0.08, 1.0])   # RandomResizedCrop area
    auto_augment: Optional[str] = None      # timm string, e.g. 'rand-m9-mstd0.5-inc1' or 'v0'
    re_prob: float = 0.0                    # random erasing probability
    re_mode: str = 'pixel'                  # erased area's fill: pixel (per-pixel noise; DeiT, PoolFormer) | rand | const
    re_count: int = 1                       # erased areas per image (DeiT, PoolFormer: 1)
    mixup: float = 0.0                      # mixup alpha (0 = off)
    cutmix: float = 0.0                     # cutmix alpha (0 = off)
    label_smoothing: float = 0.0
    label_fraction: float = 1.0             # share of training images whose labels CE may see
    num_workers: int = 0
    # DataLoader settings (tools/loader_bench.py measures them). pin_memory: page-locked batches
    # and non-blocking copies, used only when the run computes on a CUDA device (on a CPU there
    # is no copy to overlap). persistent_workers: keep the workers across epochs; this saves their
    # start (seconds) per epoch, but a killed run then resumes with freshly seeded workers where
    # the uninterrupted one continued, so a resume is no longer exact. prefetch_factor: batches
    # in flight per worker (null: torch's 2); only with num_workers > 0.
    pin_memory: bool = True
    persistent_workers: bool = False
    prefetch_factor: Optional[int] = None
    # A fixed subset of this many images of each split (null: all): a short epoch for a
    # rehearsal of a recipe (tools/rehearse.py), never for a result.
    max_train_images: Optional[int] = None
    max_val_images: Optional[int] = None
    # Evaluation resize / centre crop (resize to image_size / crop_pct, then crop). None: the
    # student's pretrained config in timm (PoolFormer / RIFormer: bicubic, crop_pct 0.9 for S
    # sizes, 0.95 for M), as those models are evaluated; the embedded sources are drawn at
    # image_size and not cropped (1.0).
    eval_crop_pct: Optional[float] = None
    eval_interpolation: Optional[str] = None   # bicubic | bilinear | nearest


@dataclass
class OptimConfig:
    lr: float = 1e-3                        # per 1024 images of global batch (scaled linearly)
    weight_decay: float = 0.05
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    grad_accum: int = 1
    clip_grad: Optional[float] = None       # max grad norm; None = no clipping (paper)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    # Weight EMA (timm's ModelEmaV3, decay warmed up with the update count): the average is what
    # is evaluated, kept as best and saved; the raw weights' top-1 is logged as val/raw_top1.
    # null = no average (paper).
    ema_decay: Optional[float] = None


def _distill_config():
    # One field per registered loss term (distill/terms.py), then the settings shared by them.
    fields = [(t.name, t.config, field(default_factory=t.config)) for t in TERMS.values()]
    fields += [('blocks', Optional[List[str]], field(default=None)),
               ('feature_reduction', str, field(default='mean'))]
    cls = dataclasses.make_dataclass('DistillConfig', fields)
    cls.__module__ = __name__
    return cls


DistillConfig = _distill_config()
DistillConfig.__doc__ = f"""The `distill:` section: one `TermConfig` per term of `distill.terms.TERMS`
({', '.join(TERMS)}), and

    blocks: the imitated blocks by module name; None = the last block of each stage.
    feature_reduction: the default reduction of the feature terms, each of which may set its
        own (`distill.l_rel.reduction`). mean: 1/NCHW per block. batch_sum: that mean x the
        GLOBAL batch (per-process batch x processes x grad_accum), one reading of the paper's
        "lambda x batch size". sample_sum: each sample's squared Frobenius norm, averaged over
        samples. All average over blocks."""


@dataclass
class TrainConfig:
    epochs: int = 300
    batch_size: int = 128                   # per process
    seed: int = 0
    mixed_precision: str = 'no'             # no | bf16 | fp16
    # Student (and teacher) in channels_last: oneDNN trains convolutions about 2x faster in it
    # on CPUs; the teacher always follows the student's layout.
    channels_last: bool = True
    # CPU threads per process; null: OMP_NUM_THREADS if set, else the cores that are idle when
    # the run starts (distill/threads.py: more threads than free cores wait on each other)
    threads: Optional[int] = None
    # glibc malloc keeps freed memory instead of unmapping it (distill/host_memory.py): each step
    # reuses its large tensors without page faults; false leaves the C library's defaults.
    keep_host_memory: bool = True
    # Measure each loss term's share of the loss and of the student's gradient at step 0 and
    # where a term's window opens or closes (distill/balance.py); nothing about training changes.
    loss_balance: bool = True
    eval_every: int = 1                     # epochs
    checkpoint_every: int = 1               # epochs
    keep_checkpoints: int = 2
    log_every: int = 20                     # optimizer steps
    output_dir: str = 'runs/default'
    progress: bool = True


@dataclass
class Recipe:
    student: StudentConfig = field(default_factory=StudentConfig)
    teacher: Optional[TeacherConfig] = None          # module-imitation teacher
    logit_teacher: Optional[TeacherConfig] = None    # defaults to the teacher
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self):
        """Cross-field checks that a type system cannot express."""
        d, data = self.distill, self.data
        terms = configured(d)
        needs_teacher = [n for n in terms if TERMS[n].needs_teacher]
        if needs_teacher and self.teacher is None and self.logit_teacher is None:
            raise RecipeError(f'distill terms {needs_teacher} need a teacher: set teacher.arch and teacher.checkpoint')
        feature_terms = [n for n in terms if TERMS[n].kind == 'feature']
        if feature_terms and self.teacher is None:
            raise RecipeError(f'feature terms {feature_terms} need the module-imitation teacher (teacher.*)')
        if self.student.init_from_teacher and self.teacher is None:
            raise RecipeError('student.init_from_teacher needs a teacher (teacher.arch and teacher.checkpoint)')
        for key in ('teacher', 'logit_teacher'):
            t = getattr(self, key)
            if t is not None and not t.checkpoint and not t.pretrained:
                raise RecipeError(f'{key} has no weights: set {key}.checkpoint=PATH (a local file) or '
                                  f'{key}.pretrained=true (timm\'s weights, e.g. {key}.arch=poolformer_s12.sail_in1k)')
        if not terms:
            raise RecipeError('every loss weight is 0: set distill.ce.weight or a distillation term')
        if self.student.mixer not in ('affine', 'identity'):
            raise RecipeError(f'student.mixer {self.student.mixer!r}: use affine or identity')
        mixer_terms = [n for n in TERMS if TERMS[n].needs_mixer]
        if self.student.mixer == 'identity' and any(n in terms for n in mixer_terms):
            raise RecipeError('student.mixer=identity has no mixer of its own to imitate: set '
                              + ' and '.join(f'distill.{n}.weight' for n in mixer_terms)
                              + ' to 0 (its mixer output is its norm1 output)')
        if data.source not in EMBEDDED_SOURCES + ('folder', 'hf_disk', 'hf_name'):
            raise RecipeError(f'data.source {data.source!r}: use digits, clutter_digits, folder, hf_disk or hf_name')
        if data.source == 'clutter_digits':
            _check_clutter(data)
        if data.source not in EMBEDDED_SOURCES and not data.path:
            raise RecipeError(f'data.path is required for data.source={data.source}')
        if not 0 < data.label_fraction <= 1:
            raise RecipeError(f'data.label_fraction {data.label_fraction}: must be in (0, 1]')
        if data.label_fraction < 1 and (data.mixup or data.cutmix):
            raise RecipeError('data.label_fraction < 1 cannot be combined with mixup/cutmix (mixing blends labelled and unlabelled targets)')
        if data.prefetch_factor is not None and (data.prefetch_factor < 1 or data.num_workers == 0):
            raise RecipeError(f'data.prefetch_factor {data.prefetch_factor}: needs data.num_workers > 0 and a '
                              f'value of at least 1 (or null: torch\'s 2)')
        for key in ('max_train_images', 'max_val_images'):
            if getattr(data, key) is not None and getattr(data, key) < 1:
                raise RecipeError(f'data.{key} {getattr(data, key)}: must be at least 1 (or null: all images)')
        if data.re_mode not in ('pixel', 'rand', 'const'):
            raise RecipeError(f'data.re_mode {data.re_mode!r}: use pixel (DeiT), rand or const')
        if data.eval_crop_pct is not None and not 0 < data.eval_crop_pct <= 1:
            raise RecipeError(f'data.eval_crop_pct {data.eval_crop_pct}: must be in (0, 1] (or null for the model\'s own)')
        if data.eval_interpolation not in (None, 'bicubic', 'bilinear', 'nearest'):
            raise RecipeError(f'data.eval_interpolation {data.eval_interpolation!r}: use bicubic, bilinear or nearest '
                              f'(or null for the model\'s own)')
        if d.soft.normalize not in ('batchmean', 'numel'):
            raise RecipeError(f'distill.soft.normalize {d.soft.normalize!r}: use batchmean or numel (DeiT)')
        if d.feature_reduction not in FEATURE_REDUCTIONS:
            raise RecipeError(f'distill.feature_reduction {d.feature_reduction!r}: use {" | ".join(FEATURE_REDUCTIONS)}')
        for name in (n for n, t in TERMS.items() if t.kind == 'feature'):
            reduction = getattr(d, name).reduction
            if reduction is not None and reduction not in FEATURE_REDUCTIONS:
                raise RecipeError(f'distill.{name}.reduction {reduction!r}: use {" | ".join(FEATURE_REDUCTIONS)} '
                                  f'(or null for distill.feature_reduction)')
        if self.optim.ema_decay is not None and not 0 < self.optim.ema_decay < 1:
            raise RecipeError(f'optim.ema_decay {self.optim.ema_decay}: must be in (0, 1), e.g. 0.995 '
                              f'(or null: no weight average)')
        if self.train.mixed_precision not in ('no', 'bf16', 'fp16'):
            raise RecipeError(f'train.mixed_precision {self.train.mixed_precision!r}: use no, bf16 or fp16')
        if self.train.threads is not None and self.train.threads < 1:
            raise RecipeError(f'train.threads {self.train.threads}: must be at least 1 (or null: the idle cores)')
        for name in ('epochs', 'batch_size', 'eval_every', 'checkpoint_every', 'keep_checkpoints', 'log_every'):
            if getattr(self.train, name) < 1:
                raise RecipeError(f'train.{name} must be at least 1')
        for where, cfg in (('teacher', self.teacher), ('logit_teacher', self.logit_teacher), ('student', self.student)):
            if cfg is None:
                continue
            if getattr(cfg, 'precision', 'fp32') not in TEACHER_PRECISIONS:
                raise RecipeError(f'{where}.precision {cfg.precision!r}: use {" | ".join(TEACHER_PRECISIONS)}')
            if cfg.compile is not None and cfg.compile not in COMPILE_MODES:
                raise RecipeError(f'{where}.compile {cfg.compile!r}: use null (off) or {" | ".join(COMPILE_MODES)}')
        if self.optim.grad_accum < 1:
            raise RecipeError('optim.grad_accum must be at least 1')
        self.check_inputs_outside_outputs()
        return self

    def check_inputs_outside_outputs(self):
        """No weights file the run reads is one it writes (model.safetensors, best.safetensors) or
        keeps under checkpoints/ (pruned as the run goes): training would destroy it."""
        from models.paths import same_file
        out = Path(self.train.output_dir)
        written = [out / 'model.safetensors', out / 'best.safetensors', out / 'summary.json', out / 'recipe.yaml']
        inputs = [('teacher.checkpoint', self.teacher), ('logit_teacher.checkpoint', self.logit_teacher)]
        paths = [(key, getattr(cfg, 'checkpoint', None)) for key, cfg in inputs if cfg is not None]
        paths.append(('student.pretrained_checkpoint', self.student.pretrained_checkpoint))
        for key, path in paths:
            if not path or not Path(path).is_file():
                continue
            kept = Path(path).resolve().is_relative_to((out / 'checkpoints').resolve())
            if kept or any(same_file(path, w) for w in written):
                raise RecipeError(f'{key}={path}: this run writes {"under " + str(out / "checkpoints") if kept else "that file"} '
                                  f'(train.output_dir={out}); copy the file elsewhere or choose another train.output_dir')


# Recipe keys that say how a session runs or reports, not what the run trains, each with whether a
# resumed run may change it. The one declaration: distill/run_log.py leaves these keys out of
# HPARAMS (the output directory is the run's name in TensorBoard already), distill/train_state.py
# lets a resume change the resumable ones, distill/train.py reports none of them on resume.
SESSION_KEYS = {'resume': True, 'train.progress': True, 'train.output_dir': False, 'train.threads': True,
                'train.keep_host_memory': False, 'train.loss_balance': False, 'train.log_every': False,
                'train.eval_every': False, 'train.checkpoint_every': False, 'train.keep_checkpoints': False,
                'data.num_workers': False, 'data.pin_memory': False, 'data.persistent_workers': False,
                'data.prefetch_factor': False}
# Recipe keys that may change when a run is resumed: the resumable session keys and train.epochs
# (the schedule is rebuilt to the new length).
RESUMABLE_CHANGES = frozenset({'train.epochs'} | {key for key, resumable in SESSION_KEYS.items() if resumable})

EMBEDDED_SOURCES = ('digits', 'clutter_digits')    # generated from scikit-learn's digits, no path


def _check_clutter(data: DataConfig):
    c = data.clutter
    for name in ('digit_size', 'fragment_cells', 'fragment_size'):
        lo_hi = getattr(c, name)
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1]:
            raise RecipeError(f'data.clutter.{name} {lo_hi}: expected [low, high] with 0 < low <= high')
    for name in ('digit_size', 'fragment_size'):
        if getattr(c, name)[1] > data.image_size:
            raise RecipeError(f'data.clutter.{name} {getattr(c, name)}: larger than the canvas '
                              f'(data.image_size {data.image_size})')
    if c.fragment_cells[1] > 8:
        raise RecipeError(f'data.clutter.fragment_cells {c.fragment_cells}: a digit has 8x8 cells')
    if c.clutter < 0 or c.train_images < 1 or c.val_images < 1:
        raise RecipeError('data.clutter: clutter must be >= 0, train_images and val_images >= 1')


# --- parsing -----------------------------------------------------------------------------------

def load_recipe(path, overrides=()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f'{path}: no such recipe file{_close_recipe_files(path)}')
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f'{path}: not valid YAML ({str(e).splitlines()[0]})') from None
    if not isinstance(raw, dict):
        raise RecipeError(f'{path}: a recipe is a mapping of sections, got {type(raw).__name__}')
    problems = []
    for item in overrides:
        try:
            apply_override(raw, item)
        except RecipeError as e:
            problems.append(str(e))
    recipe = build(Recipe, raw, '', problems=problems)
    if problems:
        raise RecipeErrors(problems)
    return recipe.validate()


class RecipeErrors(RecipeError):
    """Every mistake of a recipe and its overrides, found in one pass (`problems`, one message
    each), so that a command line with three typos is corrected in one go; the message lists them
    on one line."""

    def __init__(self, problems: List[str]):
        self.problems = list(problems)
        super().__init__(problems[0] if len(problems) == 1 else
                         f'{len(problems)} mistakes in the recipe and its overrides: ' + '; '.join(problems))


def _close_recipe_files(path: Path) -> str:
    """'; did you mean ...?' with the recipe files whose paths are close to a missing `path`
    (searched from its nearest existing folder, three levels deep), or ''."""
    folder = path.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or folder.resolve() == Path(folder.resolve().anchor):
        return ''
    # compared below the folder they share, so that a common prefix does not make any name close
    candidates = {str(p.relative_to(folder)): str(p) for pattern in ('*.y*ml', '*/*.y*ml', '*/*/*.y*ml')
                  for p in sorted(folder.glob(pattern))[:5000]}
    close = [candidates[c] for c in difflib.get_close_matches(str(path.relative_to(folder)), candidates, n=1, cutoff=0.75)]
    return f'; did you mean {" or ".join(close)}?' if close else ''


def apply_override(raw: dict, item: str):
    """`a.b.c=value` into the raw mapping; the value is parsed as YAML (so 1e-3, true, [1, 2])."""
    if '=' not in item:
        raise RecipeError(f'override {item!r}: expected key.sub=value')
    key, text = item.split('=', 1)
    try:
        value = yaml.safe_load(text) if text != '' else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split('.')
    node = raw
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise RecipeError(f'override {item!r}: {part} is not a section')
        node = node[part]
    node[parts[-1]] = value


def build(cls, raw, where, noun='recipe', problems=None):
    """The dataclass `cls` from a raw mapping: unknown keys (with close matches, as dotted keys)
    and values of the wrong type are RecipeErrors naming the dotted key. `noun` names the file
    kind in them. With a `problems` list, every mistake is appended to it instead of raising at
    the first (the caller raises; the dataclass returned then holds defaults where they were)."""
    collect = problems is not None
    problems = [] if problems is None else problems
    if not isinstance(raw, dict):
        problems.append(f'{where or noun}: expected a mapping, got {raw!r}')
        raw = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        name = f'{where}.{key}' if where else str(key)
        if key not in fields:
            close = [f'{where}.{c}' if where else c for c in difflib.get_close_matches(str(key), fields, n=3)]
            hint = f' (did you mean {" or ".join(close)}?)' if close else f' (known keys: {", ".join(fields)})'
            problems.append(f'unknown {noun} key {name!r}{hint}')
            continue
        try:
            values[key] = _coerce(typing.get_type_hints(cls)[key], value, name, noun, problems)
        except RecipeError as e:
            problems.append(str(e))
    if problems and not collect:
        raise RecipeError(problems[0] if len(problems) == 1 else '; '.join(problems))
    return cls(**values)


def _coerce(hint, value, name, noun='recipe', problems=None):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, name, noun, problems)
    if dataclasses.is_dataclass(hint):
        return build(hint, value or {}, name, noun, problems)
    if origin in (list, List):
        if not isinstance(value, list):
            raise RecipeError(f'{name}: expected a list, got {value!r}')
        return [_coerce(args[0], v, f'{name}[{i}]', noun) for i, v in enumerate(value)]
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):      # YAML reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is bool and isinstance(value, bool) or hint is int and isinstance(value, int) and not isinstance(value, bool) \
            or hint is str and isinstance(value, str):
        return value
    raise RecipeError(f'{name}: expected {getattr(hint, "__name__", hint)}, got {value!r}')


def flat_keys(d: Dict[str, Any], prefix='') -> Dict[str, Any]:
    """Nested mapping -> {'a.b.c': value}."""
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flat_keys(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def flatten(d: Dict[str, Any]) -> Dict[str, Any]:
    """Nested recipe -> flat {'a.b': value} with TensorBoard-friendly values (no None, no lists)."""
    def friendly(value):
        if value is None:
            return 'none'
        return ','.join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return {k: friendly(v) for k, v in flat_keys(d).items()}
