"""The frozen teacher's forward: precision (`teacher.precision`), memory layout, the fused
PoolFormer inference path and torch.compile.

The teacher only supplies targets, so its forward can be cheaper than the student's:

* `bf16` runs it with bfloat16 weights and inputs. On CPUs that compute bf16 natively
  (AVX512-BF16 or AMX on x86, the BF16 extension on Arm) oneDNN's convolutions run several
  times faster than in fp32; elsewhere bf16 is emulated and slower than fp32. `auto` picks bf16
  where it is native (CPU flags, or a CUDA GPU with bf16) and fp32 otherwise.
* On CPUs, PoolFormer blocks take a fused oneDNN path (`models.fuse_poolformer`), in fp32 and
  bf16, exact to the dtype's rounding.
* The teacher runs in the student's memory layout, so each feature pair of the imitation losses
  has one layout (a mixed pair would make every MSE a strided, unvectorised pass).
"""
import time
from typing import Optional

import torch
import torch.nn as nn

import models
from models.cpu import X86_BF16_FLAGS, cpu_bf16_support, cpu_flags  # noqa: F401  (re-exported: the teacher's precision reads them)

from .config import COMPILE_MODES, TEACHER_PRECISIONS as PRECISIONS


def native_bf16(device) -> bool:
    device = torch.device(device)
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == 'cpu' and bool(cpu_bf16_support())


def resolve_precision(precision: str, device) -> torch.dtype:
    """fp32 -> float32; bf16 -> bfloat16 (emulated where not native); auto -> bfloat16 where
    the device computes it natively, else float32."""
    if precision not in PRECISIONS:
        raise ValueError(f'teacher precision {precision!r}: use one of {", ".join(PRECISIONS)}')
    if precision == 'fp32' or (precision == 'auto' and not native_bf16(device)):
        return torch.float32
    return torch.bfloat16


def prepare_teacher(teacher: nn.Module, device, precision: str = 'fp32',
                    memory_format: torch.memory_format = torch.channels_last) -> nn.Module:
    """Frozen, eval mode, on `device`, in the resolved precision and in `memory_format` (the
    student's). On CPUs channels_last is what oneDNN's 1x1 convolutions want (PoolFormer-S12
    forward 0.58 s -> 0.39 s at batch 16, 224 px, 2 threads, fp32). PoolFormer blocks get the
    fused inference path. Call it before registering recorders on the teacher."""
    dtype = resolve_precision(precision, device)
    teacher = teacher.eval().requires_grad_(False).to(device=device, dtype=dtype, memory_format=memory_format)
    models.fuse_poolformer(teacher)
    return teacher


def teacher_dtype(teacher: nn.Module) -> torch.dtype:
    param = next(teacher.parameters(), None)
    return torch.float32 if param is None else param.dtype


def run_teacher(teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The teacher's forward in its own precision: the input follows its weights' dtype and
    autocast is off (a bf16 student autocast must not decide the targets' precision). The
    outputs stay in that dtype; the loss terms compute in float32."""
    with torch.autocast(images.device.type, enabled=False):
        return teacher(images.to(teacher_dtype(teacher)))


def describe(teacher: nn.Module, device) -> str:
    """One line for the trainer's log: the teacher's precision and why."""
    dtype = teacher_dtype(teacher)
    if dtype != torch.bfloat16:
        return 'fp32'
    device = torch.device(device)
    if device.type == 'cpu':
        native = cpu_bf16_support()
        return f'bf16 (native: {native})' if native else 'bf16 (emulated: this CPU has no AVX512-BF16/AMX; slower than fp32)'
    return 'bf16'


def compile_module(module: nn.Module, mode: Optional[str]) -> nn.Module:
    """torch.compile with backend `mode` in place (`nn.Module.compile`: module names, hooks and
    the state dict stay); None leaves it as it is. Compilation happens at the first call."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f'compile mode {mode!r}: use None or one of {", ".join(COMPILE_MODES)}')
    if mode is not None:
        guard_hooks()
        module.compile(backend=mode, dynamic=False)
    return module


def guard_hooks():
    """Make torch.compile's guards check modules' hooks. By default Dynamo skips them
    (`skip_nnmodule_hook_guards`), so a second instance of a class already compiled in the
    process (the benchmark's rows, a teacher next to a logit teacher) reuses the first one's
    code and silently drops the recorders' hooks: no feature would be recorded."""
    torch._dynamo.config.skip_nnmodule_hook_guards = False


def compile_if_faster(teacher: nn.Module, mode: str, images: torch.Tensor, reps: int = 3):
    """torch.compile the frozen teacher with backend `mode` and keep whichever forward is faster
    on `images`, the compiled one or the eager one (on CPUs the fused eager path can win:
    PoolFormer-S12, batch 16, 2 AVX2 cores, fp32: eager 441 ms, Inductor 473 ms after a 28 s
    compile; docs/RESULTS.md). The teacher only runs inference, so the choice can be measured before training.
    The compiled module wraps the same one: parameters and the recorders' hooks are shared.

    Returns:
        (the module to call, a line for the log: compile time and both forward times).
    """
    eager = _forward_seconds(teacher, images, reps)
    guard_hooks()
    compiled = torch.compile(teacher, backend=mode, dynamic=False)
    compile_s = warm_up(compiled, images)
    fast = _forward_seconds(compiled, images, reps)
    kept = 'compiled' if fast < eager else 'eager'
    line = (f'compiled ({mode}) in {compile_s:.1f} s: forward {fast * 1e3:.0f} ms vs eager {eager * 1e3:.0f} ms '
            f'(median of {reps}); {kept} kept')
    return (compiled if fast < eager else teacher), line


def _forward_seconds(teacher: nn.Module, images: torch.Tensor, reps: int) -> float:
    return sorted(warm_up(teacher, images) for _ in range(reps))[reps // 2]


@torch.inference_mode()
def warm_up(teacher: nn.Module, images: torch.Tensor) -> float:
    """Seconds of one teacher forward on `images` (with compile: the compile time)."""
    sync = torch.cuda.synchronize if images.device.type == 'cuda' else (lambda: None)
    sync()
    start = time.perf_counter()
    teacher(images.to(teacher_dtype(teacher)))
    sync()
    return time.perf_counter() - start
