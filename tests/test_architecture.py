"""The shape of the house: imports point one way, library imports sit at the top, modules and
functions stay small enough to hold in the head (docs/package-map.md, "Dependencies")."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

LIBRARY = ("ctsearcher_jax", "feature_extraction")
# Commands parse flags and print; the CLI wires them. Their size is not library logic.
NOT_LIBRARY = ("ctsearcher_jax/commands/", "ctsearcher_jax/cli.py")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def _library_files(repo: Path) -> list[Path]:
    files = [p for pkg in LIBRARY for p in sorted((repo / pkg).rglob("*.py"))]
    return [p for p in files if not str(p.relative_to(repo)).startswith(NOT_LIBRARY)]


def _run(repo: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=repo, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(repo)))


def test_layers_and_no_cycles_by_import_linter(repo_root):
    """`lint-imports` with the contracts of pyproject.toml: the layers, and no cycle between the
    modules of any package."""
    res = _run(repo_root, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                                "sys.exit(lint_imports_command())")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken" in res.stdout, res.stdout[-2000:]


def test_library_modules_import_at_the_top_and_lint_clean(repo_root):
    """ruff with pyproject.toml's rules: pyflakes, sorted imports, and PLC0415 (an import inside a
    function hides a dependency) outside the CLI, the commands and optional dependencies."""
    res = _run(repo_root, "-m", "ruff", "check", "--no-cache", *LIBRARY, "scripts", "tests")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def test_a_new_upward_import_breaks_the_contract(repo_root, tmp_path):
    """The contract can fail: a copy of the package where `data` imports `feature_extraction`."""
    for pkg in LIBRARY:
        subprocess.run(["cp", "-r", str(repo_root / pkg), str(tmp_path / pkg)], check=True)
    (tmp_path / "pyproject.toml").write_text((repo_root / "pyproject.toml").read_text())
    with open(tmp_path / "ctsearcher_jax" / "data" / "targets.py", "a") as f:
        f.write("\nimport feature_extraction.extract  # an upward import\n")
    res = _run(tmp_path, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                               "sys.exit(lint_imports_command())")
    assert res.returncode != 0
    assert "ctsearcher_jax.data is not allowed to import feature_extraction" in res.stdout


@pytest.mark.parametrize("limit", ["module", "function"])
def test_no_library_module_or_function_is_too_long(repo_root, limit):
    too_long = []
    for path in _library_files(repo_root):
        source = path.read_text()
        where = path.relative_to(repo_root)
        if limit == "module":
            n = len(source.splitlines())
            if n > MAX_MODULE_LINES:
                too_long.append(f"{where}: {n} lines")
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{where}:{node.lineno} {node.name}: {n} lines")
    bound = MAX_MODULE_LINES if limit == "module" else MAX_FUNCTION_LINES
    assert not too_long, f"over {bound} lines: {too_long}"
