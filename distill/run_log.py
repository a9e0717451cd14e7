"""What a run reports: the console's banner and epoch lines, and TensorBoard's run description.

TensorBoard: one run folder (`OUTPUT_DIR/tb`) per run, resumed sessions included. Scalars under
`step/` (loss terms, lr) are logged against the optimizer update; every other scalar against
the epoch, counted from 1 as on the console: validation (`val/*`), the epoch mean of each loss
term (`loss/*`) with the weight of each term while its window is open (`loss/weight/*`), the
loss balance where it is measured (`balance/*`), training (`train/*`) and `run/finished`. When
the run starts it writes, once: a custom-scalars layout (validation and loss terms first), its
HPARAMS entry (the recipe keys that say what the run trains, metrics val/top1 first) and a
`recipe` text entry. Each session that trains marks the run unfinished (`run/finished` 0), the
end of the last epoch marks it finished (1): a killed run stays at 0.
"""
from typing import Dict, List

import yaml

from .config import SESSION_KEYS, DistillConfig, Recipe, TeacherConfig, flatten
from .terms import TERMS, configured

# data.* keys that only some sources read (the others ignore them): no hparams elsewhere.
SOURCE_KEYS = {
    'data.path': ('folder', 'hf_disk', 'hf_name'),
    'data.train_split': ('folder', 'hf_disk', 'hf_name'),
    'data.val_split': ('folder', 'hf_disk', 'hf_name'),
    'data.image_column': ('hf_disk', 'hf_name'),
    'data.label_column': ('hf_disk', 'hf_name'),
    'data.val_fraction': ('digits', 'clutter_digits'),
    'data.split_seed': ('digits', 'clutter_digits'),
    'data.clutter.': ('clutter_digits',),
}
FINISHED = 'run/finished'
# HPARAMS metrics, in the order of its columns: (tag, column name).
HPARAM_METRICS = (('val/top1', 'val top-1'), ('val/teacher_agreement', 'teacher agreement'),
                  ('val/top5', 'val top-5'), (FINISHED, 'finished'))
# The custom-scalars layout: (category, closed, ((chart title, tag regex), ...)), in order.
LAYOUT = (
    ('validation (x: epoch)', False, (
        ('top-1 and top-5 %', r'^val/top[15]$'),
        ('agreement with the teacher %', r'^val/teacher_agreement$'),
        ('train and val top-1 %', r'^(train|val)/top1$'))),
    ('loss terms (x: epoch)', False, (
        ('epoch mean of each term and the total', r'^loss/(?!weight/)'),
        ('weight of each term while its window is open', r'^loss/weight/'))),
    ('loss balance % (x: epoch where measured)', False, (
        ("share of the student's gradient", r'^balance/grad_share/'),
        ('share of the loss', r'^balance/loss_share/'))),
    ('training (x: epoch)', True, (
        ('learning rate at the end of the epoch', r'^train/lr$'),
        ('train top-1 and top-5 %', r'^train/top[15]$'),
        ('images per second', r'^train/images_per_sec$'),
        ('epoch time s', r'^train/epoch_time$'),
        ('s the step waited for data (first process)', r'^train/data_wait$'),
        ('finished (1) or not (0)', f'^{FINISHED}$'))),
    ('per optimizer update (x: update)', True, (
        ('loss terms', r'^step/loss/'),
        ('learning rate', r'^step/lr$'))),
)


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
    """`loss/weight/TERM` of the terms whose window is open at a 0-based epoch. Nothing for a
    closed window: each term's series is then constant, which TensorBoard draws unsmoothed, so
    a window shows as a flat segment over exactly its epochs at any smoothing setting (a 1 -> 0
    series is smoothed into a slow decay)."""
    return {f'loss/weight/{t}': getattr(cfg, t).weight for t in configured(cfg) if getattr(cfg, t).active(epoch)}


def epoch_scalars(metrics: Dict[str, float], cfg: DistillConfig, epoch: int, lr: float) -> Dict[str, float]:
    """TensorBoard's scalars of a 0-based epoch, to log at step epoch + 1: its metrics
    (epoch_time under train/), the lr of its last update and the open windows' weights."""
    tags = {('train/epoch_time' if k == 'epoch_time' else k): v for k, v in metrics.items()}
    return tags | {'train/lr': lr} | term_weights(cfg, epoch)


def epoch_line(epoch: int, epochs: int, metrics: Dict[str, float], active: List[str]) -> str:
    """`epoch 3/15 loss 0.1234 (soft+l_out) train top-1 91.2 val top-1 95.1 top-5 99.7 ...`"""
    parts = [f'epoch {epoch + 1}/{epochs}', f'loss {metrics["loss/total"]:.4g} ({"+".join(active) or "-"})']
    labels = [('train/top1', 'train top-1'), ('val/top1', 'val top-1'), ('val/top5', 'top-5'),
              ('val/teacher_agreement', 'teacher agreement')]
    parts += [f'{label} {metrics[k]:.2f}' for k, label in labels if k in metrics]
    if 'epoch_time' in metrics:
        parts.append(f'({metrics["epoch_time"]:.1f} s)')
    return ' '.join(parts)


def hparam_values(recipe_dict: dict) -> Dict[str, object]:
    """The flattened recipe without the keys that cannot tell runs apart: session keys, data
    keys its source ignores, and the settings of terms with weight 0 (their weight stays)."""
    source = recipe_dict['data']['source']
    distill = recipe_dict['distill']
    unused_terms = [t for t in TERMS if not distill[t]['weight']]
    has_feature_term = any(TERMS[t].kind == 'feature' and distill[t]['weight'] for t in TERMS)

    def used(key):
        if key in SESSION_KEYS:
            return False
        if any(key.startswith(prefix) and source not in sources for prefix, sources in SOURCE_KEYS.items()):
            return False
        if any(key.startswith(f'distill.{t}.') and key != f'distill.{t}.weight' for t in unused_terms):
            return False
        return has_feature_term or key not in ('distill.blocks', 'distill.feature_reduction')
    return {k: v for k, v in flatten(recipe_dict).items() if used(k)}


def recipe_defaults() -> Dict[str, object]:
    """Every flattened key's default (teachers: TeacherConfig's; absent: 'none')."""
    with_teachers = Recipe(teacher=TeacherConfig(), logit_teacher=TeacherConfig())
    return flatten(Recipe().to_dict()) | flatten(with_teachers.to_dict())


def _hparams_summary(tag: str, data):
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    data.version = metadata.PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def _hparam_value(value):
    """(protobuf Value, TensorBoard type) of a flattened recipe value."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2
    if isinstance(value, bool):
        return struct_pb2.Value(bool_value=value), api_pb2.DATA_TYPE_BOOL
    if isinstance(value, (int, float)):
        return struct_pb2.Value(number_value=value), api_pb2.DATA_TYPE_FLOAT64
    return struct_pb2.Value(string_value=str(value)), api_pb2.DATA_TYPE_STRING


def hparams_summaries(values: Dict[str, object], metrics: List[tuple]):
    """The HPARAMS experiment and session-start summaries. TensorBoard takes its columns from
    one run's experiment, sorts the hparams marked `differs` first and shows five: the keys that
    differ from the recipe defaults are marked, so they are the ones shown. Metric columns
    come in the order given."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    defaults = recipe_defaults()
    infos, start = [], plugin_data_pb2.SessionStartInfo()
    for key, value in values.items():
        start.hparams[key].CopyFrom(_hparam_value(value)[0])
        infos.append(api_pb2.HParamInfo(name=key, type=_hparam_value(value)[1], differs=defaults.get(key) != value))
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=[
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=label) for tag, label in metrics])
    return (_hparams_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
            _hparams_summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)))


def layout_summary():
    """LAYOUT as TensorBoard's custom-scalars configuration (its CUSTOM SCALARS tab)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata
    layout = layout_pb2.Layout(category=[
        layout_pb2.Category(title=title, closed=closed, chart=[
            layout_pb2.Chart(title=chart, multiline=layout_pb2.MultilineChartContent(tag=[regex]))
            for chart, regex in charts])
        for title, closed, charts in LAYOUT])
    tensor = TensorProto(dtype='DT_STRING', string_val=[layout.SerializeToString()], tensor_shape=TensorShapeProto())
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME))
    return Summary(value=[Summary.Value(tag=metadata.CONFIG_SUMMARY_TAG, tensor=tensor, metadata=meta)])


def write_run_description(writer, recipe_dict: dict, has_teacher: bool):
    """Layout, HPARAMS entry and recipe text into the run's own folder (not a timestamped
    subfolder, as SummaryWriter.add_hparams does: TensorBoard shows that as a separate run
    without metrics). The metric values come from the scalars of the same tags that the run logs."""
    metrics = [(tag, label) for tag, label in HPARAM_METRICS if has_teacher or tag != 'val/teacher_agreement']
    for summary in (layout_summary(), *hparams_summaries(hparam_values(recipe_dict), metrics)):
        writer.file_writer.add_summary(summary)
    # TensorBoard renders text as markdown: indent to show the YAML as a code block.
    text = yaml.safe_dump({k: v for k, v in recipe_dict.items() if k != 'resume'}, sort_keys=False)
    writer.add_text('recipe', '\n'.join('    ' + line for line in text.splitlines()), global_step=0)
    writer.flush()


def mark_unfinished(writer, epoch: int):
    """`run/finished` 0 at `epoch` (0 for a fresh run, the first epoch a resumed session trains),
    flushed now: a session killed before the end leaves the run marked unfinished (the end of the
    last epoch logs 1)."""
    writer.add_scalar(FINISHED, 0., global_step=epoch)
    writer.flush()
