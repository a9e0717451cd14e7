"""Training-step rows (`--archs train_SIZE`): a plain student step next to module-imitation
steps, each split into where its time goes.

One step = the student's forward, the criterion (the frozen teacher's forward, then the loss
terms), backward and AdamW, exactly as the trainer runs them (`DistillationCriterion`,
`distill.teacher.prepare_teacher`), in the trainer's default layout (channels_last; `--train-layout
nchw` for the other). Rows:

| form | teacher |
|---|---|
| `student-step` | none: cross-entropy only (the baseline, 'vs plain') |
| `imitation-step` | `--teacher-precision` (default auto: bf16 where native, else fp32) |
| `imitation-fp32` | fp32, with the fused PoolFormer inference path on CPU |
| `imitation-fp32-ref` | fp32 through timm's reference forward (what an unfused teacher costs) |
| `imitation-norel` | as `imitation-step`, without L_rel |
| `soft-kd-step` | as `imitation-step`, soft KD only (no feature term) |

The imitation steps use the paper's terms: soft KD + L'_in + L_out + L_rel at the last block of
each stage. The paper recipes do not run them all the whole time: S12's 600 epochs have all
terms for 100, no L_rel for 300 more and soft KD alone for the last 200
(`recipes/riformer_s12.yaml`), which is what the last two rows time. Each call records its phases
(teacher forward, student forward, loss terms, student backward, optimizer); on CUDA every phase
boundary synchronises, which costs a little overlap.
"""
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional

import timm
import torch
import torch.nn as nn

PHASES = ('teacher fwd', 'student fwd', 'loss terms', 'student bwd', 'optimizer')


class TimedModule(nn.Module):
    """Forwards to `module` and adds the seconds each call took to `seconds` (the teacher inside
    the criterion: its forward is timed without changing what the criterion does)."""

    def __init__(self, module: nn.Module, sync: Callable[[], None]):
        super().__init__()
        self.module, self.sync, self.seconds = module, sync, 0.

    def forward(self, x):
        self.sync()
        start = time.perf_counter()
        out = self.module(x)
        self.sync()
        self.seconds += time.perf_counter() - start
        return out


class TrainingStep:
    """A callable training step that records its phase times, one dict per call in `phases`."""

    def __init__(self, student, criterion, optimizer, x, y, amp_dtype: Optional[torch.dtype], sync,
                 compiled: bool = False):
        self.student, self.criterion, self.optimizer = student, criterion, optimizer
        self.x, self.y, self.amp_dtype, self.sync, self.compiled = x, y, amp_dtype, sync, compiled
        self.timed_teacher = None
        if criterion.teacher is not None:
            self.timed_teacher = TimedModule(criterion.teacher, sync)
            criterion.teacher = criterion.logit_teacher = self.timed_teacher
        self.phases: List[Dict[str, float]] = []

    def __call__(self):
        clock, sync = time.perf_counter, self.sync
        if self.timed_teacher is not None:
            self.timed_teacher.seconds = 0.
        device_type = self.x.device.type
        sync()
        t0 = clock()
        with torch.autocast(device_type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits = self.student(self.x)
            sync()
            t1 = clock()
            loss, _ = self.criterion(self.x, logits, self.y, epoch=0)
        sync()
        t2 = clock()
        loss.backward()
        sync()
        t3 = clock()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync()
        t4 = clock()
        teacher = self.timed_teacher.seconds if self.timed_teacher is not None else 0.
        self.phases.append({'teacher fwd': teacher, 'student fwd': t1 - t0, 'loss terms': t2 - t1 - teacher,
                            'student bwd': t3 - t2, 'optimizer': t4 - t3})

    def count_flops(self) -> Optional[int]:
        """FLOPs of one step, counted by torch's FlopCounterMode (convolutions and matrix
        products: the arithmetic that bounds a step) on one more, untimed call. The teacher's
        fused blocks take the reference forward for the count, since the counter does not know
        oneDNN's fused operators; the products are the same. None for compiled steps."""
        if self.compiled:
            return None
        from torch.utils.flop_counter import FlopCounterMode
        import models
        teacher = self.timed_teacher.module if self.timed_teacher is not None else nn.Identity()
        with models.reference_forward(teacher), FlopCounterMode(display=False) as counter:
            self()
        self.phases.pop()                     # not a timed call
        return counter.get_total_flops()


def training_cases(size: str) -> list:
    from .case import Case

    group = f'train-{size}'
    model = f'riformer_{size}'
    return [Case(model, 'student-step', group, make_training_step(size, None), role='plain'),
            Case(model, 'imitation-step', group, make_training_step(size, 'settings')),
            Case(model, 'imitation-fp32', group, make_training_step(size, 'fp32')),
            Case(model, 'imitation-fp32-ref', group, make_training_step(size, 'fp32', fused=False)),
            Case(model, 'imitation-norel', group, make_training_step(size, 'settings', terms='norel')),
            Case(model, 'soft-kd-step', group, make_training_step(size, 'settings', terms='soft'))]


# The feature terms each imitation row runs next to soft KD.
TERM_SETS = {'all': ('l_in_hidden', 'l_out', 'l_rel'), 'norel': ('l_in_hidden', 'l_out'), 'soft': ()}


def make_training_step(size: str, precision: Optional[str], fused: bool = True, terms: str = 'all'):
    """`precision` None: the plain step; 'settings': the teacher precision of the command line.
    `terms`: all (soft KD + L'_in + L_out + L_rel), norel (without L_rel) or soft (soft KD only)."""
    if terms not in TERM_SETS:
        raise ValueError(f'terms {terms!r}: use one of {", ".join(TERM_SETS)}')
    from distill.config import DistillConfig, SoftTermConfig, TermConfig
    from distill.criterion import DistillationCriterion
    from distill.recorders import default_imitated_blocks
    from distill.teacher import compile_module, prepare_teacher

    from .case import random_images
    from .timing import synchronizer

    def make(settings, batch: int):
        device = settings.device
        layout = torch.channels_last if settings.train_layout == 'channels_last' else torch.contiguous_format
        student = timm.create_model(f'riformer_{size}', num_classes=settings.num_classes)
        student = student.to(device, memory_format=layout).train()
        teacher = None
        cfg = DistillConfig(ce=TermConfig(weight=1.0))
        if precision is not None:
            teacher = timm.create_model(f'poolformer_{size}', num_classes=settings.num_classes)
            teacher = prepare_teacher(teacher, device, settings.teacher_precision if precision == 'settings' else precision,
                                      layout)
            if not fused:
                import models
                models.set_fused(teacher, False)
            cfg = DistillConfig(soft=SoftTermConfig(weight=1.0),
                                **{term: TermConfig(weight=1.0) for term in TERM_SETS[terms]})
        criterion = DistillationCriterion(cfg, student, teacher, None, default_imitated_blocks(student))
        if settings.compile:         # after the recorders: the compiled forwards include their hooks
            compile_module(student, 'inductor')
            if teacher is not None:
                compile_module(teacher, 'inductor')
        optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
        x = random_images(replace(settings, dtype='fp32', channels_last=False), batch)
        x = x.contiguous(memory_format=layout)
        y = torch.randint(0, settings.num_classes, (batch,), generator=torch.Generator().manual_seed(0)).to(device)
        amp = settings.torch_dtype if settings.dtype != 'fp32' else None
        return TrainingStep(student, criterion, optimizer, x, y, amp, synchronizer(device), settings.compile)
    return make
