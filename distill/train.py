#!/usr/bin/env python
"""Distil a RIFormer student (or train any timm model) from a YAML recipe.

    accelerate launch distill/train.py RECIPE.yaml [key.sub=value ...]
    python distill/train.py RECIPE.yaml train.epochs=1 train.output_dir=/tmp/run
    python distill/train.py RECIPE.yaml resume=true      # continue the run in its output_dir

Everything that can be wrong with the input (recipe keys and types, data paths, teacher
checkpoints, recorder names and shapes, the output directory) is checked before the first step.
"""
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if __name__ == '__main__':
    # Before the heavy imports below (seconds): a python without the venv, --help, and every
    # mistake of the recipe and its overrides answer at once.
    from distill.train_entry import before_imports
    before_imports(sys.argv[1:])
import torch  # noqa: E402
import timm  # noqa: E402
import yaml  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import CosineLRScheduler  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import models  # noqa: E402
from distill import balance, host_memory  # noqa: E402
from distill.train_state import (  # noqa: E402
    TrainState, load_checkpoint, resume_checkpoint, resumed_changes, save_checkpoint,
    write_on_main, write_text_atomic)
from distill.disk import WriteFailed, estimate_checkpoint_bytes, folder_bytes, space_warning  # noqa: E402
from distill.integrity import checkpoints_newest_first, verified_json  # noqa: E402
from distill.config import SESSION_KEYS, RecipeError, load_recipe  # noqa: E402
from distill.criterion import DistillationCriterion  # noqa: E402
from distill.data import EpochSampler, build_datasets, build_mixup, loader_settings, worker_shortfall  # noqa: E402
from distill.preflight import InputErrors, check_inputs  # noqa: E402
from distill.threads import choose_threads  # noqa: E402
from distill.engine import NonFiniteLoss, evaluate, train_one_epoch  # noqa: E402
from distill.ema import StudentEma  # noqa: E402
from distill.participation import GradientParticipation  # noqa: E402
from distill.run_log import (  # noqa: E402
    FINISHED, epoch_line, epoch_scalars, mark_unfinished, schedule, write_run_description)
from distill.recorders import check_pairs, default_imitated_blocks  # noqa: E402
from distill.terms import TERMS, describe_reductions, feature_modules, recorded_modules  # noqa: E402
from distill.teacher import (  # noqa: E402
    compile_if_faster, compile_module, describe as describe_teacher, prepare_teacher)
from distill.errors import error_lines as default_error_lines, one_line_errors  # noqa: E402
from models.errors import CheckpointError  # noqa: E402


def build_student(recipe, num_classes, teacher=None):
    """The recipe's student (`models.create_student`), with recipe-worded errors."""
    cfg = recipe.student
    if cfg.arch not in timm.list_models():
        raise RecipeError(f'student.arch {cfg.arch!r} is not a timm model; e.g. riformer_s12, riformer_mini')
    if cfg.mixer == 'identity' and cfg.arch not in models.ARCHS:      # ARCHS: every RIFormer name
        raise RecipeError(f'student.mixer=identity needs a RIFormer student, not {cfg.arch}')
    # The teacher's own file; a teacher with timm's pretrained weights hands over its state dict.
    teacher_weights = (recipe.teacher.checkpoint or teacher.state_dict()) if cfg.init_from_teacher else None
    return models.create_student(cfg.arch, num_classes, cfg.drop_path, cfg.mixer, teacher_weights,
                                 cfg.pretrained_checkpoint, cfg.layer_scale_init)


def build_teachers(recipe, num_classes):
    teacher = logit_teacher = None
    if recipe.teacher is not None:
        teacher = models.create_teacher(recipe.teacher.arch, recipe.teacher.checkpoint, recipe.teacher.pretrained)
    if recipe.logit_teacher is not None:
        logit_teacher = models.create_teacher(recipe.logit_teacher.arch, recipe.logit_teacher.checkpoint,
                                              recipe.logit_teacher.pretrained)
    for name, model in (('teacher', teacher), ('logit_teacher', logit_teacher)):
        if model is not None and model.num_classes != num_classes:
            raise RecipeError(f'{name} predicts {model.num_classes} classes, the data has {num_classes}; '
                              f'use a teacher trained on these classes')
    return teacher, logit_teacher


def save_student(path, student, recipe, metrics):
    extra = {'image_size': str(recipe.data.image_size), 'metrics': json.dumps(metrics),
             'recipe': json.dumps(recipe.to_dict())}
    if isinstance(student, models.RIFormer):
        models.save_model(path, student, extra)
    else:
        models.write_safetensors(path, student.state_dict(), {
            'format': 'timm', 'arch': recipe.student.arch, 'num_classes': str(student.num_classes), **extra})


def show_balance(accelerator, student, criterion, dataset, recipe, mixup, epoch, layout):
    """Measure the loss balance on the first batch of `epoch` and print its table and warnings."""
    with balance.preserved_rng(accelerator.device):
        images, targets = balance.probe_batch(dataset, recipe.train.batch_size, recipe.train.seed, epoch, mixup,
                                              accelerator.device, layout)
    was_training = student.training
    student.train()
    rows = balance.measure(student, criterion, images, targets, epoch, accelerator.autocast)
    student.train(was_training)
    accelerator.print(balance.table(rows, f'loss balance at epoch {epoch + 1} (one batch of {images.shape[0]}; '
                                          f'grad %: share of the gradient norm on the student\'s backbone)'))
    for line in balance.warnings(rows, criterion.context.global_batch, epoch):
        print(line, file=sys.stderr, flush=True)
    return rows


def threads_of_run(out: Path):
    """The thread count a run in `out` computed with (that of its newest checkpoint whose
    train_state.json its manifest vouches for), None if unknown. Reads nothing the manifest
    check has not passed: no link, FIFO or device, no file of another size."""
    for folder in checkpoints_newest_first(out / 'checkpoints'):
        raw = verified_json(folder, 'train_state.json')
        if raw is not None:
            try:
                return TrainState.from_value(raw).threads or None     # 0: not recorded
            except CheckpointError:
                return None
    return None


def best_epoch(history, best_top1):
    """The first epoch (from 1) whose val/top1 is the best, None before any evaluation."""
    return next((h['epoch'] for h in history if h.get('val/top1') is not None
                 and math.isclose(h['val/top1'], best_top1, abs_tol=5e-5)), None)


def closing_lines(out: Path, recipe, summary: dict, riformer: bool) -> str:
    """What a finished run says: its results, the files it wrote, the next command."""
    final, epochs = summary['final'].get('val/top1'), summary['epochs']
    lines = [f'finished {epochs} epoch{"s" if epochs != 1 else ""}' + (f': best top-1 {summary["best_top1"]:.2f} at epoch {summary["best_epoch"]}, '
                                             f'final top-1 {final:.2f} (epoch {epochs})' if final is not None else '')]
    # a run without a teacher trains a model (often the next run's teacher), not a student
    kind = 'student' if recipe.teacher is not None or recipe.logit_teacher is not None else 'model'
    files = [('model', out / 'model.safetensors', f'the final {kind}'),
             ('best', out / 'best.safetensors', f'the {kind} of epoch {summary["best_epoch"]}'),
             ('summary', out / 'summary.json', 'metrics of every epoch, the loss balance'),
             ('logs', out / 'tb', f'tensorboard --logdir {out}')]
    lines += [f'  {name:<8} {path}  ({what})' for name, path, what in files if path.exists()]
    if riformer:
        lines.append(f'next: python tools/reparam.py {out / "model.safetensors"}   # fold into the deploy checkpoint')
    else:
        lines.append(f'next: use it as a teacher: teacher.checkpoint={out / "model.safetensors"}, or '
                     f'python tools/evaluate.py {out / "model.safetensors"}')
    return '\n'.join(lines)


def needs_unused_parameter_search(recipe) -> bool:
    """Whether some epoch's active terms leave trainable parameters without gradients: with no
    logit term (feature terms alone, soft KD windowed off) the head and the blocks after the
    last imitated one are not in the loss, and DDP must be told to look for such parameters."""
    d = recipe.distill
    reach_head = [n for n, term in TERMS.items() if term.kind != 'feature']      # label and logit terms
    return any(not any(getattr(d, t).active(epoch) for t in reach_head)
               for epoch in range(recipe.train.epochs))


def updates_per_epoch(batches_per_process: int, grad_accum: int) -> int:
    # accelerate also syncs (and the optimizer steps) at the end of each epoch's loader, so a
    # partial accumulation window at the end of an epoch is one more update.
    return math.ceil(batches_per_process / grad_accum)


def build_scheduler(optimizer, optim_cfg, epochs: int, epoch_updates: int) -> CosineLRScheduler:
    """Warmup, then cosine to min_lr at the last update; stepped in optimizer updates."""
    return CosineLRScheduler(
        optimizer, t_initial=epochs * epoch_updates, lr_min=optim_cfg.min_lr,
        warmup_t=int(optim_cfg.warmup_epochs * epoch_updates), warmup_lr_init=optim_cfg.warmup_lr,
        t_in_epochs=False)


def lr_at(update: int, lr: float, optim_cfg, epochs: int, epoch_updates: int) -> float:
    """The learning rate a schedule of `epochs` epochs sets at `update`."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    build_scheduler(optimizer, optim_cfg, epochs, epoch_updates).step_update(update)
    return optimizer.param_groups[0]['lr']


def describe_resume(changes, state: TrainState, lr, optim_cfg, epoch_updates) -> List[str]:
    """What a resume with a changed recipe does, one line per changed key."""
    lines = []
    for key, (old, new) in changes.items():
        if key in SESSION_KEYS:        # how a run reports, not what it computes
            continue
        line = f'resume: {key} {old} -> {new}'
        if key == 'train.epochs' and new <= state.epoch:
            line += f': the run already has {state.epoch} epochs; nothing to train (its results stay as they are)'
        elif key == 'train.epochs':
            n = state.num_updates
            line += (f': the cosine schedule is rebuilt to end at update {new * epoch_updates} instead of '
                     f'{old * epoch_updates}; training continues at update {n} with lr '
                     f'{lr_at(n, lr, optim_cfg, new, epoch_updates):.2e} (the old schedule was at '
                     f'{lr_at(n, lr, optim_cfg, old, epoch_updates):.2e}); term windows stay in epochs')
        lines.append(line)
    return lines


def make_accelerator(recipe, out):
    if os.environ.get('MASTER_ADDR') and 'WORLD_SIZE' not in os.environ:
        # accelerate launch --cpu --num_processes N (N > 1) starts ONE process unless given an
        # MPI hostfile; say so instead of silently training single-process.
        print('warning: `accelerate launch --cpu` started a single process (it needs --mpirun_hostfile '
              'for more); for N CPU processes use `accelerate launch --multi_gpu --num_processes N`, '
              'which runs on CPUs too', file=sys.stderr)
    return Accelerator(
        # Without CUDA, a multi-process launch would otherwise fall back to one process each.
        cpu=not torch.cuda.is_available(),
        mixed_precision=recipe.train.mixed_precision, gradient_accumulation_steps=recipe.optim.grad_accum,
        log_with='tensorboard', project_dir=str(out),
        # pinned batches (CUDA only, data.pin_memory) go to the device without blocking the host
        dataloader_config=DataLoaderConfiguration(non_blocking=recipe.data.pin_memory and torch.cuda.is_available()),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=needs_unused_parameter_search(recipe))])


@dataclass
class Session:
    """One session of a run: what the phases of `run` hand each other. `build` fills in the data,
    models and criterion, `prepare_training` the optimizer, loaders and schedule,
    `resume_or_start` the state, which `fit` advances epoch by epoch."""
    recipe: Any
    out: Path
    accelerator: Any
    train_set: Any = None
    val_set: Any = None
    num_classes: int = 0
    teacher: Any = None
    logit_teacher: Any = None
    student: Any = None
    ema: Optional[StudentEma] = None                     # the weight average (optim.ema_decay)
    blocks: list = field(default_factory=list)           # the imitated blocks
    feature_names: dict = field(default_factory=dict)    # {term: modules}, what the recorders hook
    layout: Any = torch.contiguous_format
    global_batch: int = 0
    criterion: Any = None
    lr: float = 0.
    optimizer: Any = None
    train_loader: Any = None
    val_loader: Any = None
    epoch_updates: int = 0
    scheduler: Any = None
    mixup: Any = None
    participation: Any = None
    state: TrainState = field(default_factory=TrainState)
    changes: dict = field(default_factory=dict)          # the recipe keys a resume changed
    resume_from: Optional[Path] = None                   # the checkpoint this session continues
    last_ckpt: Optional[Path] = None                     # the newest checkpoint written
    metrics: dict = field(default_factory=dict)          # of the last epoch
    started: float = 0.                                  # perf_counter when fitting began

    def say(self, line: str):
        self.accelerator.print(line)

    def teachers(self):
        """(model, its recipe section) of the teacher and the logit teacher (None where absent)."""
        return ((self.teacher, self.recipe.teacher), (self.logit_teacher, self.recipe.logit_teacher))


def run(recipe, check_only=False):
    """Train a student from `recipe` and return its final metrics; with `check_only`, build
    everything, measure the loss balance where the run would, and train nothing ({})."""
    session = build(recipe)
    if check_only:
        return check(session)
    prepare_training(session)
    resume_or_start(session)
    fit(session)
    return finish(session)


def build(recipe) -> Session:
    """Every input checked (all problems at once), the threads chosen, then the accelerator,
    the data, the teachers, the student and the criterion."""
    cfg, out = recipe.train, Path(recipe.train.output_dir)
    problems = check_inputs(recipe)        # files, folders, names, output_dir: all at once
    if problems:
        raise InputErrors(problems)
    if cfg.keep_host_memory:
        host_memory.keep_freed_memory()
    choose_run_threads(recipe, out)
    accelerator = make_accelerator(recipe, out)
    accelerator.wait_for_everyone()     # every process checks before the main one writes
    set_seed(cfg.seed)
    s = Session(recipe, out, accelerator)
    s.train_set, s.val_set, s.num_classes = build_datasets(recipe.data, cfg.seed, recipe.student.arch)
    s.teacher, s.logit_teacher = build_teachers(recipe, s.num_classes)
    s.student = build_student(recipe, s.num_classes, s.teacher)
    # The average starts from the initial weights, copied before recorders hook the student.
    s.ema = StudentEma(s.student, recipe.optim.ema_decay) if recipe.optim.ema_decay else None
    build_criterion(s)
    return s


def choose_run_threads(recipe, out: Path):
    if int(os.environ.get('WORLD_SIZE', 1)) == 1 and not torch.cuda.is_available():
        # A busy machine: fewer threads, not a slower run. A resume keeps the run's thread count:
        # float sums, and so the weights, depend on it.
        threads, note = choose_threads(recipe.train.threads or (threads_of_run(out) if recipe.resume else None))
        torch.set_num_threads(threads)
        if note:
            print(note, flush=True)


def build_criterion(s: Session):
    """The imitated feature pairs checked, student and teachers in one layout, and the criterion
    (its recorders hook both models)."""
    recipe = s.recipe
    s.blocks = recipe.distill.blocks or (default_imitated_blocks(s.student) if s.teacher is not None else [])
    s.feature_names = feature_modules(recipe.distill, s.blocks)
    if s.feature_names:
        check_pairs(s.student, s.teacher, recorded_modules(s.feature_names), recipe.data.image_size)
    # The teacher follows the student's layout, so every imitated feature pair has one layout.
    s.layout = torch.channels_last if recipe.train.channels_last else torch.contiguous_format
    s.student = s.student.to(memory_format=s.layout)
    for t, t_cfg in s.teachers():
        if t is not None:                # frozen: never prepared, never DDP-wrapped, never saved
            prepare_teacher(t, s.accelerator.device, t_cfg.precision, s.layout)
            s.say(f'teacher {t_cfg.arch}: {describe_teacher(t, s.accelerator.device)}')
    # Recorders before compiling: the compiled forwards include their hooks.
    s.global_batch = recipe.train.batch_size * s.accelerator.num_processes * recipe.optim.grad_accum
    s.criterion = DistillationCriterion(recipe.distill, s.student, s.teacher, s.logit_teacher, s.blocks,
                                        recipe.data.label_smoothing, s.global_batch, s.feature_names)


def check(s: Session) -> dict:
    """--check: say what was built and show the loss balance at every epoch the run measures it."""
    recipe = s.recipe
    s.say(f'inputs ok: {recipe.student.arch} student, {len(s.train_set)} train / {len(s.val_set)} val images, '
          f'{s.num_classes} classes, teacher {recipe.teacher.arch if s.teacher is not None else "-"}, '
          f'output_dir {s.out}')
    s.student.to(s.accelerator.device)
    mixup = build_mixup(recipe.data, s.num_classes)
    for epoch in balance.epochs_to_measure(s.criterion, 0, recipe.train.epochs):
        show_balance(s.accelerator, s.student, s.criterion, s.train_set, recipe, mixup, epoch, s.layout)
    s.criterion.remove_hooks()
    return {}


def compile_models(s: Session):
    """The teachers' and the student's forwards compiled where the recipe asks."""
    recipe, cfg = s.recipe, s.recipe.train
    for t, t_cfg in s.teachers():
        if t is not None and t_cfg.compile is not None:
            # Timed on a batch of the training shape; evaluation keeps the eager teacher (its
            # last batch is smaller, which a compiled forward would recompile for).
            probe = torch.zeros(cfg.batch_size, 3, recipe.data.image_size, recipe.data.image_size,
                                device=s.accelerator.device).contiguous(memory_format=s.layout)
            chosen, line = compile_if_faster(t, t_cfg.compile, probe)
            s.say(f'teacher {t_cfg.arch} {line}')
            s.criterion.clear_records()
            s.criterion.use_teacher_forward(t, chosen)
    compile_module(s.student, recipe.student.compile)


def prepare_training(s: Session):
    """Compiled forwards, the optimizer, the loaders and the schedule, prepared by accelerate."""
    recipe, cfg, accelerator = s.recipe, s.recipe.train, s.accelerator
    compile_models(s)
    s.lr = recipe.optim.lr * s.global_batch / 1024
    optimizer = create_optimizer_v2(s.student, 'adamw', lr=s.lr, weight_decay=recipe.optim.weight_decay,
                                    betas=tuple(recipe.optim.betas))
    train_loader, val_loader = build_loaders(s)
    if len(s.train_set) < s.global_batch:
        raise RecipeError(f'{len(s.train_set)} training images are fewer than one global batch ({s.global_batch}); '
                          f'lower train.batch_size')
    s.student, s.optimizer, s.train_loader, s.val_loader = accelerator.prepare(
        s.student, optimizer, train_loader, val_loader)
    if s.ema is not None:
        s.ema.to(accelerator.device, s.layout)
    # The schedule runs in optimizer updates, counted as accelerate performs them (the prepared
    # loader's batches per process, accumulated), so it ends exactly at the last update for any
    # process count and accumulation; it is not prepared (accelerate would step it once per process).
    s.epoch_updates = updates_per_epoch(len(s.train_loader), recipe.optim.grad_accum)
    s.scheduler = build_scheduler(s.optimizer, recipe.optim, cfg.epochs, s.epoch_updates)
    s.mixup = build_mixup(recipe.data, s.num_classes)
    if needs_unused_parameter_search(recipe):
        s.participation = GradientParticipation(accelerator.unwrap_model(s.student), s.criterion,
                                                recipe.data.image_size, accelerator.device)
    # Models and data are built from the same seed on every process; from here on each process
    # draws its own randomness (seed + rank, as DeiT): drop path, mixup/cutmix and augmentation
    # differ across processes. A resumed run restores each process's own RNG state later.
    set_seed(cfg.seed, device_specific=True)


def build_loaders(s: Session):
    """The training loader (each epoch's order drawn from the seed: `EpochSampler`) and the
    validation loader."""
    recipe, cfg = s.recipe, s.recipe.train
    sampler = EpochSampler(len(s.train_set), cfg.seed)
    loader_kwargs = loader_settings(recipe.data, s.accelerator.device)
    note = worker_shortfall(recipe.data, int(os.environ.get('LOCAL_WORLD_SIZE', 1)), len(os.sched_getaffinity(0)))
    if note and s.accelerator.is_main_process:
        print(note, file=sys.stderr, flush=True)
    return (DataLoader(s.train_set, cfg.batch_size, sampler=sampler, drop_last=True, **loader_kwargs),
            DataLoader(s.val_set, cfg.batch_size, **loader_kwargs))


def resume_or_start(s: Session):
    """The state to continue: the newest intact checkpoint's with resume=true (what a changed
    recipe does to it said), else a fresh one; then the run's files and trackers."""
    recipe, out, accelerator = s.recipe, s.out, s.accelerator
    s.resume_from = resume_checkpoint(accelerator, out) if recipe.resume else None
    if recipe.resume and s.resume_from is None:
        s.say(f'resume=true, but {out} holds no complete checkpoint: starting from scratch (epoch 1)')
    s.state.threads = torch.get_num_threads()
    if s.resume_from is not None:
        s.state = load_checkpoint(accelerator, s.resume_from, s.ema)
        s.state.threads = torch.get_num_threads()
        s.scheduler.step_update(s.state.num_updates)
        s.say(f'resumed from {s.resume_from} at epoch {s.state.epoch}')
        s.changes = resumed_changes(out, recipe.to_dict())
        for line in describe_resume(s.changes, s.state, s.lr, recipe.optim, s.epoch_updates):
            s.say(line)
    start_run_files(s)


def start_run_files(s: Session):
    """The saved recipe, the disk-space check, TensorBoard's run and its 'unfinished' mark."""
    recipe, out, accelerator, state = s.recipe, s.out, s.accelerator, s.state
    recipe_dict = recipe.to_dict()
    if s.resume_from is None or s.changes:      # the saved recipe is the run's recipe now
        write_on_main(accelerator, out / 'recipe.yaml', lambda: save_recipe(out, recipe_dict), s.resume_from)
    training = state.epoch < recipe.train.epochs
    if training and accelerator.is_main_process:
        warn_if_short_of_space(out, accelerator.unwrap_model(s.student), s.resume_from, recipe.train.keep_checkpoints,
                               accelerator.num_processes)
    if training:      # a finished run resumed with nothing to do logs nothing
        accelerator.init_trackers('tb')     # (no empty events file in its TensorBoard run)
    if s.resume_from is None and accelerator.is_main_process:
        write_run_description(accelerator.get_tracker('tensorboard', unwrap=True), recipe_dict,
                              has_teacher=(s.logit_teacher or s.teacher) is not None)
    if training and accelerator.is_main_process:
        # A fresh run: 0 at step 0. A resumed one: 0 at the first epoch this session trains, not at
        # the last one done, whose 1 (a finished session) would read 0 again in TensorBoard.
        mark_unfinished(accelerator.get_tracker('tensorboard', unwrap=True), state.epoch + 1 if state.epoch else 0)


def fit(s: Session):
    """Train the epochs left, each evaluated, checkpointed and logged as the recipe says."""
    recipe, cfg = s.recipe, s.recipe.train
    unwrapped = s.accelerator.unwrap_model(s.student)
    used = bool(s.feature_names)
    s.say(f'{recipe.student.arch}: {sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M params, '
          f'{len(s.train_set)} train / {len(s.val_set)} val images, {s.num_classes} classes, '
          f'{s.accelerator.num_processes} process(es), global batch {s.global_batch}, lr {s.lr:.2e}; '
          f'terms {schedule(recipe.distill, cfg.epochs)}; imitated blocks {s.blocks if used else "-"}'
          + (f'; feature reductions: {describe_reductions(recipe.distill, s.criterion.context)}' if used else ''))
    s.say(f'output: {s.out.resolve()}  (watch it: tensorboard --logdir {s.out}, tab CUSTOM SCALARS)')
    s.started = time.perf_counter()
    s.last_ckpt = s.resume_from
    # A resumed run that has no epochs left still reports (and re-saves) its last metrics.
    s.metrics = {k: v for k, v in s.state.history[-1].items() if k != 'epoch'} if s.state.history else {}
    measure_at = balance.epochs_to_measure(s.criterion, s.state.epoch, cfg.epochs)
    for epoch in range(s.state.epoch, cfg.epochs):
        fit_epoch(s, epoch, measure_balance=epoch in measure_at)


def fit_epoch(s: Session, epoch: int, measure_balance: bool):
    """One epoch: train, evaluate (keeping the best student), log, checkpoint."""
    recipe, cfg, accelerator, state = s.recipe, s.recipe.train, s.accelerator, s.state
    epoch_start = time.perf_counter()
    # accelerate's loader re-sets the sampler's epoch from its own iteration counter, which
    # restarts at 0 in a resumed process: set it through the loader.
    s.train_loader.set_epoch(epoch)
    freeze_unreached(s, epoch)
    if cfg.loss_balance and measure_balance and accelerator.is_main_process:
        rows = show_balance(accelerator, accelerator.unwrap_model(s.student), s.criterion, s.train_set, recipe,
                            s.mixup, epoch, s.layout)
        accelerator.log(balance.scalars(rows), step=epoch + 1)     # the epoch it is measured for
        state.balance.append(balance.record(rows, epoch))
    try:
        train_metrics = train_one_epoch(accelerator, s.student, s.criterion, s.train_loader, s.optimizer,
                                        s.scheduler, s.mixup, epoch, state, cfg, recipe.optim.clip_grad, s.ema)
    except NonFiniteLoss as e:
        where = f'last good checkpoint: {s.last_ckpt}' if s.last_ckpt else 'no checkpoint was written'
        raise NonFiniteLoss(f'{e}; run stopped, {where}') from None
    state.epoch = epoch + 1
    s.metrics = dict(train_metrics)
    last_epoch = epoch + 1 == cfg.epochs
    if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
        evaluate_and_keep_best(s)
    state.train_seconds += time.perf_counter() - epoch_start
    state.history.append({'epoch': epoch + 1, **{k: round(v, 5) for k, v in s.metrics.items()}})
    last_lr = s.optimizer.param_groups[0]['lr']
    accelerator.log(epoch_scalars(s.metrics, recipe.distill, epoch, last_lr), step=epoch + 1)     # x: epoch from 1
    s.say(epoch_line(epoch, cfg.epochs, s.metrics, s.criterion.active_terms(epoch)))
    if (epoch + 1) % cfg.checkpoint_every == 0 or last_epoch:
        s.last_ckpt = save_checkpoint(accelerator, s.out, epoch + 1, state, cfg.keep_checkpoints, s.last_ckpt,
                                      s.ema)


def freeze_unreached(s: Session, epoch: int):
    """Freeze the parameters the epoch's active terms reach no gradient to (DDP needs every
    parameter in the loss); say so when that set changes."""
    if s.participation is None:
        return
    frozen = s.participation.apply(epoch)
    if frozen and (epoch == s.state.epoch or s.participation.unused(epoch - 1) != frozen):
        s.say(f'epoch {epoch + 1}: the active terms {s.criterion.active_terms(epoch)} reach no gradient to '
              f'{len(frozen)} parameter tensors (e.g. {sorted(frozen)[0]}): frozen while they are inactive')


def evaluate_and_keep_best(s: Session):
    """Validation metrics into the epoch's metrics; a new best top-1 writes best.safetensors.
    With a weight average, the average is the model evaluated and kept; the raw weights'
    top-1/top-5 are logged beside it (val/raw_top1, val/raw_top5)."""
    accelerator, out = s.accelerator, s.out
    if s.ema is not None:
        # A pass over the val loader draws its iterator's seed from torch's generator: restored,
        # so that the training's randomness stays that of a run without the average.
        with balance.preserved_rng(accelerator.device):
            raw = evaluate(accelerator, s.student, s.val_loader)
        s.metrics.update({'val/raw_top1': raw['val/top1'], 'val/raw_top5': raw['val/top5']})
    s.metrics.update(evaluate(accelerator, kept_model(s), s.val_loader, s.logit_teacher or s.teacher))
    s.criterion.clear_records()
    if s.metrics['val/top1'] > s.state.best_top1:
        s.state.best_top1 = s.metrics['val/top1']
        write_on_main(accelerator, out / 'best.safetensors', lambda: save_student(
            out / 'best.safetensors', kept_model(s), s.recipe, s.metrics), s.last_ckpt)


def kept_model(s: Session):
    """The model a run evaluates and saves: the weight average where the recipe keeps one."""
    return s.ema.module if s.ema is not None else s.accelerator.unwrap_model(s.student)


def finish(s: Session) -> dict:
    """The final student and the summary written, the closing lines said; the final metrics."""
    recipe, out, accelerator, state = s.recipe, s.out, s.accelerator, s.state
    final = kept_model(s)
    write_on_main(accelerator, out / 'model.safetensors',
                  lambda: save_student(out / 'model.safetensors', final, recipe, s.metrics), s.last_ckpt)
    summary = {
        'arch': recipe.student.arch, 'epochs': state.epoch, 'num_updates': state.num_updates,
        'final': s.metrics, 'best_top1': state.best_top1, 'history': state.history,
        'train_seconds': round(state.train_seconds, 2),     # all sessions of the run
        'session_seconds': round(time.perf_counter() - s.started, 2),
        'processes': accelerator.num_processes,
        'balance': state.balance,
        'best_epoch': best_epoch(state.history, state.best_top1),
    }
    write_on_main(accelerator, out / 'summary.json',
                  lambda: write_text_atomic(out / 'summary.json', json.dumps(summary, indent=2)), s.last_ckpt)
    s.say(closing_lines(out, recipe, summary, isinstance(final, models.RIFormer)))
    accelerator.log({FINISHED: 1.}, step=recipe.train.epochs)      # nothing without trackers: nothing trained
    accelerator.end_training()
    s.criterion.remove_hooks()
    return s.metrics


def save_recipe(out: Path, recipe_dict: dict):
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / 'recipe.yaml', yaml.safe_dump(recipe_dict, sort_keys=False))


def warn_if_short_of_space(out: Path, student, resume_from, keep: int, processes: int):
    """Warn (stderr) when `out` cannot hold keep + 1 checkpoints and the student files; a
    resumed run measures its checkpoint, a new one estimates it."""
    checkpoint = folder_bytes(resume_from) if resume_from else estimate_checkpoint_bytes(student, processes)
    weights = sum(t.numel() * t.element_size() for t in student.state_dict().values())
    line = space_warning(out, checkpoint, weights, keep)
    if line:
        print(line, file=sys.stderr, flush=True)


def resume_command(argv: List[str]) -> str:
    """The command line that resumes the run that `argv` started."""
    script = Path(__file__).resolve()
    if script.is_relative_to(Path.cwd()):
        script = script.relative_to(Path.cwd())
    processes = int(os.environ.get('WORLD_SIZE', 1))
    launcher = ['accelerate', 'launch', '--multi_gpu', '--num_processes', str(processes)] if processes > 1 else ['python']
    return shlex.join([*launcher, str(script), *[a for a in argv if not a.startswith('resume=')], 'resume=true'])


def error_lines(e: BaseException, argv=None) -> List[str]:
    """A failed run's `error:` lines: every input problem at once; a write that failed with
    when and how to resume."""
    if isinstance(e, WriteFailed):
        argv = [a for a in (sys.argv[1:] if argv is None else argv) if a != '--check']
        return [f'{e}; {e.when}, resume with: {resume_command(argv)}']
    return default_error_lines(e)


@one_line_errors(also=(NonFiniteLoss, WriteFailed), lines=error_lines)
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        from distill.train_entry import show_help
        return show_help(argv)
    check_only = '--check' in argv
    argv = [a for a in argv if a != '--check']
    run(load_recipe(argv[0], argv[1:]), check_only)
    return 0


if __name__ == '__main__':
    code = main()
    if code == 2 and int(os.environ.get('RANK', 0)) == 0:
        # our error line is out: under `accelerate launch`, no second copy and no traceback of it
        from distill.train_entry import stop_launcher
        stop_launcher()
    sys.exit(code)
