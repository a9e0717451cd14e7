"""Training the runs of an ablation (one `distill/train.py` subprocess each, resumable) and
collecting each finished run's evaluation."""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional

from ..integrity import read_json, read_tail
from .config import AblationTeacher
from .evaluator import Evaluator
from .plan import Run

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / 'train.py'
LOG_TAIL_BYTES = 64 << 10       # a failed run's last lines: its error line is among them


def finished(run_dir: Path, epochs: int) -> bool:
    """Has the run its summary.json of `epochs` epochs and its model? A summary.json that is no
    regular file, too large or not JSON is one line (read_json), not a run to train again."""
    if not os.path.lexists(run_dir / 'summary.json'):
        return False
    summary = read_json(run_dir / 'summary.json')
    if not isinstance(summary, dict):
        return False
    return summary.get('epochs') == epochs and 'final' in summary and (run_dir / 'model.safetensors').is_file()


# The trainers running now, so that a signal to the command stops them too (they are its
# children, not a process group of their own: `kill PID` alone would leave them training).
_children = set()
_children_lock = threading.Lock()
_stopping = threading.Event()       # set by the signal handler: no trainer starts after it


def stop_trainers_on_signal(say=print):
    """On SIGTERM, SIGINT or SIGHUP: terminate every running trainer (each keeps its last
    checkpoint, so a rerun continues it), say so in one line, and exit with 128 + the signal."""
    def stop(signum, frame):
        with _children_lock:
            _stopping.set()
            running = list(_children)
        for proc in running:
            proc.terminate()
        # Reaped here with waitpid, not proc.wait(): the interrupted thread may hold Popen's lock.
        deadline = time.monotonic() + 30
        left = {proc.pid for proc in running}
        while left and time.monotonic() < deadline:
            left = {pid for pid in left if not _reaped(pid)}
            time.sleep(0.1)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        say(f'stopped by {signal.Signals(signum).name}: {len(running)} training run(s) ended; the same command '
            f'continues them', file=sys.stderr, flush=True)
        os._exit(128 + signum)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)


def _reaped(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return True


def run_trainer(args: List[str], log_path: Path, threads: int) -> Optional[str]:
    """`distill/train.py ARGS resume=true` in a subprocess, output appended to `log_path`; None on
    success, else the trainer's last `error:` line (or its last line)."""
    # resume=true continues from the newest checkpoint, or starts afresh when there is none.
    cmd = [sys.executable, str(TRAIN_SCRIPT), *args, 'resume=true']
    # One thread per job: on a shared CPU, torch's spinning OpenMP threads slow down many-fold.
    env = {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads)}
    with open(log_path, 'a') as log:
        log.write('$ ' + ' '.join(shlex.quote(c) for c in cmd) + '\n')
        log.flush()
        with _children_lock:
            if _stopping.is_set():
                return 'stopped by a signal'
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            _children.add(proc)
        try:
            proc.wait()
        finally:
            with _children_lock:
                _children.discard(proc)
    if proc.returncode != 0:
        try:      # the log's end (what the trainer said last), however long the log grew
            lines = read_tail(log_path, LOG_TAIL_BYTES).decode(errors='replace').strip().splitlines()
        except OSError:
            lines = []
        errors = [line for line in lines if line.startswith('error:')]
        return (errors or lines or [f'exit {proc.returncode}'])[-1][:200]
    return None


def train(run: Run, threads: int) -> Optional[str]:
    """Train one run in a subprocess (resuming a partial one); None on success, else the error."""
    run.dir.mkdir(parents=True, exist_ok=True)
    return run_trainer([run.recipe_path, *run.overrides], run.dir / 'train.log', threads)


def train_teacher(teacher: AblationTeacher, threads: int, say=print, jobs: int = 1) -> Optional[str]:
    """Train each of the config's teachers (teacher.seeds, or the one) from `teacher.recipe` when
    its checkpoint is missing (resuming a partial run), `jobs` at a time; None when every
    checkpoint is there afterwards, else the first error."""
    missing = [(seed, Path(path)) for seed, path in teacher.checkpoints() if not Path(path).is_file()]
    if not missing:
        return None

    def one(item):
        seed, checkpoint = item
        out = checkpoint.parent
        out.mkdir(parents=True, exist_ok=True)
        args = [teacher.recipe, *teacher.overrides, f'student.arch={teacher.arch}', f'train.output_dir={out}',
                'train.progress=false', *([f'train.seed={seed}'] if seed is not None else [])]
        say(f'teacher: {checkpoint} not there yet, training it ({" ".join(args)}; log {out / "train.log"})',
            flush=True)
        start = time.perf_counter()
        error = run_trainer(args, out / 'train.log', threads)
        if error is None and not checkpoint.is_file():
            error = f'the trainer wrote no {checkpoint}'
        if error is None:
            say(f'teacher: {checkpoint} trained in {time.perf_counter() - start:.0f}s', flush=True)
        return error

    with ThreadPoolExecutor(max(1, min(jobs, len(missing)))) as pool:
        errors = [e for e in pool.map(one, missing) if e]
    return errors[0] if errors else None


def execute(runs: List[Run], evaluator: Evaluator, jobs: int, threads: int, keep_checkpoints: bool, say=print):
    # Seed by seed (each seed under every teacher, then the next): an interrupted study still
    # has every variant under every teacher.
    real = sorted((r for r in runs if r.alias_of is None),
                  key=lambda r: (r.seed, -1 if r.teacher_seed is None else r.teacher_seed))
    total = len(runs)
    counter = iter(range(1, total + 1))
    lock = threading.Lock()

    def one(run: Run):
        start = time.perf_counter()
        epochs = run.recipe.train.epochs
        if finished(run.dir, epochs):
            status, error = 'skipped (finished)', None
        else:
            status, error = 'trained', train(run, threads)
        if _stopping.is_set():          # ended by a signal: the handler says so, once
            return
        if error is None and finished(run.dir, epochs):
            if not keep_checkpoints:
                shutil.rmtree(run.dir / 'checkpoints', ignore_errors=True)
            try:
                run.result = collect_result(run, evaluator)
            except Exception as e:   # a bad student must not stop the other runs
                error = f'evaluation failed: {type(e).__name__}: {str(e).splitlines()[0][:160]}'
        elif error is None:
            error = 'trainer exited without a complete summary.json'
        run.result.update(status='failed' if error else status, error=error or '')
        wall = time.perf_counter() - start
        with lock:
            i = next(counter)
            tail = (f'deploy top-1 {run.result["top1"]:.2f}' if run.result.get('eval') == 'deploy'
                    else f'top-1 {run.result["top1"]:.2f} ({run.result["eval"]})') if not error else \
                f'FAILED: {error} (log: {run.dir / "train.log"})'
            # The table's "train s" is the trainer's own time (summary.json, every session of the
            # run); the wall time adds process start-up, skipped work and evaluation.
            train_s = run.result.get('train_s')
            took = (f'{train_s:.0f}s of training, {wall:.0f}s in all' if train_s is not None and run.result['status'] == 'trained'
                    else f'{wall:.0f}s')
            say(f'[{i:>{len(str(total))}}/{total}] {run.label}: {run.result["status"]} ({took}), {tail}', flush=True)

    if jobs == 1:
        for run in real:
            one(run)
    else:
        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, real))
    for run in runs:
        if run.alias_of is not None:
            run.result = {**run.alias_of.result, 'status': f'reused {run.alias_of.label}'}
            i = next(counter)
            say(f'[{i}/{total}] {run.label}: same recipe as {run.alias_of.label} (labels unused): reused', flush=True)


def collect_result(run: Run, evaluator: Evaluator) -> dict:
    summary = read_json(run.dir / 'summary.json')
    metrics = evaluator(run.dir)
    return {**metrics, 'trainer_top1': summary['final'].get('val/top1'),
            # The trainer's key was renamed; read either.
            'train_s': summary.get('train_seconds', summary.get('train_seconds_this_session')),
            'curve': [(h['epoch'], h['val/top1']) for h in summary['history'] if 'val/top1' in h]}
