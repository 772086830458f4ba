"""The package's layers stay straight: .importlinter exempts no import, and drward's own modules are imported at
module top (an import inside a function hides an arrow from lint-imports' readers; one kept must say why)."""
import ast
import configparser
import os.path as osp
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_exempt_no_import():
    config = configparser.ConfigParser()
    config.read(ROOT / '.importlinter')
    contracts = [name for name in config.sections() if name.startswith('importlinter:contract:')]
    assert {'importlinter:contract:layers', 'importlinter:contract:acyclic'} <= set(contracts)
    exempted = {name: config[name]['ignore_imports'] for name in contracts if 'ignore_imports' in config[name]}
    assert exempted == {}


def _own_imports_inside_functions(path: Path):
    source = path.read_text(encoding='utf-8')
    lines = source.splitlines()
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ''] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(name == 'drward' or name.startswith('drward.') for name in names):
                yield node.lineno, lines[node.lineno - 1]


def test_drward_modules_are_imported_at_module_top_or_say_why():
    unexplained = [f'{osp.relpath(path, ROOT)}:{line_no}: {line.strip()}'
                   for path in sorted((ROOT / 'drward').rglob('*.py'))
                   for line_no, line in _own_imports_inside_functions(path) if '#' not in line]
    assert unexplained == []


def test_the_check_finds_an_import_inside_a_function(tmp_path):
    module = tmp_path / 'm.py'
    module.write_text('import os\n\n\ndef f():\n    from drward.utils import options\n    import drward  # why\n')
    assert [line_no for line_no, _ in _own_imports_inside_functions(module)] == [5, 6]
