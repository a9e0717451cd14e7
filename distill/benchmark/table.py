"""Rows of cells as a markdown table or aligned text (every table the benchmark prints)."""
from typing import List


def render_table(cells: List[List[str]], text_columns: int, markdown: bool = False) -> str:
    """Rows of cells (the header first) as a markdown table or aligned text: the first
    `text_columns` columns left-aligned, the numbers after them right-aligned."""
    if markdown:
        lines = ['| ' + ' | '.join(c) + ' |' for c in cells]
        lines.insert(1, '|' + '|'.join('---' if i < text_columns else '---:' for i in range(len(cells[0]))) + '|')
        return '\n'.join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    lines = ['  '.join(c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return '\n'.join(lines)
