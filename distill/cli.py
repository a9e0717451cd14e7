"""Command-line helpers shared by the tools: an argument parser whose errors are one line."""
import argparse
import sys
from typing import List


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
