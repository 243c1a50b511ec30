"""The layers hold: the import contract in pyproject.toml is kept, and it catches violations."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run the contract of `root`'s pyproject.toml over the `deduction` package in `root/src`."""
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def copy_of_project(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "src" / "deduction", tmp_path / "src" / "deduction",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return tmp_path


def plant(root: Path, module: str, line: str) -> None:
    path = root / "src" / Path(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_project_keeps_its_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("deduction.domain.task", "import deduction.application.service", "Layers"),
        ("deduction.domain.ids", "import psycopg", "The domain imports no infrastructure"),
        ("deduction.application.reports", "import deduction.adapters.engine", "Layers"),
        ("deduction.projections.tasks", "import deduction.adapters.http.app", "Layers"),
        ("deduction.adapters.worker.jobs", "import deduction.bootstrap", "composition root"),
        (
            "deduction.reference_engine.server",
            "import deduction.application.ports",
            "reference Engine",
        ),
        (
            "deduction.application.log_cursor",
            "import deduction.application.reports",
            "No import cycles",
        ),
    ],
)
def test_a_planted_violation_breaks_the_contract(
    copy_of_project: Path, module: str, line: str, broken: str
) -> None:
    plant(copy_of_project, module, line)
    result = lint_imports(copy_of_project)
    assert result.returncode != 0, result.stdout
    broken_lines = [x for x in result.stdout.splitlines() if x.rstrip().endswith("BROKEN")]
    assert any(broken in x for x in broken_lines), result.stdout


def test_the_domain_takes_only_the_domain_module_of_eventsourcing() -> None:
    """import-linter cannot forbid a submodule of an external package: checked here."""
    imported = set()
    for path in (ROOT / "src" / "deduction" / "domain").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert {m for m in imported if m.startswith("eventsourcing")} <= {"eventsourcing.domain"}
