"""distill/host_memory.py: with the setting, a large tensor freed and allocated again every step
comes to reuse its pages (no new page faults once the heap has grown to the step's needs;
glibc's aligned allocations take a few steps to get there); without it, glibc unmaps the
tensor on free and faults its pages in again every step."""
import subprocess
import sys

import pytest

from distill.host_memory import _glibc

PROBE = r'''
import resource, sys, torch
from distill import host_memory
if sys.argv[1] == 'keep':
    assert host_memory.keep_freed_memory()
print(host_memory.describe())
def faults_of_one_step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(64 * 2**20 // 4).fill_(1.0)        # 64 MB, above glibc's largest mmap threshold
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(max([faults_of_one_step() for _ in range(30)][-5:]))
'''


@pytest.mark.skipif(_glibc() is None, reason='glibc (Linux) only')
def test_kept_memory_is_reused_without_page_faults():
    def probe(mode):
        out = subprocess.run([sys.executable, '-c', PROBE, mode], capture_output=True, text=True, check=True)
        line, faults = out.stdout.split('\n')[:2]
        return line, int(faults)
    kept_line, kept = probe('keep')
    default_line, default = probe('default')
    assert kept_line.startswith('glibc malloc keeps freed memory') and default_line == 'system malloc defaults'
    pages = 64 * 2**20 // 4096
    assert default > pages // 2           # every step faults its 16,384 pages in again
    assert kept < pages // 20             # steady state: (almost) none


def test_trainer_and_benchmark_take_the_setting():
    from distill.cli.benchmark import build_parser
    from distill.config import TrainConfig
    assert TrainConfig().keep_host_memory is True
    assert build_parser().parse_args(['--system-malloc']).system_malloc
