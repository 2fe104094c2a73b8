"""Architecture contracts.

* The import contracts of ``pyproject.toml`` (``[tool.importlinter]``, checked by import-linter): the
  layers app -> eraser_eval -> adapler (nothing imports upwards), no import cycle between the modules
  of a package, no Gradio in the library. import-linter reads every import statement, also those
  inside functions, so deferring an import into a function does not hide a dependency or a cycle.
* Imports inside functions say why: every ``import`` / ``from ... import`` statement inside a function
  (at any depth) has a comment on its own line or on the line above it (e.g. ``# optional heavy
  dependency``). A run of import statements (only blank lines between them, as isort groups them)
  shares the comment above its first statement.
  Comments that are only tool directives (``# noqa``, ``# type: ignore``, ``# pragma: ...``) do not count.

``docs/architecture.md`` describes the layout these tests hold the code to.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tokenize
import tomllib
from pathlib import Path

import pytest

from conftest import REPO

PYPROJECT = REPO / "pyproject.toml"
CONTRACTS = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


# Contracts the code breaks today, each with the reason. A listed contract that is kept again fails the
# run (strict xfail): then delete its entry here.
KNOWN_BROKEN: dict[str, str] = {}


@pytest.mark.parametrize("contract", [
    pytest.param(c["id"], marks=pytest.mark.xfail(strict=True, reason=KNOWN_BROKEN[c["id"]]))
    if c["id"] in KNOWN_BROKEN else c["id"] for c in CONTRACTS])
def test_import_contract(contract):
    pytest.importorskip("importlinter", reason="import-linter is a dev dependency (requirements.txt, extra 'dev')")
    # A subprocess: the linter puts its working directory on sys.path and configures logging.
    r = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
                        str(PYPROJECT), "--contract", contract, "--no-cache", "--no-logo"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"import contract {contract!r} broken:\n{r.stdout}\n{r.stderr}"


def test_every_contract_has_an_id_and_the_layers_are_the_packages():
    ids = [c.get("id") for c in CONTRACTS]
    assert all(ids) and len(set(ids)) == len(ids)
    layers = next(c for c in CONTRACTS if c["type"] == "layers")
    assert layers["layers"] == ["app", "eraser_eval", "adapler"]


# --------------------------------------------------------------------------------------------------
# imports inside functions

_DIRECTIVE = re.compile(r"noqa(:\s*[A-Z0-9, ]+)?|type:\s*ignore(\[[^\]]*\])?|pragma:[^#]*|isort:\s*\w+|fmt:\s*\w+", re.I)
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".ruff_cache", ".pytest_cache", "node_modules"}


def python_files() -> list[Path]:
    return sorted(p for p in REPO.rglob("*.py")
                  if not SKIP_DIRS.intersection(p.relative_to(REPO).parts[:-1]) and ".egg-info" not in str(p))


def explaining_comments(source: str) -> dict[int, tuple[bool, bool]]:
    """Line -> (it has a comment that says something, the line is only that comment)."""
    out: dict[int, tuple[bool, bool]] = {}
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(iter(source.splitlines(keepends=True)).__next__):
        if tok.type != tokenize.COMMENT:
            continue
        text = _DIRECTIVE.sub("", tok.string.lstrip("#")).strip(" #:;,")
        if re.search(r"[A-Za-z]{2}", text):
            row = tok.start[0]
            out[row] = (True, lines[row - 1].strip().startswith("#"))
    return out


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, statement) of every import inside a function that has no explaining comment."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    comments = explaining_comments(source)
    lines = source.splitlines()
    found: list[ast.stmt] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    justified: dict[int, bool] = {}
    bad = []
    for node in sorted(found, key=lambda n: n.lineno):
        own = any(comments.get(r, (False, False))[0] for r in range(node.lineno, (node.end_lineno or node.lineno) + 1))
        above = node.lineno - 1
        ok = own or comments.get(above, (False, False)) == (True, True)
        if not ok:  # a run of imports (blank lines between them allowed, as isort sorts) shares one comment
            while above > 0 and not lines[above - 1].strip():
                above -= 1
            prev = next((n for n in found if (n.end_lineno or n.lineno) == above), None)
            ok = prev is not None and justified.get(prev.lineno, False)
        justified[node.lineno] = ok
        if not ok:
            bad.append((node.lineno, ast.get_source_segment(source, node).splitlines()[0]))
    return bad


def unexplained_function_imports() -> dict[str, list[tuple[int, str]]]:
    out = {}
    for path in python_files():
        bad = function_level_imports(path)
        if bad:
            out[str(path.relative_to(REPO))] = bad
    return out


def test_the_scanner_is_precise(tmp_path):
    src = '''
import os  # module level: not counted


def a():
    import json
    # the optional heavy dependency, only for plots
    import plotly
    import pandas as pd
    from math import pi  # stdlib, cheap; here for the example

    from os import path


def b():
    x = 1

    import re  # noqa: PLC0415
    s = "# not a comment"; import csv
    if x:
        def inner():
            from collections import OrderedDict
    return lambda: __import__("zlib")


class C:
    import sys  # class body: not a function
'''
    p = tmp_path / "m.py"
    p.write_text(src)
    assert [ln for ln, _ in function_level_imports(p)] == [6, 18, 19, 22]


def test_imports_inside_functions_say_why():
    bad = unexplained_function_imports()
    listing = "\n".join(f"{f}:{ln}: {stmt}" for f, items in bad.items() for ln, stmt in items)
    assert not bad, f"{sum(map(len, bad.values()))} imports inside functions without a comment saying why:\n{listing}"
