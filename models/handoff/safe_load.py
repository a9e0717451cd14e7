"""Opening detector checkpoints without running code from them.

A pickled detector checkpoint (`last.pt`, `best.pt`, `best.deploy.pt`) can name any Python
callable, and even torch's weights-only unpickler calls every class it is allowed to rebuild
(with arguments from the file). Every route of this project that opens one goes through
`detector.load_pickled`: the pickle becomes tensors, plain data and inert stand-ins, the stored
model YAML is checked against an allow-list (`yaml_guard`), and the detector is rebuilt from it
by this project's builders with the stored tensors. `vet_checkpoint` does that before a command
starts. `ultralytics_safe_mode` switches on ultralytics' own restricted mode (its parser then
never evaluates a YAML string) and makes ultralytics open `.pt` files through `load_pickled` too,
so that ultralytics never unpickles a file itself.
"""
from pathlib import Path
from typing import Optional

from ..errors import CheckpointError
from .detector import detector_of, family as detector_family, load_pickled


def vet_checkpoint(path, family: Optional[str] = None) -> Path:
    """`path` after a full restricted load and rebuild (nothing from the file executed;
    CheckpointError with one line for a refused class, call or YAML string, a damaged file, or
    with `family` ('ultralytics', 'yolo9', 'yolov5') a model of another kind)."""
    path = Path(path)
    ckpt = load_pickled(path)
    if family is not None:
        _check_family(path, detector_of(ckpt), family)
    return path


def _check_family(path: Path, model, wanted: str):
    try:
        found = detector_family(model)
    except CheckpointError as e:
        raise CheckpointError(f'{path}: {e}') from None
    if found != wanted:
        raise CheckpointError(f'{path}: a {found} detector; this command takes {wanted} checkpoints'
                              + (' (load it with models.handoff.yolov5.load_detection_model)' if found != 'ultralytics'
                                 else ''))


def torch_safe_load(weight, safe_only=None):
    """ultralytics' `torch_safe_load(weight)` -> (checkpoint dict, file), read by `load_pickled`:
    the model comes out rebuilt from its checked YAML, nothing in the file is called, and a name
    that is not a local file is an error (ultralytics would download it)."""
    return load_pickled(weight), str(weight)


URL_PREFIXES = ('http:', 'https:', 'ftp:', 'rtsp:', 'rtmp:', 'gs:', 's3:', 'ul:')


def vet_dataset(path) -> Path:
    """An ultralytics dataset YAML that ultralytics may read without running anything: a local
    file, valid YAML, no `download:` entry (ultralytics runs it, a Python script, a shell command
    or a download, when the images are missing). CheckpointError with one line otherwise."""
    import yaml
    if str(path).lower().startswith(URL_PREFIXES):
        raise CheckpointError(f'{path}: a dataset YAML is read from a local file only; download it, then pass its path')
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raise CheckpointError(f'{path}: not a readable dataset YAML') from None
    if isinstance(data, dict) and data.get('download'):
        raise CheckpointError(f'{path}: has a download: entry, which ultralytics runs (a Python script, a shell '
                              f'command or a download) when images are missing; remove it and fetch the data yourself')
    return path


def _no_dataset_scripts(original):
    """ultralytics' check_det_dataset that never runs a dataset YAML's download: entry and never
    fetches a dataset YAML by URL."""
    def check_det_dataset(dataset, autodownload=True, split=''):
        if str(dataset).lower().startswith(URL_PREFIXES):
            raise CheckpointError(f'{dataset}: a dataset YAML is read from a local file only; download it, then '
                                  f'pass its path')
        return original(dataset, autodownload=False, split=split)
    check_det_dataset.riformer_guard = True
    return check_det_dataset


def _guard_dataset_scripts():
    """Bind the guarded check_det_dataset in ultralytics.data.utils and in every ultralytics
    module already imported that holds the original (they import it by name)."""
    import sys
    import ultralytics.data.utils as data_utils
    original = data_utils.check_det_dataset
    if getattr(original, 'riformer_guard', False):
        return
    guarded = _no_dataset_scripts(original)
    for name, module in list(sys.modules.items()):
        if name.startswith('ultralytics') and getattr(module, 'check_det_dataset', None) is original:
            module.check_det_dataset = guarded


def ultralytics_safe_mode():
    """Switch on ultralytics' own restricted mode for this process (the flag its
    `ULTRALYTICS_SAFE_LOAD` variable sets at import: its parser resolves `activation` without
    eval and admits only layer classes as module names), set on the imported modules so that it
    also holds where ultralytics was imported before; and make its checkpoint loader
    (`load_checkpoint`, behind YOLO(...), training, resume and AutoBackend) read `.pt` files
    with `torch_safe_load` above; its dataset check never runs a dataset YAML's `download:`
    script nor fetches a dataset YAML by URL. Child processes are left as they were."""
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils as utils
    for module in (utils, tasks):
        module.SAFE_LOAD = True
    tasks.torch_safe_load = torch_safe_load
    _guard_dataset_scripts()
