"""The trainer's DataLoader settings from the recipe (issue 28), the data wait it reports, a short
epoch for rehearsals, and the loader benchmark's rows on a tiny folder."""
from pathlib import Path

import numpy as np
import pytest
import torch

from distill import engine
from distill.config import DataConfig, RecipeError, load_recipe
from distill.data import build_datasets, loader_settings, worker_shortfall
from distill.imagenet_shaped import FolderSpec, write_folder

ROOT = Path(__file__).resolve().parents[1]
PAPER_RECIPES = sorted((ROOT / 'recipes').glob('riformer_*.yaml'))


def test_pinned_memory_only_for_a_cuda_device():
    cfg = DataConfig(num_workers=2, pin_memory=True)
    assert loader_settings(cfg, torch.device('cpu')) == {'num_workers': 2, 'pin_memory': False,
                                                         'persistent_workers': False}
    assert loader_settings(cfg, torch.device('cuda', 0))['pin_memory'] is True
    assert loader_settings(DataConfig(num_workers=2, pin_memory=False), torch.device('cuda'))['pin_memory'] is False


def test_worker_settings_only_with_workers():
    with_workers = DataConfig(num_workers=3, persistent_workers=True, prefetch_factor=4)
    assert loader_settings(with_workers, torch.device('cpu')) == {
        'num_workers': 3, 'pin_memory': False, 'persistent_workers': True, 'prefetch_factor': 4}
    assert loader_settings(DataConfig(num_workers=0, persistent_workers=True), torch.device('cpu')) == {
        'num_workers': 0, 'pin_memory': False}


@pytest.mark.parametrize('overrides,message', [
    (['data.prefetch_factor=4', 'data.num_workers=0'], 'data.prefetch_factor 4: needs data.num_workers > 0'),
    (['data.prefetch_factor=0', 'data.num_workers=2'], 'data.prefetch_factor 0'),
    (['data.max_train_images=0'], 'data.max_train_images 0: must be at least 1'),
])
def test_bad_loader_settings_are_recipe_errors(overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(ROOT / 'recipes' / 'digits' / 'plain.yaml', overrides)


@pytest.mark.parametrize('path', PAPER_RECIPES, ids=lambda p: p.stem)
def test_paper_recipes_carry_the_chosen_loader_settings(path):
    data = load_recipe(path).data
    assert data.num_workers == (10 if path.stem == "riformer_s12" else 8)
    assert (data.pin_memory, data.persistent_workers, data.prefetch_factor) == (True, False, None)
    assert data.max_train_images is None and data.max_val_images is None


def test_workers_that_want_more_cores_than_there_are_get_a_note():
    assert worker_shortfall(DataConfig(num_workers=7), 2, 16) is None             # 2 x (7 + 1) = 16
    note = worker_shortfall(DataConfig(num_workers=10), 8, 64)
    assert note.startswith('note: 8 training process(es) x 10 loader workers want 88 cores') and \
        'data.num_workers=7 fits' in note
    assert worker_shortfall(DataConfig(num_workers=0), 8, 2) is None
    assert worker_shortfall(DataConfig(num_workers=1), 2, 2).endswith('not even one worker per process fits, so '
                                                                       'the steps will wait for data')


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp('imagenet_shaped')
    write_folder(root, FolderSpec(train_images=8, val_images=3, classes=3))
    return root


def test_a_short_epoch_is_a_fixed_subset(folder):
    cfg = DataConfig(source='folder', path=str(folder), val_split='val', image_size=32, max_train_images=5,
                     max_val_images=2)
    train, val, classes = build_datasets(cfg, seed=0)
    again, _, _ = build_datasets(cfg, seed=7)
    assert (len(train), len(val), classes) == (5, 2, 3)
    assert list(train.indices) == list(again.indices) and len(set(train.indices)) == 5
    full, _, _ = build_datasets(DataConfig(source='folder', path=str(folder), val_split='val', image_size=32), seed=0)
    assert len(full) == 8


def test_progress_counts_the_seconds_spent_waiting_for_batches(monkeypatch):
    clock = [0.]
    monkeypatch.setattr(engine.time, 'perf_counter', lambda: clock[0])

    class SlowLoader:
        def __len__(self):
            return 3

        def __iter__(self):
            for i in range(3):
                clock[0] += 2.0       # the loader takes 2 s per batch
                yield i
    progress = engine.Progress(SlowLoader(), 0, 1, enabled=False)
    for _ in progress:
        clock[0] += 0.5               # the step computes for 0.5 s
    assert progress.waited == 6.0 and progress.step == 3


def test_loader_bench_rows_on_a_tiny_folder(folder, tmp_path):
    from distill import loader_bench
    cfg = DataConfig(source='folder', path=str(folder), val_split='val', image_size=32, auto_augment='original',
                     re_prob=0.25)
    files = loader_bench.folder_files(folder)
    rows = loader_bench.per_image_rows(cfg, files[:4], rounds=2, arrow_folder=tmp_path / 'arrow')
    assert [r.images for r in rows] == [4] * 6 and all(len(r.rates) == 2 and r.images_per_cpu_s > 0 for r in rows)
    assert rows[-1].name == 'decode + train transform: datasets Arrow'
    table = loader_bench.table(rows)
    assert table.count('\n') == len(rows) + 1 and '| decode: Pillow |' in table
    assert 'cores for 1,500 img/s' in loader_bench.arithmetic(rows)
    arrow, index = loader_bench.arrow_copy(files[:2], tmp_path / 'arrow2', None)
    from distill.images import open_rgb
    assert (np.asarray(arrow[index[files[1]]][0]) == np.asarray(open_rgb(files[1]))).all()   # the same pixels
    assert loader_bench.workers_needed(250.) == {1000.: 4, 1500.: 6}


def test_loader_bench_command_times_the_loader_rows(folder, tmp_path):
    """The loader rows fork DataLoader workers, so they run as the command runs: in a process of
    its own. In-process, after the suite's earlier tests had loaded OpenVINO and Inductor, this
    test once ended the whole test process with a segfault (not reproduced on its own)."""
    import json
    import subprocess
    import sys
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text('data: {image_size: 32, auto_augment: original, re_prob: 0.25, val_split: val}\n'
                      'distill: {ce: {weight: 1.0}}\n')
    out = tmp_path / 'rows.json'
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'loader_bench.py'), str(folder), '--recipe',
                             str(recipe), '--images', '4', '--rounds', '2', '--batch-size', '2', '--batches', '2',
                             '--epochs', '2', '--json', str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())['rows']
    assert [r['images'] for r in rows[6:]] == [8] * 5 and all(len(r['first_batch_s']) == 2 for r in rows[6:])
    assert '| trainer DataLoader |' in result.stdout and 'cores for 1,500 img/s' in result.stdout
