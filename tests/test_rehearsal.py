"""The rehearsal's report (distill/rehearsal.py, tools/rehearse.py): the step-time split, the
memory extrapolation, the exact-resume comparison and the command's one-line errors. The
rehearsal itself runs paper recipes for minutes; docs/RESULTS.md has its measured tables."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from distill import rehearsal

ROOT = Path(__file__).resolve().parents[1]


def test_epoch_split_divides_each_epoch_into_waiting_and_computing():
    history = [{'epoch': 1, 'epoch_time': 40.0, 'train/data_wait': 8.0, 'train/images_per_sec': 6.4},
               {'epoch': 2, 'epoch_time': 30.0, 'train/data_wait': 0.0, 'train/images_per_sec': 8.5}]
    assert rehearsal.epoch_split(history, 8) == [
        {'epoch': 1, 'step_s': 5.0, 'data_wait_s': 1.0, 'compute_s': 4.0, 'images_per_s': 6.4},
        {'epoch': 2, 'step_s': 3.75, 'data_wait_s': 0.0, 'compute_s': 3.75, 'images_per_s': 8.5}]


def test_memory_fit_is_linear_in_the_batch():
    fit = rehearsal.memory_fit({'batch': 2, 'peak_gib': 3.0}, {'batch': 4, 'peak_gib': 4.0}, 64)
    assert fit == {'per_image_gib': 0.5, 'fixed_gib': 2.0, 'at_batch': 64, 'predicted_gib': 34.0}


def test_same_weights_bit_for_bit(tmp_path):
    a = {'w': torch.arange(6.).reshape(2, 3), 'b': torch.zeros(3)}
    save_file(a, str(tmp_path / 'a.safetensors'))
    save_file({k: v.clone() for k, v in a.items()}, str(tmp_path / 'same.safetensors'))
    save_file({'w': a['w'] + torch.tensor(1e-7 * 2 ** 10), 'b': a['b']}, str(tmp_path / 'other.safetensors'))
    assert rehearsal.same_weights(tmp_path / 'a.safetensors', tmp_path / 'same.safetensors') == {
        'tensors': 2, 'differ': 0, 'max_abs_diff': 0.0}
    other = rehearsal.same_weights(tmp_path / 'a.safetensors', tmp_path / 'other.safetensors')
    assert other['differ'] == 1 and other['max_abs_diff'] > 0


def test_timings_are_not_part_of_what_a_resume_must_reproduce():
    a = {'val/top1': 1.5, 'loss/total': 0.2500012, 'epoch_time': 3.0, 'train/images_per_sec': 9.0,
         'train/data_wait': 0.1}
    b = {**a, 'loss/total': 0.25, 'epoch_time': 4.0, 'train/images_per_sec': 7.0, 'train/data_wait': 0.3}
    assert rehearsal.learned(a) == rehearsal.learned(b) == {'val/top1': 1.5, 'loss/total': 0.25}
    assert rehearsal.learned({'loss/total': 0.25002}) != rehearsal.learned(b)


def test_launch_command_uses_accelerate_for_several_processes():
    recipe = Path('recipes/riformer_s12.yaml')
    several = rehearsal.launch_command(recipe, ['x=1'], 2, 'bf16')
    assert several[1:8] == ['-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
                            '--num_machines', '1'] and several[-2:] == [str(recipe), 'x=1']
    assert rehearsal.launch_command(recipe, ['x=1'], 1, 'bf16')[1].endswith('distill/train.py')
    one = rehearsal.launch_command(recipe, [], 1, 'bf16', distributed=True)
    assert one[1:6] == ['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '1']


def test_report_table_says_whether_the_resume_was_exact():
    report = {'recipe': 'recipes/riformer_s12.yaml', 'processes': 2, 'threads_per_process': '1',
              'per_process_batch': 8, 'recipe_per_process_batch': 128, 'num_workers': 1, 'steps_per_epoch': 8,
              'epochs': 2, 'steps': [{'epoch': 1, 'step_s': 3.5, 'data_wait_s': 0.1, 'compute_s': 3.4,
                                      'images_per_s': 4.6}],
              'sessions': {'uninterrupted': {'returncode': 0, 'killed': False, 'wall_s': 90.0,
                                             'peak_rss_gib': {0: 1.6, 1: 1.7}, 'peak_worker_rss_gib': {0: 1.2, 1: 1.2},
                                             'checkpoint_write_s': {'epoch_0001': 0.7}}},
              'checkpoint_mb': {'epoch_0001': 136.7}, 'model_mb': 45.5, 'killed_with': ['epoch_0001'],
              'resume': {'tensors': 156, 'differ': 0, 'max_abs_diff': 0.0, 'same_final_metrics': True,
                         'resumed_session_trained': True, 'exact': True}}
    text = rehearsal.report_table(report)
    assert '| 1 | 3.50 | 0.10 | 3.40 | 4.6 |' in text
    assert '| uninterrupted | 0 | 90.0 | 1.60, 1.70 | 1.20, 1.20 | epoch_0001 0.70 |' in text
    assert text.endswith('resume: killed holding epoch_0001, resumed -> 156/156 tensors bit-identical to the '
                         'uninterrupted run (max |diff| 0), final metrics identical: EXACT')
    late = {**report, 'killed_with': ['epoch_0001', 'epoch_0002'],
            'resume': {**report['resume'], 'resumed_session_trained': False, 'exact': False}}
    assert 'resumed (the resumed session had nothing left to train: not a test)' in rehearsal.report_table(late)


@pytest.mark.parametrize('args,message', [
    (['recipes/riformer_s12.yaml', '--epochs', '1'], '--epochs must be at least 2'),
    (['recipes/riformer_s12.yaml', '--steps', '0'], "'0': give a positive integer"),
    (['recipes/digits/plain.yaml'], 'a rehearsal needs a recipe with an image folder and a teacher'),
])
def test_bad_arguments_are_one_line(args, message, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / 'tools' / 'rehearse.py'), *args, '--work', str(tmp_path / 'w'),
                             '--data', str(tmp_path / 'data')], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and result.stderr.count('\n') == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / 'data').exists()
