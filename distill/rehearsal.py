"""A rehearsal of a paper recipe on an ImageNet-shaped folder: the recipe as it is, on the
generated folder (tools/imagenet_shaped.py), with a short epoch, run through `accelerate launch`
as a real run would be, watched from outside.

`rehearse` runs three sessions of the trainer and reports

- the step time split into waiting for data and computing (the trainer's `train/data_wait`:
  the seconds the first process waited for its loader, per epoch);
- the peak RSS of each training process and of its DataLoader workers (polled from /proc every
  0.1 s; a worker's RSS counts the pages it shares with its parent again);
- each checkpoint's size and write time (from its temporary folder's appearance to its
  publication, polled every 0.05 s);
- kill and exact resume: a run killed (SIGKILL to the launcher's process group) after its first
  checkpoint and resumed with resume=true ends with the same weights, bit for bit, as the same
  run uninterrupted.

The overrides a rehearsal needs besides data.path and the epoch length (data.max_train_images,
data.max_val_images) are listed with its report: the output folder, a teacher checkpoint of
random non-trivial weights (timm's pretrained ones need the network) and, where this machine
cannot hold or compute the recipe's batch, the per-process batch and the worker count.

`memory_probe` measures, in a fresh process, the peak RSS of one process doing the recipe's
training step (student forward and backward, the teacher, the recorded features, AdamW) at a
batch size and precision, without data or downloads; `memory_fit` extrapolates two batch sizes
linearly to the recipe's batch.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


@dataclass
class Session:
    """What one launch of the trainer did, seen from outside."""
    command: List[str]
    returncode: Optional[int] = None
    wall_s: float = 0.
    killed: bool = False
    peak_rss: Dict[int, int] = field(default_factory=dict)            # training process (by pid order) -> bytes
    peak_worker_rss: Dict[int, int] = field(default_factory=dict)     # its workers together -> bytes
    checkpoint_write_s: Dict[str, float] = field(default_factory=dict)
    log: str = ''


class Watcher(threading.Thread):
    """Polls a launcher's process tree for RSS and its run's checkpoint folder for writes."""

    def __init__(self, pid: int, checkpoints: Path, session: Session, kill_after: Optional[str], delay: float):
        super().__init__(daemon=True)
        self.pid, self.checkpoints, self.session = pid, checkpoints, session
        self.kill_after, self.delay = kill_after, delay
        self.stop = threading.Event()
        self.tmp_seen: Dict[str, float] = {}

    def run(self):
        import psutil
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        published_at = None
        ranks: List[int] = []        # pids of the training processes, in the order first seen
        last_rss = 0.
        while not self.stop.is_set():
            now = time.perf_counter()
            if now - last_rss >= 0.1:
                last_rss = now
                self._rss(root, ranks)
            self._checkpoints(now)
            if self.kill_after and published_at is None and (self.checkpoints / self.kill_after).is_dir():
                published_at = now
            if published_at is not None and now - published_at >= self.delay:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                    self.session.killed = True
                except ProcessLookupError:
                    pass
                return
            time.sleep(0.05)

    def _rss(self, root, ranks):
        import psutil
        try:
            procs = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        trainers = {}
        for p in procs:
            try:
                if any(a.endswith('train.py') for a in p.cmdline()):
                    trainers[p.pid] = p
            except psutil.Error:
                continue
        for pid, p in trainers.items():
            try:
                if p.ppid() in trainers:        # a DataLoader worker: forked from a training process
                    continue
                if pid not in ranks:
                    ranks.append(pid)
                rank = ranks.index(pid)
                rss = p.memory_info().rss
                workers = sum(c.memory_info().rss for c in p.children() if c.pid in trainers)
            except psutil.Error:
                continue
            self.session.peak_rss[rank] = max(self.session.peak_rss.get(rank, 0), rss)
            self.session.peak_worker_rss[rank] = max(self.session.peak_worker_rss.get(rank, 0), workers)

    def _checkpoints(self, now):
        if not self.checkpoints.is_dir():
            return
        try:
            names = [p.name for p in self.checkpoints.iterdir()]
        except OSError:
            return
        for name in names:
            if name.startswith('.tmp-'):
                self.tmp_seen.setdefault(name[5:], now)
            elif name in self.tmp_seen and name not in self.session.checkpoint_write_s:
                self.session.checkpoint_write_s[name] = round(now - self.tmp_seen[name], 2)


def launch_command(recipe: Path, overrides: List[str], processes: int, mixed_precision: str,
                   distributed: bool = False) -> List[str]:
    """The trainer's command: `accelerate launch --multi_gpu` for several processes; for one,
    plain python, or with `distributed` torchrun (accelerate refuses --multi_gpu for one
    process; under torchrun the trainer's Accelerator sets up the process group, NCCL on a GPU)."""
    script = str(ROOT / 'distill' / 'train.py')
    if processes == 1 and distributed:
        return [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1',
                script, str(recipe), *overrides]
    if processes == 1:
        return [sys.executable, script, str(recipe), *overrides]
    return [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', str(processes),
            '--num_machines', '1', '--mixed_precision', mixed_precision, '--dynamo_backend', 'no',
            script, str(recipe), *overrides]


def run_session(command: List[str], out: Path, env: dict, kill_after: Optional[str] = None,
                delay: float = 0., timeout: float = 900.) -> Session:
    """Run the trainer to its end (or kill it `delay` s after checkpoint `kill_after` is published)."""
    session = Session(command)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / f'{out.name}.{"killed" if kill_after else "log"}.txt'
    start = time.perf_counter()
    with open(log_path, 'a') as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        watcher = Watcher(proc.pid, out / 'checkpoints', session, kill_after, delay)
        watcher.start()
        try:
            session.returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            session.returncode = proc.wait()
        watcher.stop.set()
        watcher.join()
    session.wall_s = round(time.perf_counter() - start, 1)
    session.log = str(log_path)
    return session


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def same_weights(a: Path, b: Path) -> Dict[str, object]:
    """Whether two weight files hold the same tensors, bit for bit."""
    import torch
    from safetensors.torch import load_file
    x, y = load_file(str(a)), load_file(str(b))
    differ = [k for k in x if k not in y or x[k].shape != y[k].shape or not torch.equal(x[k], y[k])]
    max_diff = max((float((x[k].float() - y[k].float()).abs().max()) for k in differ
                    if k in y and x[k].shape == y[k].shape), default=0.)
    return {'tensors': len(x), 'differ': len(differ) + len(set(y) - set(x)), 'max_abs_diff': max_diff}


def random_teacher(arch: str, path: Path, classes: int = 1000) -> Path:
    """A teacher checkpoint of random non-trivial weights (distill/balance_proxy.py), in timm's layout."""
    if path.is_file():
        return path
    import timm
    import models
    from distill.balance_proxy import nontrivial_weights
    model = nontrivial_weights(timm.create_model(arch.split('.')[0], num_classes=classes), seed=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    models.write_safetensors(path, model.state_dict(), {'format': 'timm', 'arch': arch.split('.')[0],
                                                       'num_classes': str(classes)})
    return path


def epoch_split(history: List[dict], steps: int) -> List[dict]:
    """Per epoch: seconds per step, of which waiting for data and computing (first process)."""
    rows = []
    for h in history:
        total, wait = h.get('epoch_time'), h.get('train/data_wait')
        if total is None or wait is None:
            continue
        rows.append({'epoch': h['epoch'], 'step_s': round(total / steps, 3), 'data_wait_s': round(wait / steps, 3),
                     'compute_s': round((total - wait) / steps, 3), 'images_per_s': round(h['train/images_per_sec'], 1)})
    return rows


def rehearse(recipe: Path, data: Path, work: Path, batch: int, steps: int, processes: int, workers: Optional[int],
             val_images: int, epochs: int = 2, kill_delay: float = 2., log=print, distributed: bool = False) -> dict:
    """Three sessions (uninterrupted; killed after its first checkpoint; resumed) and the report."""
    from distill.config import load_recipe
    base = load_recipe(recipe, [f'data.path={data}'])
    teacher = random_teacher(base.teacher.arch, work / f'teacher_{base.teacher.arch.split(".")[0]}.safetensors')
    train_images = batch * processes * steps
    overrides = [f'data.path={data}', f'data.max_train_images={train_images}', f'data.max_val_images={val_images}',
                 f'teacher.checkpoint={teacher}', f'train.batch_size={batch}', f'train.epochs={epochs}',
                 'train.checkpoint_every=1', 'train.progress=false']
    if workers is not None:
        overrides.append(f'data.num_workers={workers}')
    recipe_now = load_recipe(recipe, overrides)
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'PYTHONUNBUFFERED': '1'}
    report = {'recipe': str(recipe), 'overrides': overrides, 'processes': processes,
              'per_process_batch': batch, 'recipe_per_process_batch': base.train.batch_size,
              'num_workers': recipe_now.data.num_workers, 'steps_per_epoch': steps, 'epochs': epochs,
              'threads_per_process': env['OMP_NUM_THREADS'], 'sessions': {}}
    runs = {}
    for name, extra, kill in (('uninterrupted', [], None), ('killed', [], 'epoch_0001'),
                              ('resumed', ['resume=true'], None)):
        out = work / ('a' if name == 'uninterrupted' else 'b')
        command = launch_command(recipe, [*overrides, f'train.output_dir={out}', *extra], processes,
                                 recipe_now.train.mixed_precision, distributed)
        log(f'{name}: {" ".join(command[-len(overrides) - len(extra) - 2:])}')
        session = run_session(command, out, env, kill, kill_delay)
        runs[name] = (session, out)
        report['sessions'][name] = {
            'returncode': session.returncode, 'killed': session.killed, 'wall_s': session.wall_s,
            'peak_rss_gib': {r: round(v / GIB, 2) for r, v in sorted(session.peak_rss.items())},
            'peak_worker_rss_gib': {r: round(v / GIB, 2) for r, v in sorted(session.peak_worker_rss.items())},
            'checkpoint_write_s': session.checkpoint_write_s, 'log': session.log}
        log(f'{name}: exit {session.returncode}{" (killed)" if session.killed else ""} after {session.wall_s} s')
        if name == 'killed':
            report['killed_with'] = sorted(p.name for p in (out / 'checkpoints').glob('epoch_*'))
        if session.returncode not in (0, -signal.SIGKILL) and not session.killed:
            report['error'] = f'{name} session failed with exit code {session.returncode}; see {session.log}'
            return report
    from distill.integrity import read_json      # here: it imports torch, which --help must not
    a = work / 'a'
    summary = read_json(a / 'summary.json')      # bounded: a regular file of at most 16 MB
    report['steps'] = epoch_split(summary['history'], steps)
    checkpoints = sorted((a / 'checkpoints').glob('epoch_*'))
    report['checkpoint_mb'] = {p.name: round(folder_bytes(p) / 2 ** 20, 1) for p in checkpoints}
    report['model_mb'] = round((a / 'model.safetensors').stat().st_size / 2 ** 20, 1)
    report['resume'] = same_weights(a / 'model.safetensors', work / 'b' / 'model.safetensors')
    b_summary = read_json(work / 'b' / 'summary.json')
    report['resume']['same_final_metrics'] = learned(summary['final']) == learned(b_summary['final'])
    # the resume is only tested when the killed session left epochs to train
    report['resume']['resumed_session_trained'] = bool(report['sessions']['resumed']['checkpoint_write_s'])
    report['resume']['exact'] = (report['resume']['differ'] == 0 and report['resume']['same_final_metrics']
                                 and report['resume']['resumed_session_trained'])
    return report


TIMINGS = ('epoch_time', 'train/images_per_sec', 'train/data_wait')


def learned(metrics: dict) -> dict:
    """The metrics of what a run computed, without its timings (which no two sessions share),
    at the 5 decimals of the run's history (a resumed run that has nothing left to train reports
    its last epoch from there)."""
    return {k: round(v, 5) for k, v in metrics.items() if k not in TIMINGS}


def report_table(report: dict) -> str:
    """The rehearsal's report as markdown."""
    lines = [f'recipe {report["recipe"]}, {report["processes"]} processes x {report["threads_per_process"]} thread(s), '
             f'per-process batch {report["per_process_batch"]} (recipe: {report["recipe_per_process_batch"]}), '
             f'{report["num_workers"]} loader worker(s) per process, {report["steps_per_epoch"]} steps per epoch, '
             f'{report["epochs"]} epochs', '']
    if 'error' in report:
        return '\n'.join(lines + [f'error: {report["error"]}'])
    lines += ['| epoch | s per step | waiting for data | computing | images/s (all processes) |', '|---:|---:|---:|---:|---:|']
    lines += [f'| {r["epoch"]} | {r["step_s"]:.2f} | {r["data_wait_s"]:.2f} | {r["compute_s"]:.2f} | {r["images_per_s"]:.1f} |'
              for r in report['steps']]
    lines += ['', '| session | exit | wall s | peak RSS per process (GiB) | its workers (GiB) | checkpoint writes (s) |',
              '|---|---:|---:|---|---|---|']
    for name, s in report['sessions'].items():
        rss = ', '.join(f'{v:.2f}' for v in s['peak_rss_gib'].values())
        workers = ', '.join(f'{v:.2f}' for v in s['peak_worker_rss_gib'].values())
        writes = ', '.join(f'{k} {v:.2f}' for k, v in s['checkpoint_write_s'].items()) or '-'
        lines.append(f'| {name} | {s["returncode"]}{" (killed)" if s["killed"] else ""} | {s["wall_s"]} | {rss} | '
                     f'{workers} | {writes} |')
    ckpt = ', '.join(f'{k} {v} MB' for k, v in report['checkpoint_mb'].items())
    r = report['resume']
    killed_with = ', '.join(report.get('killed_with', [])) or 'no checkpoint'
    trained = '' if r.get('resumed_session_trained', True) else ' (the resumed session had nothing left to train: not a test)'
    lines += ['', f'checkpoint size: {ckpt}; model.safetensors {report["model_mb"]} MB',
              f'resume: killed holding {killed_with}, resumed{trained} -> {r["tensors"] - r["differ"]}/{r["tensors"]} tensors '
              f'bit-identical to the uninterrupted run (max |diff| {r["max_abs_diff"]:.3g}), final metrics '
              f'{"identical" if r["same_final_metrics"] else "different"}: '
              f'{"EXACT" if r["exact"] else "NOT EXACT"}']
    return '\n'.join(lines)


# --- memory per process at the recipe's shapes ---------------------------------------------------

def memory_probe(recipe_path: str, batch: int, precision: str, processes: int = 8) -> dict:
    """Peak RSS of this process after two training steps of the recipe at `batch` (call it in a
    fresh process: the peak only grows). precision: the student's autocast, 'fp32' or 'bf16'; the
    teacher keeps the recipe's own (auto: bf16 where native)."""
    import resource
    import timm
    import torch
    import models
    from distill import host_memory
    from distill.balance_proxy import natural_images, nontrivial_weights
    from distill.config import load_recipe
    from distill.criterion import DistillationCriterion
    from distill.recorders import default_imitated_blocks
    from distill.teacher import prepare_teacher
    recipe = load_recipe(recipe_path, [])
    if recipe.train.keep_host_memory:
        host_memory.keep_freed_memory()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    torch.manual_seed(0)
    layout = torch.channels_last
    # as the trainer builds them: the student from the teacher's weights, then the teacher
    # prepared (frozen, fused, the recipe's precision, the student's layout), then the recorders
    teacher = nontrivial_weights(timm.create_model(recipe.teacher.arch.split('.')[0], num_classes=1000), seed=1)
    s = recipe.student
    student = models.create_student(s.arch, 1000, s.drop_path, s.mixer, teacher.state_dict(), None,
                                    s.layer_scale_init).to(memory_format=layout)
    prepare_teacher(teacher, torch.device('cpu'), recipe.teacher.precision, layout)
    blocks = recipe.distill.blocks or default_imitated_blocks(student)
    criterion = DistillationCriterion(recipe.distill, student, teacher, None, blocks, recipe.data.label_smoothing,
                                      recipe.train.batch_size * processes)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    size = recipe.data.image_size
    images = natural_images(batch, size).contiguous(memory_format=layout)
    targets = torch.randint(0, 1000, (batch,))
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    student.train()
    start = time.perf_counter()
    for _ in range(2):
        with torch.autocast('cpu', torch.bfloat16, enabled=precision == 'bf16'):
            logits = student(images)
            loss, _ = criterion(images, logits, targets, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    step_s = (time.perf_counter() - start) / 2
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {'recipe': recipe_path, 'batch': batch, 'precision': precision,
            'teacher_dtype': str(next(criterion.teacher.parameters()).dtype).replace('torch.', ''),
            'built_gib': round(built / GIB, 3), 'peak_gib': round(peak / GIB, 3), 'step_s': round(step_s, 2)}


def probe_in_child(recipe: str, batch: int, precision: str, timeout: float = 600.) -> dict:
    code = ('import json, sys; from distill.rehearsal import memory_probe; '
            f'print(json.dumps(memory_probe({recipe!r}, {batch}, {precision!r})))')
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ['no output'])[-1]
        return {'recipe': recipe, 'batch': batch, 'precision': precision, 'error': tail[:200],
                'returncode': result.returncode}
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory_fit(small: dict, large: dict, batch: int) -> dict:
    """Linear in the batch through two probes: the fixed part (models, optimizer, runtime) and
    the part per image (activations, recorded features, relation matrices), at `batch`."""
    per_image = (large['peak_gib'] - small['peak_gib']) / (large['batch'] - small['batch'])
    fixed = small['peak_gib'] - per_image * small['batch']
    return {'per_image_gib': round(per_image, 4), 'fixed_gib': round(fixed, 2),
            'at_batch': batch, 'predicted_gib': round(fixed + per_image * batch, 1)}
