"""The project's commands (`tools/*.py` run them; setup.cfg installs them as `riformer-*`) and
the helpers they share: an argument parser whose errors are one line, argparse types, and
`one_line_errors`, which turns the project's input errors into one line and exit code 2."""
import argparse
import sys
from typing import List

from distill.errors import one_line_errors  # noqa: F401  (what every command's main is wrapped in)
from distill.venv import NEEDED, require_venv  # noqa: F401  (the commands' first check)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line and exit 2, like every tool of this project (argparse would add its usage).
        print(f'error: {message}', file=sys.stderr)
        sys.exit(2)


def int_list(text: str) -> List[int]:
    """argparse type: '1,2,4' -> [1, 2, 4] (positive integers)."""
    try:
        values = [int(v) for v in text.split(',') if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a comma-separated list of integers') from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: give positive integers')
    return values


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text!r}: give a positive integer')
    return value


def int_between(low: int, high: int):
    """argparse type: an integer from `low` to `high` (a count that must be sane, not only positive)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f'{text!r}: give an integer from {low} to {high}')
        return value
    parse.__name__ = 'int'
    return parse
