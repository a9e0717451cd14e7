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
from typing import List

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
    NoIntactCheckpoint, TrainState, load_checkpoint, resume_checkpoint, resumed_changes, save_checkpoint,
    write_on_main, write_text_atomic)
from distill.disk import WriteFailed, estimate_checkpoint_bytes, folder_bytes, space_warning  # noqa: E402
from distill.integrity import checkpoints_newest_first, verified_json  # noqa: E402
from distill.config import SESSION_KEYS, RecipeError, load_recipe  # noqa: E402
from distill.criterion import DistillationCriterion  # noqa: E402
from distill.data import EpochSampler, build_datasets, build_mixup, loader_settings, worker_shortfall  # noqa: E402
from distill.preflight import InputErrors, check_inputs  # noqa: E402
from distill.threads import choose_threads  # noqa: E402
from distill.engine import NonFiniteLoss, evaluate, train_one_epoch  # noqa: E402
from distill.participation import GradientParticipation  # noqa: E402
from distill.run_log import (  # noqa: E402
    FINISHED, epoch_line, epoch_scalars, mark_unfinished, schedule, write_run_description)
from distill.recorders import check_pairs, default_imitated_blocks  # noqa: E402
from distill.terms import TERMS, describe_reductions, feature_modules, recorded_modules  # noqa: E402
from distill.teacher import (  # noqa: E402
    compile_if_faster, compile_module, describe as describe_teacher, prepare_teacher)
from models.errors import CheckpointError, RIFormerError  # noqa: E402


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


def run(recipe, check_only=False):
    cfg = recipe.train
    out = Path(cfg.output_dir)
    problems = check_inputs(recipe)        # files, folders, names, output_dir: all at once
    if problems:
        raise InputErrors(problems)
    if cfg.keep_host_memory:
        host_memory.keep_freed_memory()
    if int(os.environ.get('WORLD_SIZE', 1)) == 1 and not torch.cuda.is_available():
        # A busy machine: fewer threads, not a slower run. A resume keeps the run's thread count:
        # float sums, and so the weights, depend on it.
        threads, note = choose_threads(cfg.threads or (threads_of_run(out) if recipe.resume else None))
        torch.set_num_threads(threads)
        if note:
            print(note, flush=True)
    accelerator = make_accelerator(recipe, out)
    recipe_dict = recipe.to_dict()
    accelerator.wait_for_everyone()     # every process checks before the main one writes
    set_seed(cfg.seed)
    say = accelerator.print

    train_set, val_set, num_classes = build_datasets(recipe.data, cfg.seed, recipe.student.arch)
    teacher, logit_teacher = build_teachers(recipe, num_classes)
    student = build_student(recipe, num_classes, teacher)
    blocks = recipe.distill.blocks or (default_imitated_blocks(student) if teacher is not None else [])
    feature_names = feature_modules(recipe.distill, blocks)      # {term: modules}, what the recorders hook
    used = list(feature_names)
    if used:
        check_pairs(student, teacher, recorded_modules(feature_names), recipe.data.image_size)
    # The teacher follows the student's layout, so every imitated feature pair has one layout.
    layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
    student = student.to(memory_format=layout)
    for t, t_cfg in ((teacher, recipe.teacher), (logit_teacher, recipe.logit_teacher)):
        if t is not None:                # frozen: never prepared, never DDP-wrapped, never saved
            prepare_teacher(t, accelerator.device, t_cfg.precision, layout)
            say(f'teacher {t_cfg.arch}: {describe_teacher(t, accelerator.device)}')
    # Recorders before compiling: the compiled forwards include their hooks.
    global_batch = cfg.batch_size * accelerator.num_processes * recipe.optim.grad_accum
    criterion = DistillationCriterion(recipe.distill, student, teacher, logit_teacher, blocks,
                                      recipe.data.label_smoothing, global_batch, feature_names)
    if check_only:
        say(f'inputs ok: {recipe.student.arch} student, {len(train_set)} train / {len(val_set)} val images, '
            f'{num_classes} classes, teacher {recipe.teacher.arch if teacher is not None else "-"}, '
            f'output_dir {out}')
        student.to(accelerator.device)
        mixup = build_mixup(recipe.data, num_classes)
        for epoch in balance.epochs_to_measure(criterion, 0, cfg.epochs):
            show_balance(accelerator, student, criterion, train_set, recipe, mixup, epoch, layout)
        criterion.remove_hooks()
        return {}
    for t, t_cfg in ((teacher, recipe.teacher), (logit_teacher, recipe.logit_teacher)):
        if t is not None and t_cfg.compile is not None:
            # Timed on a batch of the training shape; evaluation keeps the eager teacher (its
            # last batch is smaller, which a compiled forward would recompile for).
            probe = torch.zeros(cfg.batch_size, 3, recipe.data.image_size, recipe.data.image_size,
                                device=accelerator.device).contiguous(memory_format=layout)
            chosen, line = compile_if_faster(t, t_cfg.compile, probe)
            say(f'teacher {t_cfg.arch} {line}')
            criterion.clear_records()
            criterion.use_teacher_forward(t, chosen)
    compile_module(student, recipe.student.compile)

    lr = recipe.optim.lr * global_batch / 1024
    optimizer = create_optimizer_v2(student, 'adamw', lr=lr, weight_decay=recipe.optim.weight_decay,
                                    betas=tuple(recipe.optim.betas))
    sampler = EpochSampler(len(train_set), cfg.seed)
    loader_kwargs = loader_settings(recipe.data, accelerator.device)
    note = worker_shortfall(recipe.data, int(os.environ.get('LOCAL_WORLD_SIZE', 1)), len(os.sched_getaffinity(0)))
    if note and accelerator.is_main_process:
        print(note, file=sys.stderr, flush=True)
    train_loader = DataLoader(train_set, cfg.batch_size, sampler=sampler, drop_last=True, **loader_kwargs)
    val_loader = DataLoader(val_set, cfg.batch_size, **loader_kwargs)
    if len(train_set) < global_batch:
        raise RecipeError(f'{len(train_set)} training images are fewer than one global batch ({global_batch}); '
                          f'lower train.batch_size')
    student, optimizer, train_loader, val_loader = accelerator.prepare(student, optimizer, train_loader, val_loader)
    # The schedule runs in optimizer updates, counted as accelerate performs them (the prepared
    # loader's batches per process, accumulated), so it ends exactly at the last update for any
    # process count and accumulation; it is not prepared (accelerate would step it once per process).
    epoch_updates = updates_per_epoch(len(train_loader), recipe.optim.grad_accum)
    scheduler = build_scheduler(optimizer, recipe.optim, cfg.epochs, epoch_updates)
    mixup = build_mixup(recipe.data, num_classes)
    participation = GradientParticipation(accelerator.unwrap_model(student), criterion, recipe.data.image_size,
                                          accelerator.device) if needs_unused_parameter_search(recipe) else None
    # Models and data are built from the same seed on every process; from here on each process
    # draws its own randomness (seed + rank, as DeiT): drop path, mixup/cutmix and augmentation
    # differ across processes. A resumed run restores each process's own RNG state below.
    set_seed(cfg.seed, device_specific=True)

    state, changes = TrainState(), {}
    resume_from = resume_checkpoint(accelerator, out) if recipe.resume else None
    if recipe.resume and resume_from is None:
        say(f'resume=true, but {out} holds no complete checkpoint: starting from scratch (epoch 1)')
    state.threads = torch.get_num_threads()
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        state.threads = torch.get_num_threads()
        scheduler.step_update(state.num_updates)
        say(f'resumed from {resume_from} at epoch {state.epoch}')
        changes = resumed_changes(out, recipe_dict)
        for line in describe_resume(changes, state, lr, recipe.optim, epoch_updates):
            say(line)
    if resume_from is None or changes:      # the saved recipe is the run's recipe now
        write_on_main(accelerator, out / 'recipe.yaml', lambda: save_recipe(out, recipe_dict), resume_from)
    if state.epoch < cfg.epochs and accelerator.is_main_process:
        warn_if_short_of_space(out, accelerator.unwrap_model(student), resume_from, cfg.keep_checkpoints,
                               accelerator.num_processes)
    if state.epoch < cfg.epochs:      # a finished run resumed with nothing to do logs nothing
        accelerator.init_trackers('tb')     # (no empty events file in its TensorBoard run)
    if resume_from is None and accelerator.is_main_process:
        write_run_description(accelerator.get_tracker('tensorboard', unwrap=True), recipe_dict,
                              has_teacher=(logit_teacher or teacher) is not None)
    if state.epoch < cfg.epochs and accelerator.is_main_process:
        # A fresh run: 0 at step 0. A resumed one: 0 at the first epoch this session trains, not at
        # the last one done, whose 1 (a finished session) would read 0 again in TensorBoard.
        mark_unfinished(accelerator.get_tracker('tensorboard', unwrap=True), state.epoch + 1 if state.epoch else 0)

    unwrapped = accelerator.unwrap_model(student)
    say(f'{recipe.student.arch}: {sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M params, '
        f'{len(train_set)} train / {len(val_set)} val images, {num_classes} classes, '
        f'{accelerator.num_processes} process(es), global batch {global_batch}, lr {lr:.2e}; '
        f'terms {schedule(recipe.distill, cfg.epochs)}; imitated blocks {blocks if used else "-"}'
        + (f'; feature reductions: {describe_reductions(recipe.distill, criterion.context)}' if used else ''))
    say(f'output: {out.resolve()}  (watch it: tensorboard --logdir {out}, tab CUSTOM SCALARS)')
    start = time.perf_counter()
    last_ckpt = resume_from
    # A resumed run that has no epochs left still reports (and re-saves) its last metrics.
    metrics = {k: v for k, v in state.history[-1].items() if k != 'epoch'} if state.history else {}
    measure_at = balance.epochs_to_measure(criterion, state.epoch, cfg.epochs)
    for epoch in range(state.epoch, cfg.epochs):
        epoch_start = time.perf_counter()
        # accelerate's loader re-sets the sampler's epoch from its own iteration counter, which
        # restarts at 0 in a resumed process: set it through the loader.
        train_loader.set_epoch(epoch)
        if participation is not None:
            frozen = participation.apply(epoch)
            if frozen and (epoch == state.epoch or participation.unused(epoch - 1) != frozen):
                say(f'epoch {epoch + 1}: the active terms {criterion.active_terms(epoch)} reach no gradient to '
                    f'{len(frozen)} parameter tensors (e.g. {sorted(frozen)[0]}): frozen while they are inactive')
        if cfg.loss_balance and epoch in measure_at and accelerator.is_main_process:
            rows = show_balance(accelerator, accelerator.unwrap_model(student), criterion, train_set, recipe, mixup,
                                epoch, layout)
            accelerator.log(balance.scalars(rows), step=epoch + 1)     # the epoch it is measured for
            state.balance.append(balance.record(rows, epoch))
        try:
            train_metrics = train_one_epoch(accelerator, student, criterion, train_loader, optimizer,
                                            scheduler, mixup, epoch, state, recipe, cfg.log_every)
        except NonFiniteLoss as e:
            where = f'last good checkpoint: {last_ckpt}' if last_ckpt else 'no checkpoint was written'
            raise NonFiniteLoss(f'{e}; run stopped, {where}') from None
        state.epoch = epoch + 1
        metrics = dict(train_metrics)
        last_epoch = epoch + 1 == cfg.epochs
        if (epoch + 1) % cfg.eval_every == 0 or last_epoch:
            metrics.update(evaluate(accelerator, student, val_loader, logit_teacher or teacher))
            criterion.clear_records()
            if metrics['val/top1'] > state.best_top1:
                state.best_top1 = metrics['val/top1']
                write_on_main(accelerator, out / 'best.safetensors', lambda: save_student(
                    out / 'best.safetensors', accelerator.unwrap_model(student), recipe, metrics), last_ckpt)
        state.train_seconds += time.perf_counter() - epoch_start
        state.history.append({'epoch': epoch + 1, **{k: round(v, 5) for k, v in metrics.items()}})
        last_lr = optimizer.param_groups[0]['lr']
        accelerator.log(epoch_scalars(metrics, recipe.distill, epoch, last_lr), step=epoch + 1)     # x: epoch from 1
        say(epoch_line(epoch, cfg.epochs, metrics, criterion.active_terms(epoch)))
        if (epoch + 1) % cfg.checkpoint_every == 0 or last_epoch:
            last_ckpt = save_checkpoint(accelerator, out, epoch + 1, state, cfg.keep_checkpoints, last_ckpt)

    final = accelerator.unwrap_model(student)
    write_on_main(accelerator, out / 'model.safetensors', lambda: save_student(out / 'model.safetensors', final, recipe,
                                                                              metrics), last_ckpt)
    summary = {
        'arch': recipe.student.arch, 'epochs': state.epoch, 'num_updates': state.num_updates,
        'final': metrics, 'best_top1': state.best_top1, 'history': state.history,
        'train_seconds': round(state.train_seconds, 2),     # all sessions of the run
        'session_seconds': round(time.perf_counter() - start, 2),
        'processes': accelerator.num_processes,
        'balance': state.balance,
        'best_epoch': best_epoch(state.history, state.best_top1),
    }
    write_on_main(accelerator, out / 'summary.json',
                  lambda: write_text_atomic(out / 'summary.json', json.dumps(summary, indent=2)), last_ckpt)
    say(closing_lines(out, recipe, summary, isinstance(final, models.RIFormer)))
    accelerator.log({FINISHED: 1.}, step=cfg.epochs)      # nothing without trackers: nothing trained
    accelerator.end_training()
    criterion.remove_hooks()
    return metrics


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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ('-h', '--help'):
        from distill.train_entry import show_help
        return show_help(argv)
    check_only = '--check' in argv
    argv = [a for a in argv if a != '--check']
    try:
        recipe = load_recipe(argv[0], argv[1:])
        run(recipe, check_only)
    except InputErrors as e:
        # Every process sees the same inputs: one report, from the first process.
        if int(os.environ.get('RANK', 0)) == 0:
            for problem in e.problems:
                print(f'error: {problem}', file=sys.stderr)
        return 2
    except WriteFailed as e:
        # Every process stops with the same failure: one line, from the first process.
        if int(os.environ.get('RANK', 0)) == 0:
            print(f'error: {e}; {e.when}, resume with: {resume_command(argv)}', file=sys.stderr)
        return 2
    except NoIntactCheckpoint as e:
        if int(os.environ.get('RANK', 0)) == 0:
            print(f'error: {e}', file=sys.stderr)
        return 2
    except (RIFormerError, NonFiniteLoss) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    code = main()
    if code == 2 and int(os.environ.get('RANK', 0)) == 0:
        # our error line is out: under `accelerate launch`, no second copy and no traceback of it
        from distill.train_entry import stop_launcher
        stop_launcher()
    sys.exit(code)
