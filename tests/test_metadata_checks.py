"""Issue 27, item 4: a checkpoint's metadata is checked before it is used. The checksum covers the
metadata (a flipped byte in the stored config or recipe is named); an edited config (checksums
recomputed) is typed, bounded and compared with the tensors before anything is allocated; a
stored recipe never reaches the network."""
import json
from pathlib import Path

import pytest
import timm
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import models
from distill.cli import evaluate, export, reparam
from distill.config import load_recipe
from helpers import randomize
from models.checkpoint_io import CHECKSUM_KEY, METADATA_CHECKSUM_KEY, metadata_sha256, tensors_sha256

TOOLS = {
    'evaluate': lambda path, tmp: evaluate.main([str(path)]),
    'reparam': lambda path, tmp: reparam.main([str(path), '-o', str(tmp / 'out.safetensors')]),
    'export': lambda path, tmp: export.main([str(path), '--format', 'onnx', '-o', str(tmp / 'out.onnx')]),
}


@pytest.fixture
def student(tmp_path):
    """A training-form riformer_mini file as the trainer writes it (with a stored recipe)."""
    path = tmp_path / 'student.safetensors'
    plain = Path(__file__).resolve().parents[1] / 'recipes' / 'digits' / 'plain.yaml'
    recipe = json.dumps(load_recipe(plain).to_dict())
    models.save_model(path, randomize(timm.create_model('riformer_mini')), {'recipe': recipe, 'image_size': '32'})
    return path


def metadata_of(path) -> dict:
    with safe_open(str(path), framework='pt') as f:
        return dict(f.metadata())


def rewrite(path, edit, checksums=True):
    """The file with its metadata edited by `edit(metadata)`; `checksums`: recomputed as its
    writer would (an edit that covers its tracks), else left as they were."""
    tensors, metadata = load_file(str(path)), metadata_of(path)
    edit(metadata)
    if checksums:
        metadata[CHECKSUM_KEY] = tensors_sha256(tensors)
        metadata[METADATA_CHECKSUM_KEY] = metadata_sha256(metadata)
    save_file(tensors, str(path), metadata=metadata)


def one_line(capsys, code) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.startswith('error: ') and err.count('\n') == 1 and 'Traceback' not in err, err
    return err


def flip_in_config(path):
    """Flip one bit of a digit inside the stored config's text ('2' <-> '3'): the header stays
    valid JSON, the config says other dims."""
    data = bytearray(path.read_bytes())
    at = data.index(b'dims\\": [32') + len(b'dims\\": [3')     # the config is JSON inside the header's JSON
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('tool', TOOLS)
def test_a_flipped_byte_in_the_metadata_is_named(tool, student, tmp_path, capsys):
    flip_in_config(student)
    assert json.loads(metadata_of(student)['config'])['dims'][0] != 32      # parsed, it would be other dims
    err = one_line(capsys, TOOLS[tool](student, tmp_path))
    assert 'damaged: its metadata (config, recipe) differs from the checksum' in err


@pytest.mark.parametrize('tool', TOOLS)
@pytest.mark.parametrize('change, words', [
    (lambda c: c.update(dims=[100000, 64, 128, 192]), 'dims = [100000, 64, 128, 192], not 1 to 8 widths'),
    (lambda c: c.update(depths='abc'), 'depths = abc, not 1 to 8 block counts'),
    (lambda c: c.update(form='evil'), 'form = evil, not train, plain or deploy'),
    (lambda c: c.update(dims=[32, 64, 128, 256]), 'its metadata config says dims (32, 64, 128, 256), its tensors have'),
    (lambda c: c.update(surprise=1), 'its metadata config has keys'),
])
def test_an_edited_config_is_checked_before_it_is_used(tool, change, words, student, tmp_path, capsys):
    def edit(metadata):
        config = json.loads(metadata['config'])
        change(config)
        metadata['config'] = json.dumps(config)
    rewrite(student, edit)
    err = one_line(capsys, TOOLS[tool](student, tmp_path))
    assert words in err, err


def hub_data(recipe: dict) -> str:
    """The stored recipe, valid, with its data read from the Hugging Face Hub by name."""
    recipe['data'].update(source='hf_name', path='someone/dataset')
    return json.dumps(recipe)


@pytest.mark.parametrize('stored, words', [
    (hub_data, 'names a Hugging Face Hub dataset (someone/dataset), which would be downloaded'),
    (lambda recipe: json.dumps(recipe)[:-5], 'its stored recipe is not valid JSON'),
    (lambda recipe: json.dumps({**recipe, 'data': {**recipe['data'], 'image_size': 'big'}}),
     'its stored recipe does not validate'),
])
def test_a_stored_recipe_is_checked_and_never_reaches_the_network(stored, words, student, tmp_path, capsys,
                                                                   monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    rewrite(student, lambda metadata: metadata.update(recipe=stored(json.loads(metadata['recipe']))))
    err = one_line(capsys, evaluate.main([str(student)]))
    assert words in err, err


def test_files_written_now_carry_both_checksums_and_read_back(student, tmp_path, capsys):
    metadata = metadata_of(student)
    assert metadata[METADATA_CHECKSUM_KEY] == metadata_sha256(metadata)
    assert reparam.main([str(student), '-o', str(tmp_path / 'deploy.safetensors')]) == 0
    deploy = metadata_of(tmp_path / 'deploy.safetensors')
    assert deploy[METADATA_CHECKSUM_KEY] == metadata_sha256(deploy)       # recomputed, not copied
    assert models.load_deploy(tmp_path / 'deploy.safetensors') is not None


@pytest.fixture
def efficient_deploy(tmp_path):
    """An EfficientViT-M0 deploy file as tools/export.py --format deploy writes it."""
    from models.efficient import create_deploy, save_efficient_deploy
    path = tmp_path / 'efficientvit_m0.deploy.safetensors'
    save_efficient_deploy(path, 'efficientvit_m0', create_deploy('efficientvit_m0', num_classes=10))
    return path


@pytest.mark.parametrize('config, words', [
    (json.dumps({'arch': 'efficientvit_m0', 'num_classes': 10 ** 9}), 'num_classes = 1000000000, not a class count'),
    (json.dumps({'arch': 'efficientvit_m0', 'num_classes': 'abc'}), 'num_classes = abc, not a class count'),
    ('[1]', 'its metadata config is not a JSON object'),
    ('{x', 'its metadata config is not valid JSON'),
    (json.dumps({'arch': 'resnet50', 'num_classes': 10}), "unknown efficient backbone 'resnet50'"),
])
def test_an_efficient_deploy_files_config_is_checked_before_it_is_used(config, words, efficient_deploy, tmp_path,
                                                                       capsys):
    """The config of an EfficientViT / FasterNet deploy file: an edited one (checksums
    recomputed) asked for a 768 GB head or gave a traceback; now one line before any build."""
    assert models.load_deploy(efficient_deploy).head is not None          # the intact file loads
    rewrite(efficient_deploy, lambda metadata: metadata.update(config=config))
    with pytest.raises(models.CheckpointError, match=words):
        models.load_deploy(efficient_deploy)
    err = one_line(capsys, TOOLS['export'](efficient_deploy, tmp_path))
    assert words in err, err
