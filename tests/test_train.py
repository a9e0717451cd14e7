"""The trainer end to end on digits: every digits recipe, resume, two processes, bad input."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

import models
from distill import train as train_mod
from distill.criterion import DistillationCriterion
from helpers import FAST_TRAIN, run_cut_at

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / 'recipes' / 'digits'
# Small and quick: 20% of digits for training (360 images), 1 epoch, no progress bar.
FAST = FAST_TRAIN


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('fresh_accelerate_state')]   # conftest.py


def run_main(capsys, recipe, *overrides):
    code = train_mod.main([str(recipe), *FAST, *overrides])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope='session')
def teacher_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp('teacher')
    assert train_mod.main([str(DIGITS / 'teacher.yaml'), *FAST, 'train.epochs=2', f'train.output_dir={out}']) == 0
    from accelerate.state import AcceleratorState
    AcceleratorState._reset_state(reset_partial_state=True)
    return out / 'model.safetensors'


def tb_scalars(run_dir, tag):
    """[(step, value)] of one scalar tag over all event files of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    points = []
    for events in Path(run_dir, 'tb').rglob('events.out.tfevents.*'):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if tag in acc.Tags()['scalars']:
            points += [(e.step, e.value) for e in acc.Scalars(tag)]
    return sorted(points)


def finished_mark(run_dir):
    """The last `run/finished` value a run wrote (its event files read in the order its sessions
    wrote them, as TensorBoard does); None if it wrote none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    last = None
    for events in sorted(Path(run_dir, 'tb').glob('events.out.tfevents.*')):
        acc = EventAccumulator(str(events))
        acc.Reload()
        if 'run/finished' in acc.Tags()['scalars']:
            last = acc.Scalars('run/finished')[-1].value
    return last


def tb_tags(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tags = set()
    for events in Path(run_dir, 'tb').rglob('events.out.tfevents.*'):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()['scalars'])
    return tags


@pytest.mark.parametrize('name', ['imitation', 'feature', 'plain'])
def test_digits_recipe_one_epoch(name, teacher_ckpt, tmp_path, capsys):
    out = tmp_path / name
    teacher = [] if name == 'plain' else [f'teacher.checkpoint={teacher_ckpt}']
    code, _, err = run_main(capsys, DIGITS / f'{name}.yaml', 'train.epochs=1', f'train.output_dir={out}', *teacher)
    assert code == 0, err
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['epochs'] == 1 and summary['final']['val/top1'] > 20      # 10 classes: chance is 10
    recipe = models.read_checkpoint(out / 'model.safetensors')
    assert recipe.config.arch == 'riformer_mini'
    tags = tb_tags(out)
    assert {'step/lr', 'step/loss/total', 'loss/total', 'val/top1', 'val/top5', 'train/top1', 'train/top5',
            'train/images_per_sec', 'train/epoch_time', 'train/lr', 'run/finished'} <= tags
    terms = {t for t in ('ce', 'soft', 'l_in_hidden', 'l_out', 'l_rel') if f'loss/{t}' in tags}
    expected = {'imitation': {'soft', 'l_in_hidden', 'l_out', 'l_rel'}, 'feature': {'soft', 'l_in_hidden'},
                'plain': {'ce'}}[name]
    assert terms == expected
    # The student file is what tools/reparam.py takes.
    result = models.reparam_checkpoint(out / 'model.safetensors', log=lambda *_: None)
    assert result['max_rel_error'] < 1e-5


def test_teacher_recipe_outputs(teacher_ckpt):
    out = teacher_ckpt.parent
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['arch'] == 'poolformer_mini' and len(summary['history']) == 2
    assert (out / 'best.safetensors').exists() and (out / 'checkpoints' / 'latest').read_text() == 'epoch_0002'
    teacher = models.create_teacher('poolformer_mini', teacher_ckpt)   # the file is a usable teacher
    assert teacher.num_classes == 10


def _cmd(out, *extra):
    return [sys.executable, str(ROOT / 'distill' / 'train.py'), str(DIGITS / 'imitation.yaml'), *FAST,
            'train.epochs=3', 'train.checkpoint_every=1', 'distill.l_rel.end=1', 'distill.l_out.end=2',
            f'train.output_dir={out}', *extra]


def test_resume_after_kill_is_exact(teacher_ckpt, tmp_path):
    t = f'teacher.checkpoint={teacher_ckpt}'
    subprocess.run(_cmd(tmp_path / 'full', t), check=True, capture_output=True)
    proc = subprocess.Popen(_cmd(tmp_path / 'killed', t), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / 'killed' / 'checkpoints' / 'epoch_0001' / 'train_state.json').exists():
        assert proc.poll() is None and time.time() < deadline, 'run ended before its first checkpoint'
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / 'killed' / 'model.safetensors').exists()
    # TensorBoard tells the killed run from the finished one.
    assert finished_mark(tmp_path / 'killed') == 0 and finished_mark(tmp_path / 'full') == 1
    # The last good checkpoint is loadable as it stands.
    assert load_file(str(tmp_path / 'killed' / 'checkpoints' / 'epoch_0001' / 'model.safetensors'))
    result = subprocess.run(_cmd(tmp_path / 'killed', t, 'resume=true'), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'resumed from' in result.stdout
    assert finished_mark(tmp_path / 'killed') == 1
    a = load_file(str(tmp_path / 'full' / 'model.safetensors'))
    b = load_file(str(tmp_path / 'killed' / 'model.safetensors'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_processes(teacher_ckpt, tmp_path):
    out = tmp_path / 'mp'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           '--main_process_port', '29517',
           str(ROOT / 'distill' / 'train.py'), str(DIGITS / 'imitation.yaml'), *FAST, 'train.epochs=1',
           f'teacher.checkpoint={teacher_ckpt}', f'train.output_dir={out}']
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['processes'] == 2
    ckpt = out / 'checkpoints' / 'epoch_0001'
    assert (ckpt / 'rng_0.json').exists() and (ckpt / 'rng_1.json').exists()
    assert 'global batch 64' in result.stdout        # 2 x 32: the lr scales with it


def _launch_two(out, port, *extra):
    return [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
            '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
            '--main_process_port', str(port), str(ROOT / 'distill' / 'train.py'), str(DIGITS / 'plain.yaml'),
            *FAST, 'train.epochs=2', 'train.checkpoint_every=1', 'train.keep_checkpoints=2', 'student.drop_path=0.2',
            'data.mixup=0.4', f'train.output_dir={out}', *extra]


def test_two_processes_resume_is_exact(tmp_path):
    """Per-process randomness (seed + rank: drop path, mixup, augmentation) is restored per
    process: a two-process run resumed from its epoch-1 checkpoint ends with the same weights
    as the uninterrupted run (the checkpoint is copied into a fresh run directory, as a killed
    run would have left it)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    full = subprocess.run(_launch_two(tmp_path / 'full', 29521), capture_output=True, text=True, env=env, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    cut = run_cut_at(tmp_path / 'full', tmp_path / 'cut')
    resumed = subprocess.run(_launch_two(cut, 29522, 'resume=true'), capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert 'resumed from' in resumed.stdout and 'at epoch 1' in resumed.stdout
    a = load_file(str(tmp_path / 'full' / 'model.safetensors'))
    b = load_file(str(cut / 'model.safetensors'))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# Runs the trainer with a logged probe term worth rank + 1 on each process: what the logs
# show for it is the mean over processes (1.5 with two), not the main process's own (1.0).
PROBE = """
import sys
import torch
sys.path.insert(0, {root!r})
from distill import train
from distill.criterion import DistillationCriterion
original = DistillationCriterion.forward

def forward(self, images, logits, targets, epoch):
    total, terms = original(self, images, logits, targets, epoch)
    terms['probe'] = torch.tensor(torch.distributed.get_rank() + 1.0)
    return total, terms

DistillationCriterion.forward = forward
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.fixture(scope='module')
def feature_only_two_processes(teacher_ckpt, tmp_path_factory):
    """The identity-student recipe with soft KD off (feature terms only: the head gets no
    gradient), accumulation 2 and batch_sum, on two CPU processes."""
    tmp = tmp_path_factory.mktemp('feature2p')
    script = tmp / 'probe.py'
    script.write_text(PROBE.format(root=str(ROOT)))
    out = tmp / 'run'
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
           '--main_process_port', '29519',
           str(script), str(DIGITS / 'feature.yaml'), *FAST, 'train.epochs=1', 'train.log_every=1',
           'distill.soft.weight=0', 'optim.grad_accum=2', 'optim.warmup_epochs=0',
           'distill.feature_reduction=batch_sum', f'teacher.checkpoint={teacher_ckpt}', f'train.output_dir={out}']
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return result, out


def test_two_processes_feature_terms_only(feature_only_two_processes):
    """Parameters without gradients (the head, with soft KD off) do not stop DDP."""
    result, out = feature_only_two_processes
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['processes'] == 2 and set(summary['final']) >= {'loss/l_in_hidden', 'val/top1'}
    assert 'loss/soft' not in summary['final']


def test_two_processes_lambda_uses_the_global_batch(feature_only_two_processes):
    result, _ = feature_only_two_processes
    assert result.returncode == 0, result.stderr[-3000:]
    # 32 per process x 2 processes x 2 accumulation steps
    assert 'global batch 128' in result.stdout and 'feature reductions: l_in_hidden batch_sum (x128)' in result.stdout


def test_two_processes_schedule_ends_at_the_last_update(feature_only_two_processes):
    """359 images, 32 per process: 11 batches, 6 per process, 3 updates with accumulation 2
    (the last one closes a partial window); the cosine reaches min_lr at the last update."""
    result, out = feature_only_two_processes
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    lrs = dict(tb_scalars(out, 'step/lr'))                  # logged after each update
    assert summary['num_updates'] == 3 and sorted(lrs) == [1, 2, 3]
    assert lrs[3] == pytest.approx(1e-5) and lrs[2] > 1e-5 * 10


def test_two_processes_log_the_mean_over_processes(feature_only_two_processes):
    result, out = feature_only_two_processes
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['final']['loss/probe'] == pytest.approx(1.5)
    logged = tb_scalars(out, 'step/loss/probe')       # each update
    assert [step for step, _ in logged] == [1, 2, 3] and all(v == pytest.approx(1.5) for _, v in logged)
    assert tb_scalars(out, 'loss/probe') == [(1, pytest.approx(1.5))]     # the epoch mean, at epoch 1


def test_two_processes_draw_different_randomness(feature_only_two_processes):
    """Each process is seeded with seed + rank (DeiT): their RNG streams differ, so drop path,
    mixup and augmentation differ across processes."""
    result, out = feature_only_two_processes
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = out / 'checkpoints' / 'epoch_0001'
    rng = [json.loads((ckpt / f'rng_{i}.json').read_text()) for i in (0, 1)]
    assert rng[0]['torch'] != rng[1]['torch'] and rng[0]['numpy'] != rng[1]['numpy']


def test_schedule_ends_at_the_last_update_with_accumulation(tmp_path, capsys):
    """One process, 11 batches, accumulation 3: 4 updates (the last one closes a partial
    window), and the schedule is built for exactly those 4."""
    out = tmp_path / 'accum'
    code, _, err = run_main(capsys, DIGITS / 'plain.yaml', 'train.epochs=1', 'optim.grad_accum=3',
                            'optim.warmup_epochs=0', 'train.log_every=1', f'train.output_dir={out}')
    assert code == 0, err
    lrs = dict(tb_scalars(out, 'step/lr'))
    assert json.loads((out / 'summary.json').read_text())['num_updates'] == 4 and sorted(lrs) == [1, 2, 3, 4]
    assert lrs[4] == pytest.approx(1e-5) and lrs[3] > 1e-5 * 10


def test_trainer_student_takes_the_head_of_a_sail_teacher(tmp_path):
    """student.init_from_teacher with an original-layout PoolFormer: the student's head is the
    teacher's (GroupNorm on the map, then pool), so both give the same logits on one feature map."""
    from distill.config import load_recipe
    from helpers import network_layout, randomize
    source = randomize(timm.create_model('poolformer_mini', num_classes=10), 6)
    torch.save(network_layout(source), tmp_path / 'sail.pth')
    recipe = load_recipe(DIGITS / 'imitation.yaml', [f'teacher.checkpoint={tmp_path / "sail.pth"}'])
    teacher, _ = train_mod.build_teachers(recipe, 10)
    student = train_mod.build_student(recipe, 10)
    feats = torch.randn(2, student.num_features, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert models.relative_error(teacher.forward_head(feats), student.forward_head(feats)) < 1e-6


def test_bad_inputs_fail_before_training(teacher_ckpt, tmp_path, capsys):
    plain = DIGITS / 'plain.yaml'
    cases = [
        (plain, ['train.epoch=1'], "unknown recipe key 'train.epoch'"),
        (plain, ['train.epochs=one'], 'train.epochs: expected int'),
        (plain, ['data.source=folder', f'data.path={tmp_path / "nowhere"}'], 'nowhere does not exist'),
        (plain, ['data.source=folder', f'data.path={tmp_path}'], 'no train/ folder of class subfolders'),
        (plain, ['data.source=hf_disk', f'data.path={tmp_path / "nowhere"}'], 'nowhere does not exist'),
        (DIGITS / 'imitation.yaml', ['teacher.arch=poolformer_s12', f'teacher.checkpoint={teacher_ckpt}'],
         'shape mismatch: stem.conv.weight'),
        (DIGITS / 'imitation.yaml', [f'teacher.checkpoint={tmp_path / "missing.safetensors"}'],
         'teacher.checkpoint ' + str(tmp_path / 'missing.safetensors') + ': no such file; train the teacher first'),
        (DIGITS / 'imitation.yaml', ['teacher.checkpoint=null'], 'teacher has no weights: set teacher.checkpoint=PATH'),
        (DIGITS / 'imitation.yaml', [f'teacher.checkpoint={teacher_ckpt}', 'distill.blocks=[stages.9.blocks.0]'],
         "has no module 'stages.9.blocks.0"),
        (tmp_path / 'none.yaml', [], 'no such recipe file'),
    ]
    for recipe, overrides, message in cases:
        code, out, err = run_main(capsys, recipe, *overrides, f'train.output_dir={tmp_path / "bad"}')
        lines = err.strip().splitlines()
        assert code == 2 and all(line.startswith('error: ') for line in lines), (overrides, err)
        assert any(message in line for line in lines), (overrides, err)
    assert not (tmp_path / 'bad' / 'summary.json').exists()


def test_output_dir_guard(tmp_path, capsys):
    plain, out = DIGITS / 'plain.yaml', tmp_path / 'run'
    assert run_main(capsys, plain, 'train.epochs=1', f'train.output_dir={out}')[0] == 0
    code, _, err = run_main(capsys, plain, 'train.epochs=1', f'train.output_dir={out}')
    assert code == 2 and 'already holds a run; pass resume=true' in err
    code, _, err = run_main(capsys, plain, 'train.epochs=1', 'optim.lr=0.5', 'resume=true', f'train.output_dir={out}')
    assert code == 2 and 'holds a different run (changed: optim.lr)' in err
    # Resuming a finished run with more epochs continues it.
    code, out_text, err = run_main(capsys, plain, 'train.epochs=2', 'resume=true', f'train.output_dir={out}')
    assert code == 0, err
    assert json.loads((out / 'summary.json').read_text())['epochs'] == 2


def test_resume_says_what_changed_and_when_it_starts_from_scratch(tmp_path, capsys):
    plain, out = DIGITS / 'plain.yaml', tmp_path / 'run'
    code, text, err = run_main(capsys, plain, 'train.epochs=1', 'resume=true', f'train.output_dir={out}')
    assert code == 0, err
    assert f'resume=true, but {out} holds no complete checkpoint: starting from scratch' in text
    # 359 images / 32: 11 updates per epoch; warmup 1 epoch; lr 0.02 x 32 / 1024.
    code, text, err = run_main(capsys, plain, 'train.epochs=2', 'resume=true', f'train.output_dir={out}')
    assert code == 0, err
    lr, min_lr = 0.02 * 32 / 1024, 1e-5
    new_lr = min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * 11 / 22))
    assert (f'resume: train.epochs 1 -> 2: the cosine schedule is rebuilt to end at update 22 instead of 11; '
            f'training continues at update 11 with lr {new_lr:.2e} (the old schedule was at {min_lr:.2e})') in text
    # The saved recipe is the run's recipe now: resuming again with 2 epochs changes nothing.
    code, text, err = run_main(capsys, plain, 'train.epochs=2', 'resume=true', f'train.output_dir={out}')
    assert code == 0 and 'resume: train.epochs' not in text


def test_nan_loss_stops_naming_the_term(teacher_ckpt, tmp_path, capsys, monkeypatch):
    original = DistillationCriterion.forward

    def poisoned(self, images, logits, targets, epoch):
        total, terms = original(self, images, logits, targets, epoch)
        if epoch == 1:
            terms['l_out'] = terms['l_out'] * float('nan')
            total = total + terms['l_out']
        return total, terms

    monkeypatch.setattr(DistillationCriterion, 'forward', poisoned)
    out = tmp_path / 'nan'
    code, _, err = run_main(capsys, DIGITS / 'imitation.yaml', 'train.epochs=3', 'train.checkpoint_every=1',
                            f'teacher.checkpoint={teacher_ckpt}', f'train.output_dir={out}')
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert 'non-finite loss at epoch 1' in line and 'l_out=nan' in line
    assert f'last good checkpoint: {out / "checkpoints" / "epoch_0001"}' in line
    assert (out / 'checkpoints' / 'latest').read_text() == 'epoch_0001'
    assert load_file(str(out / 'checkpoints' / 'epoch_0001' / 'model.safetensors'))


def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / 'distill' / 'train.py'), str(DIGITS / 'plain.yaml'),
                             'train.epochz=1'], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "error: unknown recipe key 'train.epochz' (did you mean train.epochs?)"


def _digit_images(n):
    from distill.data import DigitsDataset
    ds = DigitsDataset('train', 32, 0.2)
    return [(ds.images[i], ds.targets[i]) for i in range(n)]


def test_image_folder_and_saved_datasets_train(tmp_path, capsys):
    """The non-embedded sources: an ImageNet-style folder and a `datasets` DatasetDict on disk."""
    import datasets
    items = _digit_images(120)
    for split, chunk in (('train', items[:80]), ('val', items[80:])):
        for i, (image, label) in enumerate(chunk):
            folder = tmp_path / 'folder' / split / f'class_{label}'
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f'{i}.png')
    features = datasets.Features({'img': datasets.Image(), 'digit': datasets.ClassLabel(num_classes=10)})
    dd = datasets.DatasetDict({
        'train': datasets.Dataset.from_dict({'img': [i for i, _ in items[:80]], 'digit': [l for _, l in items[:80]]}, features=features),
        'test': datasets.Dataset.from_dict({'img': [i for i, _ in items[80:]], 'digit': [l for _, l in items[80:]]}, features=features),
    })
    dd.save_to_disk(str(tmp_path / 'hf'))
    plain = DIGITS / 'plain.yaml'
    code, _, err = run_main(capsys, plain, 'train.epochs=1', 'train.batch_size=16', 'data.source=folder',
                            f'data.path={tmp_path / "folder"}', 'data.val_split=val', f'train.output_dir={tmp_path / "a"}')
    assert code == 0, err
    summary = json.loads((tmp_path / 'a' / 'summary.json').read_text())
    assert summary['num_updates'] == 5
    # The reported top-1 is the saved model's accuracy on the val/ folder, recomputed here by
    # hand (32 px images, riformer_mini's protocol: no resize or crop, ImageNet statistics).
    model = models.load_model(tmp_path / 'a' / 'model.safetensors')
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    images = torch.stack([(torch.tensor(np.asarray(im)).permute(2, 0, 1) / 255. - mean) / std for im, _ in items[80:]])
    with torch.no_grad():
        hits = (model(images).argmax(1) == torch.tensor([label for _, label in items[80:]])).sum().item()
    assert summary['final']['val/top1'] == pytest.approx(100. * hits / 40)
    code, _, err = run_main(capsys, plain, 'train.epochs=1', 'train.batch_size=16', 'data.source=hf_disk',
                            f'data.path={tmp_path / "hf"}', 'data.val_split=test', 'data.image_column=img',
                            'data.label_column=digit', f'train.output_dir={tmp_path / "b"}')
    assert code == 0, err
    assert models.read_checkpoint(tmp_path / 'b' / 'model.safetensors').config.num_classes == 10
    code, _, err = run_main(capsys, plain, 'data.source=hf_disk', f'data.path={tmp_path / "hf"}',
                            f'train.output_dir={tmp_path / "c"}')
    assert code == 2 and "no split 'validation' (splits: ['train', 'test'])" in err


def _tb_run(run_dir):
    """(scalars {tag: [(step, value)]}, hparams {name: value}, hparam metric tags, text tags,
    number of session starts) of a run folder; fails if TensorBoard would see subfolder runs."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    tb = Path(run_dir, 'tb')
    assert [p for p in tb.iterdir() if p.is_dir()] == []          # one run: no timestamped subfolders
    acc = EventAccumulator(str(tb), size_guidance={'scalars': 0, 'tensors': 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()['scalars']}
    content = acc.PluginTagToContent('hparams')
    data = plugin_data_pb2.HParamsPluginData.FromString(content['_hparams_/session_start_info'])
    hparams = {k: v.WhichOneof('kind') and getattr(v, v.WhichOneof('kind'))
               for k, v in data.session_start_info.hparams.items()}
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content['_hparams_/experiment']).experiment
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    starts = sum(v.tag == '_hparams_/session_start_info' for f in tb.glob('events.out.tfevents.*')
                 for e in EventFileLoader(str(f)).Load() for v in e.summary.value)
    return scalars, hparams, metric_tags, set(acc.Tags()['tensors']), starts


def test_tensorboard_one_run_with_hparams_metrics_and_term_weights(teacher_ckpt, tmp_path, capsys):
    out = tmp_path / 'tb_run'
    args = [f'teacher.checkpoint={teacher_ckpt}', f'train.output_dir={out}', 'distill.l_rel.end=1',
            'train.progress=true']
    code, stdout, err = run_main(capsys, DIGITS / 'imitation.yaml', 'train.epochs=1', *args)
    assert code == 0, err
    # Not a terminal: plain progress lines, epochs counted from 1 as in the epoch line; no \r frames.
    assert '\r' not in stdout + err
    assert 'epoch 1/1 step 2/11 loss ' in stdout
    epoch = [line for line in stdout.splitlines() if line.startswith('epoch 1/1 loss')]
    assert len(epoch) == 1 and 'train top-1' in epoch[0] and 'val top-1' in epoch[0], stdout
    assert '(soft+l_in_hidden+l_out+l_rel)' in epoch[0]
    code, stdout, err = run_main(capsys, DIGITS / 'imitation.yaml', 'train.epochs=2', 'resume=true', *args)
    assert code == 0, err
    # After a resume the banner still lists every term of the recipe with its window.
    assert 'l_rel x1 (epoch 1)' in stdout and 'l_out x1 (epochs 1-2)' in stdout, stdout
    assert [line.split(' (')[1].split(')')[0] for line in stdout.splitlines() if line.startswith('epoch 2/2 loss')] == \
        ['soft+l_in_hidden+l_out']

    files = sorted((out / 'tb').glob('events.out.tfevents.*'))
    assert len(files) == 2                               # one per session that trained
    code, _, err = run_main(capsys, DIGITS / 'imitation.yaml', 'train.epochs=2', 'resume=true', *args)
    assert code == 0 and sorted((out / 'tb').glob('events.out.tfevents.*')) == files   # nothing left to train
    scalars, hparams, metric_tags, tensor_tags, starts = _tb_run(out)
    assert starts == 1                                   # the resume added no second description
    assert metric_tags == ['val/top1', 'val/teacher_agreement', 'val/top5', 'run/finished']
    assert 'val/top1' in scalars and len(scalars['val/teacher_agreement']) == 2
    assert hparams['distill.l_rel.end'] == 1 and hparams['student.arch'] == 'riformer_mini'
    assert 'resume' not in hparams and 'train.progress' not in hparams
    assert any(t.startswith('recipe') for t in tensor_tags)
    # A term's weight is logged while its window is open, at the epochs of the window.
    assert scalars['loss/weight/l_rel'] == [(1, 1.0)] and scalars['loss/weight/l_out'] == [(1, 1.0), (2, 1.0)]


def _tb_description(run_dir):
    """(custom-scalars layout, HPARAMS experiment, HPARAMS session start) a run wrote when it started."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2
    acc = EventAccumulator(str(Path(run_dir, 'tb')), size_guidance={'tensors': 0})
    acc.Reload()
    layout = layout_pb2.Layout.FromString(acc.Tensors('custom_scalars__config__')[0].tensor_proto.string_val[0])
    content = acc.PluginTagToContent('hparams')
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content['_hparams_/experiment']).experiment
    start = plugin_data_pb2.HParamsPluginData.FromString(content['_hparams_/session_start_info']).session_start_info
    return layout, experiment, start


def test_tensorboard_layout_epoch_axis_and_hparams_keys(teacher_ckpt, tmp_path, capsys):
    """The layout opens on validation and loss terms and charts every tag; epoch-level scalars
    are against epochs, step/ ones against updates; HPARAMS holds the keys that say what the run
    trains, those off their defaults first, and val/top1 as the first metric."""
    from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit
    out = tmp_path / 'tb_layout'
    code, _, err = run_main(capsys, DIGITS / 'imitation.yaml', 'train.epochs=2', 'distill.l_rel.end=1',
                            f'teacher.checkpoint={teacher_ckpt}', f'train.output_dir={out}')
    assert code == 0, err
    scalars = _tb_run(out)[0]
    layout, experiment, start = _tb_description(out)

    assert [c.title.split(' (')[0] for c in layout.category][:2] == ['validation', 'loss terms']
    assert not any(c.closed for c in layout.category[:2])
    charts = {chart.title: chart.multiline.tag[0] for c in layout.category for chart in c.chart}
    assert [t for t in scalars if not any(re.match(regex, t) for regex in charts.values())] == []
    assert [title for title, regex in charts.items() if not any(re.match(regex, t) for t in scalars)] == []

    for tag in ('val/top1', 'val/teacher_agreement', 'loss/total', 'loss/l_out', 'train/top1', 'train/lr',
                'train/epoch_time', 'balance/grad_share/soft'):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag          # x: the epoch, from 1
    updates = json.loads((out / 'summary.json').read_text())['num_updates']
    assert [step for step, _ in scalars['step/lr']] == list(range(2, updates + 1, 2))   # x: the update (log_every 2)
    assert scalars['run/finished'] == [(0, 0.0), (2, 1.0)]

    keys = set(start.hparams)
    assert not [k for k in keys if k.startswith('data.clutter.')]                 # digits draws no clutter
    assert not keys & {'resume', 'train.progress', 'train.output_dir', 'data.path', 'distill.hard.start'}
    assert {'student.arch', 'data.split_seed', 'distill.hard.weight', 'distill.l_rel.end'} <= keys
    assert start.hparams['distill.l_rel.end'].number_value == 1
    _sort_and_reduce_to_hparams_limit(experiment)                                 # TensorBoard's column order
    differs = [h.name for h in experiment.hparam_infos if h.differs]
    assert 'distill.l_rel.end' in differs and 'optim.weight_decay' not in differs     # 0.05: the default
    assert [h.name for h in experiment.hparam_infos[:len(differs)]] == differs
    assert [m.name.tag for m in experiment.metric_infos][0] == 'val/top1'


def test_all_input_problems_at_once_without_traceback(tmp_path):
    """The flagship recipe on a machine without ImageNet and without network: every problem in
    one run, one `error:` line each, nothing else (the teacher's timm weights are not cached)."""
    (tmp_path / 'fake' / 'train').mkdir(parents=True)
    cases = [
        (['data.path=/nonexistent'], ['data.path /nonexistent does not exist',
                                      'teacher.arch poolformer_s12.sail_in1k: its weights (timm/poolformer_s12.sail_in1k) are not in the local cache']),
        ([f'data.path={tmp_path / "fake"}', f'teacher.checkpoint={tmp_path / "t.pth"}'],
         ['train/ has no class subfolders', 'no val/ folder', f'teacher.checkpoint {tmp_path / "t.pth"}: no such file']),
    ]
    for overrides, messages in cases:
        result = subprocess.run([sys.executable, str(ROOT / 'distill' / 'train.py'), str(ROOT / 'recipes' / 'riformer_s12.yaml'),
                                 *overrides, f'train.output_dir={tmp_path / "out"}'], capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == len(messages), result.stderr
        assert all(line.startswith('error: ') and m in line for line, m in zip(lines, messages)), result.stderr
        assert result.stdout == ''
    assert not (tmp_path / 'out').exists()


def test_launcher_quiet_prints_only_our_lines(tmp_path):
    """The README's advice for `accelerate launch`: with -q and the launch values given, a run
    with bad inputs prints our error lines and nothing of the launcher's."""
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '-q', '--num_processes', '1', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', str(ROOT / 'distill' / 'train.py'),
           str(ROOT / 'recipes' / 'riformer_s12.yaml'), 'data.path=/nonexistent',
           f'teacher.checkpoint={tmp_path / "t.pth"}', f'train.output_dir={tmp_path / "out"}']
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode != 0 and len(lines) == 2 and all(line.startswith('error: ') for line in lines), lines


def test_check_flag_builds_everything_and_trains_nothing(teacher_ckpt, tmp_path, capsys):
    out = tmp_path / 'checked'
    code, stdout, err = run_main(capsys, DIGITS / 'imitation.yaml', '--check', f'teacher.checkpoint={teacher_ckpt}',
                                 f'train.output_dir={out}')
    assert code == 0, err
    assert 'inputs ok: riformer_mini student, 359 train / 1438 val images, 10 classes' in stdout
    assert not out.exists()
    code, _, err = run_main(capsys, DIGITS / 'imitation.yaml', '--check', f'teacher.checkpoint={teacher_ckpt}',
                            'distill.blocks=[stages.9.blocks.0]', f'train.output_dir={out}')
    assert code == 2 and "has no module 'stages.9.blocks.0" in err


def test_teacher_options_in_the_trainer(teacher_ckpt, tmp_path, capsys):
    # bf16 teacher (asked for, so also on CPUs that emulate it), compiled (tracing backend),
    # student in NCHW: the teacher follows it.
    out = tmp_path / 'bf16'
    code, text, err = run_main(capsys, DIGITS / 'imitation.yaml', 'train.epochs=1', f'train.output_dir={out}',
                               f'teacher.checkpoint={teacher_ckpt}', 'teacher.precision=bf16',
                               'teacher.compile=eager', 'train.channels_last=false')
    assert code == 0, err
    assert 'teacher poolformer_mini: bf16' in text and 'teacher poolformer_mini compiled (eager) in' in text
    assert re.search(r'forward \d+ ms vs eager \d+ ms \(median of 3\); (compiled|eager) kept', text)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['final']['val/top1'] > 20 and summary['final']['val/teacher_agreement'] > 20
