"""The house rules of docs/design.md, checked on the source: which package may import which, and that
every package is installed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Top-level-qualified names of every import in a file (``from a.b import c`` → ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def files(package: str) -> list[Path]:
    return sorted((REPO / package).glob("*.py"))


@pytest.mark.parametrize("package", ["callbacks", "plotting", "models", "coding", "datamodules", "cli"])
def test_lower_layers_never_import_lightning_modules_or_train(package):
    for path in files(package):
        upward = {m for m in imported_modules(path) if m.split(".")[0] in ("lightning_modules", "train")}
        assert not upward, f"{path.relative_to(REPO)} imports {sorted(upward)}"


@pytest.mark.parametrize("package", ["models", "coding"])
def test_models_and_coding_never_import_lightning(package):
    for path in files(package):
        lightning = {m for m in imported_modules(path) if m.split(".")[0] in ("lightning", "pytorch_lightning")}
        assert not lightning, f"{path.relative_to(REPO)} imports {sorted(lightning)}"


def test_callbacks_holds_only_callbacks():
    for path in files("callbacks"):
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bases = {
            base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
            for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef)
            for base in node.bases
        }
        assert "Callback" in bases, f"{path.relative_to(REPO)} defines no Callback: it belongs elsewhere"


def test_every_package_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert packages <= listed, f"packages missing from pyproject.toml: {sorted(packages - listed)}"
