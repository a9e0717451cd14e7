"""Detector layers: RIFormerBlock as a row of a detector's model YAML (e.g. after a C2f in the neck).

    - [-1, 3, C2f, [512]]             # 256 channels with width_multiple 0.5
    - [-1, 1, RIFormerBlock, [256]]   # [channels, mlp_ratio, drop_path, layer_scale_init, form]

Detector parsers pass an unknown module's arguments through unscaled and take its output
channels to be its input channels. A declared width that does not match the input (typically
the unscaled width of the layer before) is caught on the first forward, which every parser
runs while building (stride computation), with the value to write.
"""
import torch

from ..errors import HandoffError
from ..riformer import RIFormerBlock


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
            layer = getattr(self, 'i', None)    # the row index, set by the parsers
            where = f'row {layer}' if layer is not None else 'a row'
            raise HandoffError(
                f'{where}: RIFormerBlock declares {self.dim} channels but its input has {x.shape[1]} '
                f'(detector parsers do not scale its argument by width_multiple): write '
                f'[-1, 1, RIFormerBlock, [{x.shape[1]}]]')
        return super().forward(x)
