"""Every function of distill/ reads on one screen (issue 31): under 80 lines, decorators included,
read from the source with `ast`."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 80


def long_functions(folder: Path, limit: int = LIMIT) -> list:
    """(file, line, name, length) of every function or method of `limit` lines or more."""
    found = []
    for path in sorted(folder.rglob('*.py')):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
                length = node.end_lineno - start + 1
                if length >= limit:
                    found.append((path.name, start, node.name, length))
    return found


def test_the_counter_sees_a_long_method_and_its_decorator(tmp_path):
    (tmp_path / 'long.py').write_text('class A:\n    @staticmethod\n    def f():\n' + '        x = 1\n' * 78)
    (tmp_path / 'short.py').write_text('def g():\n    return 1\n')
    assert long_functions(tmp_path) == [('long.py', 2, 'f', 80)]


def test_every_function_in_distill_is_under_80_lines():
    assert long_functions(ROOT / 'distill') == []
