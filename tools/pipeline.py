#!/usr/bin/env python
"""The main job end to end on the embedded digits data (CPU, a few minutes):

1. train the digits teacher (poolformer_mini, cross-entropy)   recipes/digits/teacher.yaml
2. distil the RIFormer student by module imitation               recipes/digits/imitation.yaml
3. reparameterize it into the deploy checkpoint                  tools/reparam.py
4. evaluate teacher, student and deploy model; check deploy == student, and time both forms

    python tools/pipeline.py [--out runs/digits] [--epochs N]

Re-running continues finished or interrupted runs in --out (resume=true) instead of starting over.
"""
import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from distill.cli import require_venv  # noqa: E402

require_venv()     # a python without torch: one line naming the fix, not a traceback
from distill.cli import one_line_errors  # noqa: E402


def train(recipe, out, overrides):
    """Run (or resume) a recipe; returns (training time over all sessions, epochs it has)."""
    cmd = [sys.executable, str(ROOT / 'distill' / 'train.py'), str(recipe),
           f'train.output_dir={out}', 'train.progress=false', 'resume=true', *overrides]
    print('$', 'python', ' '.join(str(Path(c).relative_to(ROOT)) if c.startswith(str(ROOT)) else c for c in cmd[1:]),
          flush=True)     # a command to copy: python and the script as the README writes them
    subprocess.run(cmd, check=True)
    from distill.integrity import read_json
    summary = read_json(Path(out) / 'summary.json')       # a regular file of at most 16 MB, else one line
    return summary['train_seconds'], summary['epochs']


def images_per_second(model_a, model_b, x, rounds=7):
    """Median throughput of two models, timed interleaved by the benchmark's timer so that load
    from anything else on the machine hits both alike."""
    import torch
    from distill.benchmark import time_steps
    with torch.inference_mode():
        return _images_per_second(model_a, model_b, x, rounds, time_steps)


def _images_per_second(model_a, model_b, x, rounds, time_steps):
    steps = {0: lambda: model_a(x), 1: lambda: model_b(x)}
    samples = time_steps(steps, reps=rounds, warmup=1, min_time=0.1, log=lambda *_: None)
    return [x.shape[0] / statistics.median(s) for s in samples.values()]


@one_line_errors     # a summary.json that cannot be read (read_json) is one line
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    # runs/digits/teacher is where the digits recipes look for their teacher: after the demo,
    # every digits recipe (and tools/ablate.py) runs as it is.
    parser.add_argument('--out', default='runs/digits', help='where the runs go (default runs/digits)')
    parser.add_argument('--epochs', type=int, help='override train.epochs of both recipes')
    args = parser.parse_args(argv)
    # after the arguments: --help and their errors do not wait for torch (seconds)
    import torch
    import models
    from distill.config import load_recipe
    from distill.evaluation import evaluate_checkpoint
    from distill.threads import choose_threads
    # The trainers choose their own (and each says when the machine is busy); this is for evaluation
    # and timing, and its speed line below says when it took fewer threads than cores.
    threads, note = choose_threads()
    torch.set_num_threads(threads)
    out = Path(args.out)
    extra = [f'train.epochs={args.epochs}'] if args.epochs else []
    teacher_dir, student_dir = out / 'teacher', out / 'imitation'

    t_teacher, e_teacher = train(ROOT / 'recipes/digits/teacher.yaml', teacher_dir, extra)
    t_student, e_student = train(ROOT / 'recipes/digits/imitation.yaml', student_dir,
                      extra + [f'teacher.checkpoint={teacher_dir / "model.safetensors"}'])
    student_ckpt = student_dir / 'model.safetensors'
    deploy_ckpt = student_dir / 'model.deploy.safetensors'
    reparam = models.reparam_checkpoint(student_ckpt, deploy_ckpt)

    recipe = load_recipe(ROOT / 'recipes/digits/imitation.yaml')
    teacher = evaluate_checkpoint(teacher_dir / 'model.safetensors', recipe)
    student = evaluate_checkpoint(student_ckpt, recipe)
    deploy = evaluate_checkpoint(deploy_ckpt, recipe, compare=student_ckpt)

    x = torch.randn(64, 3, recipe.data.image_size, recipe.data.image_size)
    train_ips, deploy_ips = images_per_second(models.load_model(student_ckpt), models.load_deploy(deploy_ckpt), x)

    print(f'\nsummary (digits validation split, {deploy["images"]} images)')
    print(f'  teacher  poolformer_mini          top-1 {teacher["top1"]:6.2f}   trained in {t_teacher:5.1f}s ({e_teacher} epoch{"s" if e_teacher != 1 else ""})')
    print(f'  student  riformer_mini (train)    top-1 {student["top1"]:6.2f}   distilled in {t_student:5.1f}s ({e_student} epoch{"s" if e_student != 1 else ""})')
    print(f'  deploy   riformer_mini (folded)   top-1 {deploy["top1"]:6.2f}   '
          f'check error {reparam["max_rel_error"]:.1e}')
    print(f'  deploy equals student: same prediction on {deploy["agreement"]:.2f}% of images, '
          f'max logit difference {deploy["max_logit_diff"]:.1e}')
    print(f'  speed (batch 64, {recipe.data.image_size}px, {threads} thread{"s" if threads > 1 else ""}'
          f'{": the machine was busy" if note else ""}): '
          f'training form {train_ips:.0f} img/s, deploy form {deploy_ips:.0f} img/s ({deploy_ips / train_ips:.2f}x)')
    if deploy['agreement'] < 100. or deploy['max_rel_logit_diff'] > 1e-5:
        print('error: the deploy model does not reproduce the student', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
