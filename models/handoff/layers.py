"""Detector layers: RIFormerBlock as a row of a detector's model YAML (e.g. after a C2f in the neck).

    - [-1, 3, C2f, [512]]             # 256 channels with width_multiple 0.5
    - [-1, 1, RIFormerBlock, [256]]   # [channels, mlp_ratio, drop_path, layer_scale_init, form]

Detector parsers pass an unknown module's arguments through unscaled and take its output
channels to be its input channels (in a YAML with `scales:`, `models.handoff.yolo.prepare_cfg`
writes the scaled width first). A declared width that does not match the input (typically the
unscaled width of the layer before) is caught on the first forward, which every parser runs
while building (stride computation), with the value to write; inside `collect_width_errors`
every such row of one build is reported at once.
"""
import contextlib
from typing import Callable, List, Optional, Tuple

import torch

from ..errors import HandoffError
from ..riformer import RIFormerBlock

# (row, declared, input channels) of each mismatch seen while a collect_width_errors() is open.
_mismatches: Optional[List[Tuple[object, int, int]]] = None


def width_message(row, declared: int, got: int) -> str:
    where = f'row {row}' if row is not None else 'a row'
    return (f'{where}: RIFormerBlock declares {declared} channels but its input has {got} '
            f'(detector parsers do not scale its argument by width_multiple): write '
            f'[-1, 1, RIFormerBlock, [{got}]], or build a YAML with scales: through tools/detect.py, which scales it')


@contextlib.contextmanager
def collect_width_errors(describe: Callable[[object, int, int], str] = width_message):
    """Build a detector inside this to hear of every RIFormerBlock row whose width is wrong at
    once: such a block notes it and passes its input on (the parser sized the layers after it
    for that input), and on leaving one HandoffError names them all (`describe(row, declared,
    input)` each, joined by '; '). Also when the build failed later for another reason."""
    global _mismatches
    outer, _mismatches = _mismatches, []
    try:
        yield
    except Exception as e:
        if _mismatches:
            raise HandoffError(_joined(_mismatches, describe)) from e
        raise
    else:
        if _mismatches:
            raise HandoffError(_joined(_mismatches, describe))
    finally:
        _mismatches = outer


def _joined(mismatches, describe) -> str:
    unique = list(dict.fromkeys(mismatches))       # a build may run its forward more than once
    return '; '.join(describe(*m) for m in unique)


class RIFormerNeckBlock(RIFormerBlock):
    """A RIFormerBlock that checks its declared channels against its input (YAML name
    `RIFormerBlock`). Same parameters, forms and folds as the backbone's blocks."""

    def __init__(self, dim: int, mlp_ratio: float = 4., drop_path: float = 0.,
                 layer_scale_init_value: float = 1e-5, form: str = 'train'):
        super().__init__(int(dim), float(mlp_ratio), float(drop_path), float(layer_scale_init_value), str(form))
        self.layer_scale_init_value = float(layer_scale_init_value)

    @property
    def dim(self) -> int:
        return self.norm1.num_channels

    def yaml_args(self) -> list:
        """YAML arguments that rebuild this block in its current form."""
        mlp_ratio = self.mlp.fc1.out_channels / self.dim
        drop_path = float(getattr(self.drop_path1, 'drop_prob', 0.))
        return [self.dim, mlp_ratio, drop_path, self.layer_scale_init_value, self.form]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and x.shape[1] != self.dim:   # tracing: shapes are fixed
            row = getattr(self, 'i', None)    # the row index, set by the parsers
            if _mismatches is None:
                raise HandoffError(width_message(row, self.dim, x.shape[1]))
            _mismatches.append((row, self.dim, int(x.shape[1])))
            return x
        return super().forward(x)
