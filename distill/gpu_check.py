"""The GPU check: what the CPU-only project could not run, run once on the first machine with a
CUDA device, in under 10 minutes on one H100, into one report.

Each check runs in a child process with its own time limit, so a check that hangs (NCCL), runs
out of memory or crashes is a failed row with its reason, and the others still run:

| check | what it runs |
|---|---|
| `environment` | torch / CUDA / cuDNN / NCCL versions, the device, bf16 support |
| `imitation_step` | the paper recipes' module-imitation training step (student forward and backward under bf16 autocast, the fused teacher in its recipe precision, soft KD + L'_in + L_out + L_rel, AdamW) at the recipe's batch, S12 and M48: images/s, peak CUDA memory; also fp32 for S12 |
| `ddp_nccl` | the same step (S12) in a 1-process DistributedDataParallel over NCCL: the gradient all-reduce runs and changes nothing for one process |
| `compile` | the S12 student under `torch.compile` (inductor) in the imitation step: compile seconds, eager vs compiled images/s, a finite compiled loss |
| `rehearsal` | the trainer itself as one torchrun process (NCCL process group; accelerate refuses --multi_gpu for one) on an ImageNet-shaped folder (distill/rehearsal.py): step time split into data wait and compute, peak RSS, checkpoint size and write time, kill and exact resume |
| `input_pipeline` | tools/loader_bench.py on this machine's cores, host-to-device copies pinned vs pageable, `torchvision.io.decode_jpeg` on the device |
| `throughput` | the paper's inference comparison: `tools/benchmark.py --device cuda --forms timm,train,deploy` (PoolFormer vs RIFormer in training and deploy form, S12-M48, batch 128) |

The report folder gets the reports, one log per check and the small files of some checks
(`throughput.md/.csv`, `loader_bench.json`, `rehearsal_report.json` and its sessions' logs); the
generated images and the rehearsal's runs go to a temporary folder (`riformer_gpu_check` under
the system's temp directory), so the report folder stays small enough to copy back.
The report (`gpu_check.json` and `gpu_check.md` in the output folder): the JSON holds
`{"started", "finished", "seconds", "machine": {...}, "checks": [ {"name", "status" (ok | failed |
skipped), "seconds", "limit_s", "result": {...} or "error": "...", "log": "..."} ], "not_checked":
[...]}`; the markdown has one table of the checks (status, seconds, the headline numbers) followed
by each check's own table and the list of what was not checked.
"""
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_CUDA = 0, 1, 2, 3

# (name, seconds allowed): the sum stays under 10 minutes with the start-up of each child
CHECKS = [('environment', 20), ('imitation_step', 90), ('ddp_nccl', 45), ('compile', 120),
          ('rehearsal', 150), ('input_pipeline', 60), ('throughput', 80)]
NOT_CHECKED = [
    'more than one GPU: DDP with several processes, the gradient all-reduce across GPUs and its overlap',
    'several machines: the datasets Arrow folder with split_dataset_by_node, multi-node NCCL',
    'a full epoch of ImageNet and any accuracy (the folder is noise: rehearsal data, never accuracy data)',
    'timm\'s pretrained teacher weights (no network is assumed; the teachers have random weights)',
]


def cuda_available() -> bool:
    import torch
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


# --- the checks, each run in a child process: python -m distill.gpu_check NAME OUT ------------

def check_environment(out: Path) -> dict:
    import torch
    props = torch.cuda.get_device_properties(0)
    return {'device': torch.cuda.get_device_name(0), 'memory_gib': round(props.total_memory / 2 ** 30, 1),
            'capability': f'{props.major}.{props.minor}', 'torch': torch.__version__, 'cuda': torch.version.cuda,
            'cudnn': torch.backends.cudnn.version(), 'nccl': nccl_version(),
            'bf16_native': torch.cuda.is_bf16_supported(including_emulation=False),
            'devices': torch.cuda.device_count(), 'cpu_cores': os.cpu_count()}


def nccl_version() -> str:
    import torch
    version = torch.cuda.nccl.version()          # a tuple in recent torch, an int in older ones
    return '.'.join(map(str, version)) if isinstance(version, tuple) else str(version)


def work_folder() -> Path:
    """Where the bulky files go (the generated folder, the rehearsal's runs and checkpoints): not
    the report folder, which is meant to travel."""
    folder = Path(tempfile.gettempdir()) / 'riformer_gpu_check'
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def rehearsal_folder() -> Path:
    from distill.imagenet_shaped import FolderSpec, write_folder
    data = work_folder() / 'imagenet_shaped'
    write_folder(data, FolderSpec(train_images=1024, val_images=1000), jobs=max(1, (os.cpu_count() or 2) - 1))
    return data


def imitation_setup(recipe_path: str, batch: int, device, seed: int = 0):
    """(student, criterion, images, targets, optimizer) of a paper recipe's imitation step on
    `device`: random non-trivial teacher weights, the student initialised from them, the teacher
    prepared as the trainer prepares it, channels_last."""
    import timm
    import torch
    import models
    from distill.balance_proxy import natural_images, nontrivial_weights
    from distill.config import load_recipe
    from distill.criterion import DistillationCriterion
    from distill.recorders import default_imitated_blocks
    from distill.teacher import prepare_teacher
    recipe = load_recipe(recipe_path, [])
    torch.manual_seed(seed)
    layout = torch.channels_last
    teacher = nontrivial_weights(timm.create_model(recipe.teacher.arch.split('.')[0], num_classes=1000), seed=1)
    s = recipe.student
    student = models.create_student(s.arch, 1000, s.drop_path, s.mixer, teacher.state_dict(), None,
                                    s.layer_scale_init).to(device=device, memory_format=layout)
    prepare_teacher(teacher, device, recipe.teacher.precision, layout)
    blocks = recipe.distill.blocks or default_imitated_blocks(student)
    criterion = DistillationCriterion(recipe.distill, student, teacher, None, blocks, recipe.data.label_smoothing,
                                      batch * 8)
    images = natural_images(batch, recipe.data.image_size).to(device).contiguous(memory_format=layout)
    targets = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(seed)).to(device)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    return recipe, student, criterion, images, targets, optimizer


def time_steps(step: Callable[[], object], warmup: int, reps: int) -> float:
    import torch
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / reps


def imitation_step_fn(student, criterion, images, targets, optimizer, bf16: bool):
    import torch

    def step():
        with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
            logits = student(images)
            loss, _ = criterion(images, logits, targets, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def check_imitation_step(out: Path) -> dict:
    import torch
    from distill.teacher import describe
    device = torch.device('cuda')
    rows = []
    for recipe_path, precision in (('recipes/riformer_s12.yaml', 'bf16'), ('recipes/riformer_s12.yaml', 'fp32'),
                                   ('recipes/riformer_m48.yaml', 'bf16')):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        from distill.config import load_recipe
        batch = load_recipe(recipe_path, []).train.batch_size
        recipe, student, criterion, images, targets, optimizer = imitation_setup(recipe_path, batch, device)
        student.train()
        step = imitation_step_fn(student, criterion, images, targets, optimizer, precision == 'bf16')
        loss = float(step())
        seconds = time_steps(step, 2, 5)
        rows.append({'recipe': Path(recipe_path).stem, 'student_precision': precision, 'batch': batch,
                     'teacher': describe(criterion.teacher, device), 'images_per_s': round(batch / seconds, 1),
                     'step_s': round(seconds, 4), 'peak_memory_gib': round(torch.cuda.max_memory_allocated() / 2 ** 30, 2),
                     'first_loss': round(loss, 5), 'finite': bool(torch.isfinite(torch.tensor(loss)))})
        criterion.remove_hooks()
        del student, criterion, images, targets, optimizer
    return {'rows': rows}


def check_ddp_nccl(out: Path) -> dict:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', '29517')
    dist.init_process_group('nccl', rank=0, world_size=1, device_id=torch.device('cuda', 0))
    try:
        device = torch.device('cuda', 0)
        recipe, student, criterion, images, targets, optimizer = imitation_setup('recipes/riformer_s12.yaml', 64, device)
        student.train()
        before = {n: p.detach().clone() for n, p in student.named_parameters()}
        ddp = DistributedDataParallel(student, device_ids=[0])
        # the same weights from one process: the all-reduce over one rank is the identity
        step = imitation_step_fn(ddp, criterion, images, targets, optimizer, True)
        loss = float(step())
        seconds = time_steps(step, 1, 3)
        probe = torch.ones(4, device=device)
        dist.all_reduce(probe)
        changed = sum(not torch.equal(before[n], p) for n, p in student.named_parameters())
        return {'backend': dist.get_backend(), 'world_size': dist.get_world_size(), 'loss': round(loss, 5),
                'all_reduce_ok': bool(torch.equal(probe, torch.ones(4, device=device))),
                'parameters_updated': f'{changed}/{len(before)}', 'images_per_s': round(64 / seconds, 1)}
    finally:
        dist.destroy_process_group()


def check_compile(out: Path) -> dict:
    import torch
    device = torch.device('cuda')
    recipe, student, criterion, images, targets, optimizer = imitation_setup('recipes/riformer_s12.yaml', 128, device)
    student.train()
    torch.manual_seed(0)
    eager = imitation_step_fn(student, criterion, images, targets, optimizer, True)
    eager_s = time_steps(eager, 2, 5)
    compiled_student = torch.compile(student)
    compiled = imitation_step_fn(compiled_student, criterion, images, targets, optimizer, True)
    start = time.perf_counter()
    compiled()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - start
    compiled_s = time_steps(compiled, 2, 5)
    loss = float(compiled())        # (drop path draws differ between eager and inductor: no loss comparison)
    return {'compile_s': round(compile_s, 1), 'eager_images_per_s': round(128 / eager_s, 1),
            'compiled_images_per_s': round(128 / compiled_s, 1), 'speedup': round(eager_s / compiled_s, 3),
            'compiled_loss': round(loss, 6), 'compiled_loss_finite': bool(torch.isfinite(torch.tensor(loss)))}


def check_rehearsal(out: Path) -> dict:
    import shutil
    from distill.rehearsal import rehearse
    data = rehearsal_folder()
    runs = work_folder() / 'rehearsal'
    shutil.rmtree(runs, ignore_errors=True)
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    # epochs of 3 steps take a second on a GPU: killed the moment epoch 1 is published, with 2 to go
    report = rehearse(Path('recipes/riformer_s12.yaml'), data, runs, 128, 3, 1, workers, 128,
                      epochs=3, kill_delay=0., log=lambda line: print(line, flush=True), distributed=True)
    for log in runs.glob('*.txt'):          # the sessions' logs travel with the report
        shutil.copy(log, out / f'rehearsal_{log.name}')
    (out / 'rehearsal_report.json').write_text(json.dumps(report, indent=2, default=str))
    if 'error' in report:
        raise RuntimeError(report['error'])
    if not report['resume']['exact']:
        raise RuntimeError(f'the resumed run is not bit-identical: {report["resume"]} (rehearsal_report.json)')
    return report


def check_input_pipeline(out: Path) -> dict:
    import torch
    from torchvision.io import decode_jpeg, read_file
    data = rehearsal_folder()           # written by the rehearsal check already, or now
    bench = subprocess.run([sys.executable, 'tools/loader_bench.py', str(data), '--images', '150', '--epochs', '2',
                            '--json', str(out / 'loader_bench.json')],
                           cwd=ROOT, capture_output=True, text=True, timeout=45)
    result = {'loader_bench': bench.stdout[-6000:] if bench.returncode == 0 else f'failed: {bench.stderr[-500:]}'}
    batch = torch.randn(128, 3, 224, 224)
    pinned = batch.pin_memory()
    device = torch.device('cuda')
    for name, source in (('pageable', batch), ('pinned', pinned)):
        seconds = time_steps(lambda: source.to(device, non_blocking=True), 2, 10)
        result[f'h2d_{name}_gb_per_s'] = round(batch.numel() * 4 / seconds / 1e9, 1)
    files = sorted((data / 'train').rglob('*.JPEG'))[:256]
    raw = [read_file(str(f)) for f in files]
    seconds = time_steps(lambda: decode_jpeg(raw, device='cuda'), 1, 3)
    result['decode_jpeg_cuda_images_per_s'] = round(len(raw) / seconds, 1)
    return result


def check_throughput(out: Path) -> dict:
    command = [sys.executable, 'tools/benchmark.py', '--device', 'cuda', '--archs', 's12,s24,s36,m36,m48',
               '--forms', 'timm,train,deploy', '--batch-sizes', '128', '--channels-last', '--reps', '5',
               '--markdown', str(out / 'throughput.md'),
               '--csv', str(out / 'throughput.csv')]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=75)
    if result.returncode != 0:
        raise RuntimeError(f'tools/benchmark.py exited {result.returncode}: {result.stderr.strip()[-300:]}')
    table = (out / 'throughput.md').read_text() if (out / 'throughput.md').is_file() else result.stdout[-6000:]
    return {'command': 'python ' + ' '.join(command[1:]), 'table': table}


FUNCTIONS: Dict[str, Callable[[Path], dict]] = {
    'environment': check_environment, 'imitation_step': check_imitation_step, 'ddp_nccl': check_ddp_nccl,
    'compile': check_compile, 'rehearsal': check_rehearsal, 'input_pipeline': check_input_pipeline,
    'throughput': check_throughput}


# --- the parent: children, limits, the report ------------------------------------------------------

def run_check(name: str, limit: float, out: Path) -> dict:
    """One check in a child process; its row of the report."""
    result_file = out / f'{name}.json'
    log_file = out / f'{name}.log'
    start = time.perf_counter()
    row = {'name': name, 'limit_s': limit, 'log': log_file.name}
    with open(log_file, 'w') as log:
        try:
            proc = subprocess.run([sys.executable, '-m', 'distill.gpu_check', name, str(out)], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=limit)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    row['seconds'] = round(time.perf_counter() - start, 1)
    if code == 0 and result_file.is_file():
        row.update(status='ok', result=json.loads(result_file.read_text()))
    else:
        tail = [line for line in log_file.read_text(errors='replace').splitlines() if line.strip()][-1:] or ['no output']
        row.update(status='failed', error=(f'ran past its {limit} s' if code is None else f'exit {code}: {tail[0][:300]}'))
    return row


def run_all(out: Path, only: Optional[List[str]] = None, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    start = time.perf_counter()
    report = {'started': started, 'machine': {'host': platform.node(), 'python': sys.version.split()[0]},
              'checks': [], 'not_checked': list(NOT_CHECKED)}
    for name, limit in CHECKS:
        if only and name not in only:
            report['checks'].append({'name': name, 'status': 'skipped', 'seconds': 0, 'limit_s': limit,
                                     'error': 'not asked for (--only)'})
            continue
        log(f'{name} (at most {limit} s) ...')
        row = run_check(name, limit, out)
        report['checks'].append(row)
        log(f'{name}: {row["status"]} in {row["seconds"]} s' + (f' ({row["error"]})' if 'error' in row else ''))
        (out / 'gpu_check.json').write_text(json.dumps(report, indent=2))     # a partial report survives a kill
    report['finished'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    report['seconds'] = round(time.perf_counter() - start, 1)
    for row in report['checks']:
        if row['status'] != 'ok':
            report['not_checked'].append(f'{row["name"]}: {row.get("error", row["status"])}')
    (out / 'gpu_check.json').write_text(json.dumps(report, indent=2))
    (out / 'gpu_check.md').write_text(markdown(report))
    return report


def headline(row: dict) -> str:
    """The numbers of a check's row that fit one table cell."""
    r = row.get('result') or {}
    name = row['name']
    if name == 'environment':
        return f'{r.get("device")}, CUDA {r.get("cuda")}, NCCL {r.get("nccl")}, bf16 native {r.get("bf16_native")}'
    if name == 'imitation_step':
        return '; '.join(f'{x["recipe"]} {x["student_precision"]} batch {x["batch"]}: {x["images_per_s"]} img/s, '
                         f'{x["peak_memory_gib"]} GiB' for x in r.get('rows', []))
    if name == 'ddp_nccl':
        return f'{r.get("backend")} world {r.get("world_size")}, all-reduce ok {r.get("all_reduce_ok")}, {r.get("images_per_s")} img/s'
    if name == 'compile':
        return (f'compile {r.get("compile_s")} s, eager {r.get("eager_images_per_s")} -> compiled '
                f'{r.get("compiled_images_per_s")} img/s (x{r.get("speedup")})')
    if name == 'rehearsal':
        resume = r.get('resume', {})
        return f'exact resume {resume.get("exact")}, steps {r.get("steps")}' if resume else r.get('error', '')
    if name == 'input_pipeline':
        return (f'H2D pageable {r.get("h2d_pageable_gb_per_s")} / pinned {r.get("h2d_pinned_gb_per_s")} GB/s, '
                f'decode_jpeg cuda {r.get("decode_jpeg_cuda_images_per_s")} img/s')
    if name == 'throughput':
        return r.get('command', '')
    return ''


def markdown(report: dict) -> str:
    lines = [f'# GPU check ({report["started"]}, {report.get("seconds", "?")} s)', '',
             '| check | status | seconds (limit) | headline |', '|---|---|---:|---|']
    for row in report['checks']:
        cell = headline(row) if row['status'] == 'ok' else row.get('error', '')
        lines.append(f'| {row["name"]} | {row["status"]} | {row["seconds"]} ({row["limit_s"]}) | {cell.replace("|", "/")} |')
    for row in report['checks']:
        if row['status'] == 'ok' and row['name'] == 'throughput':
            lines += ['', '## throughput', '', row['result']['table']]
        if row['status'] == 'ok' and row['name'] == 'rehearsal':
            from distill.rehearsal import report_table
            lines += ['', '## rehearsal', '', report_table(row['result'])]
        if row['status'] == 'ok' and row['name'] == 'input_pipeline':
            lines += ['', '## input pipeline', '', row['result']['loader_bench']]
    lines += ['', '## not checked', ''] + [f'- {item}' for item in report['not_checked']]
    return '\n'.join(lines) + '\n'


def child(name: str, out: Path) -> int:
    result = FUNCTIONS[name](out)
    (out / f'{name}.json').write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == '__main__':
    sys.exit(child(sys.argv[1], Path(sys.argv[2])))
