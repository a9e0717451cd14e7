#!/usr/bin/env python
"""The main job on the embedded default (placeholder until the trainer lands): build a RIFormer,
reparameterize it with tools/reparam.py, check it, and compare deploy vs training-form speed."""
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402
from reparam import reparam_checkpoint  # noqa: E402  (tools/ is on sys.path as the script's dir)


def images_per_second(model, x, reps=5):
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
    return reps * x.shape[0] / (time.perf_counter() - start)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        model = timm.create_model('riformer_s12', num_classes=10).eval()
        path = Path(tmp) / 'riformer_s12.safetensors'
        models.save_model(path, model)
        result = reparam_checkpoint(path, image_size=224)
        deploy = models.load_deploy(result['output'])
        x = torch.randn(8, 3, 224, 224)
        train_ips, deploy_ips = images_per_second(model, x), images_per_second(deploy, x)
        print(f'training form {train_ips:.1f} img/s, deploy form {deploy_ips:.1f} img/s '
              f'({deploy_ips / train_ips:.2f}x), batch 8, 224px, {torch.get_num_threads()} threads')


if __name__ == '__main__':
    main()
