"""The loss-term registry: one row per term a recipe can set under `distill:`.

A row says which loss class computes the term, what it compares (labels, the teacher's logits,
or the output of a submodule of each imitated block), and so whether it needs a teacher. The
recipe's `distill` section (`distill.config.DistillConfig`), its validation, the criterion's
losses and recorders (`distill.criterion`), the console and TensorBoard term lists
(`distill.run_log`) and the README's table of terms (`python -m distill.terms`, checked by
tests/test_terms.py) are all read from `TERMS`.

Adding a term is one `Term(...)` row below plus its loss class in distill/losses.py.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import importlib

KINDS = ('label', 'logit', 'feature')


@dataclass
class TermConfig:
    """One loss term: weight and active epoch window [start, end) (end None = to the end)."""
    weight: float = 0.0
    start: int = 0
    end: Optional[int] = None

    def active(self, epoch: int) -> bool:
        return self.weight != 0 and epoch >= self.start and (self.end is None or epoch < self.end)


@dataclass
class SoftTermConfig(TermConfig):
    temperature: float = 1.0
    # The summed KL divided by N (batchmean) or by N x classes (numel: DeiT's soft distillation,
    # which the paper says it follows; the paper does not say which size its lambdas assume).
    normalize: str = 'batchmean'


# How a feature term turns one block's per-element squared differences into a number:
#   mean:       the mean over every element (1/NCHW; L_rel 1/(N H^2 W^2))
#   batch_sum:  that mean x the GLOBAL batch (a reading of Table 10's "lambda x batch size")
#   sample_sum: the squared Frobenius norm of each sample's difference, averaged over samples
#               (the mean x CHW; L_rel x (HW)^2), as the paper writes the terms
FEATURE_REDUCTIONS = ('mean', 'batch_sum', 'sample_sum')


@dataclass
class FeatureTermConfig(TermConfig):
    # null: the section's distill.feature_reduction; else one of FEATURE_REDUCTIONS.
    reduction: Optional[str] = None


class LossContext(NamedTuple):
    """What the criterion knows beyond a term's own recipe section."""
    label_smoothing: float = 0.0
    global_batch: int = 1             # per-process batch x processes x accumulation
    feature_reduction: str = 'mean'   # the default of feature terms without their own reduction


def feature_reduction(term_cfg: 'FeatureTermConfig', context: LossContext) -> str:
    """The reduction a feature term uses: its own, else the section's default."""
    return getattr(term_cfg, 'reduction', None) or context.feature_reduction


def feature_scale(term_cfg: 'FeatureTermConfig', context: LossContext) -> float:
    """The factor batch_sum puts on the mean: the global batch, so that a recipe means the same
    balance on 1 or 64 processes; 1 for the other reductions."""
    return float(context.global_batch) if feature_reduction(term_cfg, context) == 'batch_sum' else 1.0


@dataclass(frozen=True)
class Term:
    name: str                         # the recipe key: distill.NAME.weight, .start, .end
    loss_name: str                    # the nn.Module class that computes it (distill/losses.py), by
                                      # name: recipes are checked without importing torch
    kind: str                         # label: to the labels; logit: to the teacher's logits;
                                      # feature: to the teacher's recorded features
    summary: str                      # one line for the README's table
    records: Optional[str] = None     # feature terms: the submodule of each imitated block whose
                                      # output is compared ('' = the block's own output)
    config: type = TermConfig         # the dataclass of its recipe section
    needs_mixer: bool = False         # compares mixers: not for a student.mixer=identity student
    # The loss class's constructor arguments from the term's recipe section and the context.
    args: Callable[[TermConfig, LossContext], Tuple] = lambda term, context: ()

    @property
    def loss(self) -> type:
        return getattr(importlib.import_module('distill.losses'), self.loss_name)

    @property
    def needs_teacher(self) -> bool:
        return self.kind != 'label'

    def build(self, term_cfg: TermConfig, context: LossContext):
        """The loss module for this term's recipe section."""
        return self.loss(*self.args(term_cfg, context))


def _feature_args(term, context):
    # FeatureMSE / RelationMSE(scale, per_sample): per_sample sums each sample's elements.
    return (feature_scale(term, context), feature_reduction(term, context) == 'sample_sum')


TERMS: Dict[str, Term] = {t.name: t for t in (
    Term('ce', 'LabelCE', 'label', 'cross-entropy with the labels (unlabelled samples skipped)',
         args=lambda term, context: (context.label_smoothing,)),
    Term('soft', 'SoftTargetKD', 'logit',
         "KL of the softened teacher distribution to the student's, times T^2 (DeiT's soft distillation)",
         config=SoftTermConfig, args=lambda term, context: (term.temperature, term.normalize)),
    Term('hard', 'HardTargetKD', 'logit', "cross-entropy to the teacher's argmax (DeiT's hard distillation)"),
    Term('l_in', 'FeatureMSE', 'feature', 'L_in: MSE of the norm1 outputs (the mixer inputs)',
         records='.norm1', needs_mixer=True, config=FeatureTermConfig, args=_feature_args),
    Term('l_in_hidden', 'FeatureMSE', 'feature', "L'_in: MSE of the block outputs", records='',
         config=FeatureTermConfig, args=_feature_args),
    Term('l_out', 'FeatureMSE', 'feature', 'L_out: MSE of the token-mixer outputs',
         records='.token_mixer', needs_mixer=True, config=FeatureTermConfig, args=_feature_args),
    Term('l_rel', 'RelationMSE', 'feature', 'L_rel: MSE of the token relation matrices of the block outputs',
         records='', config=FeatureTermConfig, args=_feature_args),
)}

for _t in TERMS.values():
    assert _t.kind in KINDS and (_t.records is not None) == (_t.kind == 'feature'), _t
    assert (_t.kind == 'feature') == issubclass(_t.config, FeatureTermConfig), _t


def names(kind: Optional[str] = None) -> List[str]:
    """Term names in registry order, all or of one kind."""
    return [t.name for t in TERMS.values() if kind is None or t.kind == kind]


def configured(cfg) -> List[str]:
    """The terms a `DistillConfig` gives a non-zero weight, in registry order."""
    return [n for n in TERMS if getattr(cfg, n).weight != 0]


def feature_modules(cfg, blocks: Sequence[str]) -> Dict[str, List[str]]:
    """{feature term: the module names it compares, one per imitated block} for the configured
    feature terms, e.g. {'l_out': ['stages.0.blocks.1.token_mixer', ...]}."""
    return {n: [b + TERMS[n].records for b in blocks] for n in configured(cfg) if TERMS[n].kind == 'feature'}


def recorded_modules(modules: Dict[str, List[str]]) -> List[str]:
    """Every module a recorder must hook for `feature_modules(...)`, once each, sorted."""
    return sorted({name for names_ in modules.values() for name in names_})


def describe_reductions(cfg, context: LossContext) -> str:
    """The configured feature terms' reductions, e.g. 'l_in_hidden batch_sum (x1024), l_rel mean'."""
    parts = []
    for name in configured(cfg):
        if TERMS[name].kind == 'feature':
            term = getattr(cfg, name)
            scale = feature_scale(term, context)
            parts.append(f'{name} {feature_reduction(term, context)}' + (f' (x{scale:g})' if scale != 1 else ''))
    return ', '.join(parts)


def markdown_table() -> str:
    """The README's table of terms (tests/test_terms.py checks that the README has it)."""
    rows = ['| term | compares | recorded at each imitated block | teacher | loss class |',
            '|---|---|---|---|---|']
    for t in TERMS.values():
        where = '-' if t.records is None else f'`{t.records}` output' if t.records else 'block output'
        rows.append(f'| `{t.name}` | {t.summary} | {where} | {"yes" if t.needs_teacher else "no"} | '
                    f'`{t.loss.__name__}` |')
    return '\n'.join(rows)


if __name__ == '__main__':
    print(markdown_table())
