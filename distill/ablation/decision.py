"""A study's declared rule, applied by the report rather than read off its tables by hand.

Rule (the config's `decision`): the recommendation is the candidate with the highest mean of the
metric; it holds "with confidence" when its interval against each other candidate lies above 0
(the same intervals as the comparisons: two-level when teachers are the unit of replication,
Welch otherwise). With `decision.confirms` (the output folder of the study this draw confirms):
confirmed when every comparison answered there ("a better" / "b better") is answered the same
way here, and the recommendation is the same candidate.

The outcome is written as decision.json beside the report, so that the confirmation draw can read
the study's without parsing markdown.
"""
import json
from pathlib import Path
from typing import List, Optional

from ..errors import RecipeError
from ..integrity import read_json
from .compare import answer, by_teacher, difference_between
from .stats import mean_of_teachers

ANSWERED = ('a better', 'b better')


def decide(runs, decision, several: bool) -> dict:
    """The recommendation among `decision.candidates` and its interval against each other one."""
    means = {name: mean_of_teachers(by_teacher(runs, name, decision.metric)) for name in decision.candidates}
    outcome = {'metric': decision.metric, 'means': means, 'recommendation': None, 'with_confidence': False,
               'against': []}
    ranked = [n for n in decision.candidates if means[n] is not None]
    if not ranked:
        return outcome
    best = max(ranked, key=lambda n: means[n])
    for other in (n for n in decision.candidates if n != best):
        d = difference_between(runs, best, other, decision.metric, several)
        outcome['against'].append({'candidate': other, 'diff': d and d.diff, 'low': d and d.low,
                                   'high': d and d.high})
    outcome.update(recommendation=best,
                   with_confidence=all(a['low'] is not None and a['low'] > 0 for a in outcome['against']))
    return outcome


def answers(compared) -> dict:
    """{comparison name: its declared reading} of this draw."""
    return {item['comparison'].name: answer(item['difference']) for item in compared}


def confirm(outcome: dict, compared, reference: Path) -> dict:
    """This draw read against the study in `reference` (its decision.json) by the declared
    criterion. `checked` is False, with the reason, when the study's outcome is not there yet."""
    path = Path(reference) / 'decision.json'
    try:
        study = read_json(path)
    except RecipeError as e:
        return {'reference': str(reference), 'checked': False,
                'reason': f'{e}: run the study first, then this command again (finished runs are reused)'}
    if not isinstance(study, dict) or not isinstance(study.get('answers'), dict):
        return {'reference': str(reference), 'checked': False,
                'reason': f'{path}: not a decision the report wrote; rerun the study to write it again'}
    answered = sorted(n for n, a in study['answers'].items() if a in ANSWERED)
    here = answers(compared)
    differ = [f'{name}: {study["answers"][name]} there, {here.get(name, "not compared")} here'
              for name in answered if here.get(name) != study['answers'][name]]
    if study.get('recommendation') != outcome['recommendation']:
        differ.append(f'recommendation: {study.get("recommendation")} there, {outcome["recommendation"]} here')
    return {'reference': str(reference), 'checked': True, 'confirmed': not differ, 'differ': differ,
            'answered_there': answered}


def write(path: Path, outcome: dict, compared, confirmation: Optional[dict]):
    record = dict(outcome, answers=answers(compared), confirmation=confirmation)
    Path(path).write_text(json.dumps(record, indent=1) + '\n')


def _signed(v):
    return '-' if v is None else f'{v:+.2f}'


def lines(outcome: dict, confirmation: Optional[dict]) -> List[str]:
    """The decision section of ablation.md."""
    best = outcome['recommendation']
    out = ['', 'Decision by the declared rule (the candidate with the highest mean '
               f'{outcome["metric"]}; "with confidence" when its interval against each other candidate lies above 0):', '']
    if best is None:
        return out + ['- no candidate has a finished run']
    means = ', '.join(f'{n} {"-" if m is None else f"{m:.2f}"}' for n, m in outcome['means'].items())
    out.append(f'- means: {means}')
    for a in outcome['against']:
        out.append(f'- {best} - {a["candidate"]}: {_signed(a["diff"])} [{_signed(a["low"])}, {_signed(a["high"])}]')
    out.append(f'- **recommendation: {best}, {"with confidence" if outcome["with_confidence"] else "not with confidence"}**')
    if confirmation is not None:
        if not confirmation['checked']:
            out.append(f'- confirmation against {confirmation["reference"]}: not checked ({confirmation["reason"]})')
        elif confirmation['confirmed']:
            out.append(f'- **confirmed** against {confirmation["reference"]}: the comparisons answered there '
                       f'({", ".join(confirmation["answered_there"]) or "none"}) are answered the same way here, '
                       f'and the recommendation is the same')
        else:
            out.append(f'- **not confirmed** against {confirmation["reference"]}: {"; ".join(confirmation["differ"])}')
    return out
