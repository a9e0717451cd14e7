import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
torch_threads = os.environ.get('TEST_TORCH_THREADS')
if torch_threads:
    import torch
    torch.set_num_threads(int(torch_threads))
