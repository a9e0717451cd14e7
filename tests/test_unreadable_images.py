"""Issue 27, item 6 (images): one unreadable image in a dataset folder (training, with and
without DataLoader workers; evaluate) or a calibration folder is one line naming the file, exit 2."""
from pathlib import Path

import numpy as np
import pytest
import timm
import yaml
from PIL import Image

import models
from distill import train as train_mod
from distill.cli import evaluate, export
from helpers import deploy_checkpoint

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / 'recipes' / 'digits' / 'plain.yaml'

pytestmark = pytest.mark.usefixtures('fresh_accelerate_state')   # conftest.py


@pytest.fixture
def folder(tmp_path):
    """train/ and val/ with two classes of 32 px images; one training image is not an image."""
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for label in range(2):
            where = tmp_path / 'data' / split / f'class_{label}'
            where.mkdir(parents=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(where / f'{i}.png')
    bad = tmp_path / 'data' / 'train' / 'class_1' / '3.png'
    bad.write_bytes(b'not an image, though its name says so')
    return tmp_path / 'data', bad


def one_line(err: str, code: int) -> str:
    assert code == 2 and 'Traceback' not in err, err
    lines = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize('workers', [0, 1])
def test_training_names_the_unreadable_image(workers, folder, tmp_path, capsys):
    root, bad = folder
    args = [str(PLAIN), 'data.source=folder', f'data.path={root}', 'data.val_split=val', 'train.epochs=1',
            'train.batch_size=4', 'train.progress=false', 'train.loss_balance=false', f'data.num_workers={workers}',
            f'train.output_dir={tmp_path / "run"}']
    if workers:     # forked workers run in a trainer process of their own, as users run it (see the note below)
        import subprocess
        import sys
        result = subprocess.run([sys.executable, str(ROOT / 'distill' / 'train.py'), *args], capture_output=True,
                                text=True, timeout=600, cwd=ROOT)
        code, err = result.returncode, result.stderr
    else:
        code = train_mod.main(args)
        err = capsys.readouterr().err
    line = one_line(err, code)
    assert f'{bad}: not a readable image' in line and 'remove or replace the file' in line, line


def test_evaluate_names_the_unreadable_image(folder, tmp_path, capsys):
    root, bad = folder
    (root / 'val' / 'class_0' / '0.png').write_bytes(b'')             # evaluate reads val/
    recipe = yaml.safe_load(PLAIN.read_text())
    # No forked workers inside the test process: after earlier tests had loaded OpenVINO and
    # Inductor, in-process DataLoader workers ended the whole suite with a segfault now and then.
    recipe['data'].update(source='folder', path=str(root), val_split='val', num_workers=0)
    (tmp_path / 'recipe.yaml').write_text(yaml.safe_dump(recipe))
    models.save_model(tmp_path / 'm.safetensors', timm.create_model('riformer_mini', num_classes=2))
    code = evaluate.main([str(tmp_path / 'm.safetensors'), '--recipe', str(tmp_path / 'recipe.yaml')])
    line = one_line(capsys.readouterr().err, code)
    assert 'class_0/0.png: not a readable image' in line, line


def test_int8_calibration_names_the_unreadable_image(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = tmp_path / 'calib'
    images.mkdir()
    for i in range(70):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f'{i:02d}.png')
    (images / '05.png').write_bytes(b'\x89PNG broken')
    deploy = deploy_checkpoint(tmp_path / 'mini.deploy.safetensors', arch='riformer_mini')
    code = export.main([str(deploy), '--format', 'onnx', '--int8', str(images), '--image-size', '32',
                        '--calib-images', '8', '-o', str(tmp_path / 'm.onnx')])
    line = one_line(capsys.readouterr().err, code)
    assert '05.png: not a readable image' in line, line


def test_an_unreadable_image_where_ultralytics_is_imported(folder):
    """Importing ultralytics replaces PIL's Image.open with one that installs a package (pi-heif)
    for a file PIL cannot identify; dataset images are opened with PIL's own."""
    pytest.importorskip('ultralytics')
    import ultralytics.utils.patches  # noqa: F401
    from PIL import Image

    from distill.images import UnreadableImage, open_rgb
    _, bad = folder
    assert Image.open.__module__ == 'ultralytics.utils.patches'       # the patch is in place
    with pytest.raises(UnreadableImage, match='not a readable image'):
        open_rgb(bad)
