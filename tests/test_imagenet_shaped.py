"""The ImageNet-shaped rehearsal folder (distill/imagenet_shaped.py, tools/imagenet_shaped.py)."""
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill.imagenet_shaped import (
    LONG_SIDE, QUALITY, FolderSpec, ShapeError, draw_shape, image_rng, relative_path, write_folder)

ROOT = Path(__file__).resolve().parents[1]
TINY = FolderSpec(train_images=6, val_images=3, classes=3, seed=5)


def digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob('*')) if p.is_file()}


def test_same_arguments_write_the_same_bytes_with_any_number_of_jobs(tmp_path):
    write_folder(tmp_path / 'a', TINY)
    write_folder(tmp_path / 'b', TINY, jobs=2)
    write_folder(tmp_path / 'c', FolderSpec(6, 3, 3, seed=6))
    a = digest(tmp_path / 'a')
    assert len([k for k in a if k.endswith('.JPEG')]) == 9
    assert a == digest(tmp_path / 'b')
    c = digest(tmp_path / 'c')
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith('.JPEG'))


def test_the_trainers_folder_source_reads_it(tmp_path):
    from distill.config import DataConfig
    from distill.data import build_datasets
    write_folder(tmp_path, TINY)
    cfg = DataConfig(source='folder', path=str(tmp_path), val_split='val', image_size=32,
                     auto_augment='original', re_prob=0.25)
    train, val, classes = build_datasets(cfg, seed=0, arch='riformer_s12')
    assert (len(train), len(val), classes) == (6, 3, 3)
    assert train.classes == ['n00000000', 'n00000001', 'n00000002']
    assert all(Path(path).parent.name == train.classes[label] for path, label in train.samples)
    image, label = train[4]
    assert tuple(image.shape) == (3, 32, 32) and label == train.targets[4]


def test_files_have_the_drawn_size_and_quality(tmp_path):
    write_folder(tmp_path, TINY)
    for index in range(TINY.train_images):
        path = tmp_path / relative_path('train', f'n{index % 3:08d}', index)
        width, height, quality = draw_shape(image_rng(TINY.seed, 'train', index))
        with Image.open(path) as image:
            assert image.format == 'JPEG' and image.mode == 'RGB' and image.size == (width, height)
            tables = image.quantization
        reference = io.BytesIO()
        Image.new('RGB', (8, 8)).save(reference, 'JPEG', quality=quality)
        assert tables == Image.open(reference).quantization       # written at the drawn quality


def test_sizes_and_qualities_spread_like_imagenet():
    shapes = np.array([draw_shape(image_rng(0, 'train', i)) for i in range(3000)])
    width, height, quality = shapes.T
    long_side = np.maximum(width, height)
    assert quality.min() == QUALITY[0] and quality.max() == QUALITY[1]
    assert LONG_SIDE[0] <= long_side.min() and long_side.max() <= LONG_SIDE[1]
    assert 0.65 < np.mean(long_side == 500) < 0.75
    assert 0.25 < np.mean((width == 500) & (height == 375)) < 0.40       # the commonest size
    assert 0.2 < np.mean(height > width) < 0.35                          # portraits
    assert 380 < np.median(np.sqrt(width * height)) < 460


def test_a_folder_of_the_same_arguments_is_kept_and_another_refused(tmp_path):
    write_folder(tmp_path, TINY)
    before = digest(tmp_path)
    write_folder(tmp_path, TINY)
    assert digest(tmp_path) == before
    with pytest.raises(ShapeError, match='not empty'):
        write_folder(tmp_path, FolderSpec(6, 3, 3, seed=1))


def run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / 'tools' / 'imagenet_shaped.py'), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize('args,message', [
    (['--classes', '3', '--train-images', '2'], '--train-images 2: every class needs at least one image'),
    (['--val-images', '0'], "'0': give a positive integer"),
    (['--seed', '-1'], 'give an integer from 0'),
])
def test_bad_arguments_are_one_line(tmp_path, args, message):
    result = run_tool(tmp_path / 'out', *args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and message in result.stderr, result.stderr
    assert not (tmp_path / 'out').exists()


def test_tool_writes_and_refuses_a_foreign_folder(tmp_path):
    result = run_tool(tmp_path / 'out', '--classes', '2', '--train-images', '2', '--val-images', '2')
    assert result.returncode == 0, result.stderr
    assert 'rehearsal data, never accuracy data' in result.stdout
    assert 'never accuracy data' in (tmp_path / 'out' / 'README.txt').read_text()
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'photo.jpg').write_bytes(b'x')
    result = run_tool(tmp_path / 'other', '--classes', '2', '--train-images', '2', '--val-images', '2')
    assert result.returncode == 2 and result.stderr.count('\n') == 1 and 'is not empty' in result.stderr
