"""What a run reports: the console's banner and epoch lines, and TensorBoard's run description.

TensorBoard layout: one run folder (`OUTPUT_DIR/tb`) per run, resumed sessions included. Its
HPARAMS entry (the flattened recipe, with the final val/top1 and teacher agreement as metrics)
and a `recipe` text entry are written once, when the run starts. Each epoch logs the weight of
every loss term of the recipe (0 outside its window, `weight/*`), so that the drop of
loss/total when a window closes shows on the same charts.
"""
from typing import Dict, List

import yaml

from .config import DistillConfig, flatten
from .terms import configured
# Recipe keys that describe how a session runs, not what the run is: no hparams.
SESSION_KEYS = ('resume', 'train.progress')
HPARAM_METRICS = ('val/top1', 'val/teacher_agreement')


def schedule(cfg: DistillConfig, epochs: int) -> str:
    """Every term of the recipe with its weight and epochs (counted from 1, as on the console),
    e.g. `soft x1 (epochs 1-15), l_rel x1 (epochs 1-3)`."""
    parts = []
    for t in configured(cfg):
        term = getattr(cfg, t)
        first, last = term.start + 1, min(term.end if term.end is not None else epochs, epochs)
        when = f'epoch {first}' if first == last else f'epochs {first}-{last}' if first < last else 'never active'
        parts.append(f'{t} x{term.weight:g} ({when})')
    return ', '.join(parts)


def term_weights(cfg: DistillConfig, epoch: int) -> Dict[str, float]:
    """`weight/TERM` of every configured term at a 0-based epoch (0 when its window is closed)."""
    return {f'weight/{t}': getattr(cfg, t).weight if getattr(cfg, t).active(epoch) else 0.
            for t in configured(cfg)}


def epoch_line(epoch: int, epochs: int, metrics: Dict[str, float], active: List[str]) -> str:
    """`epoch 3/15 loss 0.1234 (soft+l_out) train top-1 91.2 val top-1 95.1 top-5 99.7 ...`"""
    parts = [f'epoch {epoch + 1}/{epochs}', f'loss {metrics["loss/total"]:.4g} ({"+".join(active) or "-"})']
    labels = [('train/top1', 'train top-1'), ('val/top1', 'val top-1'), ('val/top5', 'top-5'),
              ('val/teacher_agreement', 'teacher agreement')]
    parts += [f'{label} {metrics[k]:.2f}' for k, label in labels if k in metrics]
    if 'epoch_time' in metrics:
        parts.append(f'({metrics["epoch_time"]:.1f} s)')
    return ' '.join(parts)


def write_run_description(writer, recipe_dict: dict, has_teacher: bool):
    """HPARAMS entry and recipe text into the run's own folder (not a timestamped subfolder, as
    SummaryWriter.add_hparams does: TensorBoard shows that as a separate run without metrics).
    The metric values come from the scalars of the same tags that the run logs."""
    from torch.utils.tensorboard.summary import hparams
    values = {k: v for k, v in flatten(recipe_dict).items() if k not in SESSION_KEYS}
    metrics = {m: 0. for m in HPARAM_METRICS if has_teacher or m == 'val/top1'}
    for summary in hparams(values, metrics):
        writer.file_writer.add_summary(summary)
    # TensorBoard renders text as markdown: indent to show the YAML as a code block.
    text = yaml.safe_dump({k: v for k, v in recipe_dict.items() if k != 'resume'}, sort_keys=False)
    writer.add_text('recipe', '\n'.join('    ' + line for line in text.splitlines()), global_step=0)
    writer.flush()
