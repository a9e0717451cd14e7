"""The shape of the code's imports (issue 31), read from the source with `ast` (nothing is
imported): no modules of distill/ or models/ import each other in a loop, counting imports
inside functions too, and no library module imports a command (distill/cli/)."""
import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ('distill', 'models')


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob('*.py'))}


def imported(path: Path, known: Dict[str, Path]) -> Set[str]:
    """The project modules `path` imports anywhere in its body: `from a import b` counts as an
    import of the module a.b where that is a module, else of a."""
    own = module_name(path)
    package = own if path.name == '__init__.py' else own.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - (node.level - 1)]
                base = '.'.join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f'{base}.{alias.name}' if f'{base}.{alias.name}' in known else base)
    return {name for name in found if name in known and name != own}


def graph() -> Dict[str, Set[str]]:
    known = modules()
    return {name: imported(path, known) for name, path in known.items()}


def loops(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_reader_sees_imports_inside_functions_and_relative_ones():
    edges = graph()
    assert 'distill.benchmark.case' in edges['distill.benchmark.training']     # `from .case import` in a function
    assert 'models.handoff.safe_load' in edges['distill.detection']            # inside a function
    assert 'distill.train' in edges['distill.cli.train']                       # the command imports the library


def test_no_modules_import_each_other_in_a_loop():
    assert loops(graph()) == []


def test_no_library_module_imports_a_command():
    edges = graph()
    upward = {name: sorted(n for n in targets if n.startswith('distill.cli'))
              for name, targets in edges.items() if not name.startswith('distill.cli')}
    assert {name: targets for name, targets in upward.items() if targets} == {}
