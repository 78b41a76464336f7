"""features/ is pure: stdlib + events only, no Kafka, Faust or clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import features

FEATURES_DIR = Path(features.__file__).parent
MODULES = sorted(FEATURES_DIR.glob("*.py"))
ALLOWED_IMPORTS = {
    "__future__", "abc", "collections", "dataclasses", "hashlib", "importlib", "inspect",
    "math", "re", "sys", "typing", "events", "features", "numpy", "msgspec",
}
CLOCK_CALLS = {"time", "time_ns", "monotonic", "perf_counter", "now", "utcnow", "today"}


def test_there_are_modules_to_check() -> None:
    assert {p.name for p in MODULES} >= {"spec.py", "featureset.py", "catalog.py", "tiles.py"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_are_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            roots = [(node.module or "").split(".")[0]]
        else:
            continue
        for root in roots:
            assert root in ALLOWED_IMPORTS, f"{path.name}:{node.lineno} imports {root}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_clock_reads_or_prints(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            assert name not in CLOCK_CALLS, f"{path.name}:{node.lineno} calls {name}()"
            assert name != "print", f"{path.name}:{node.lineno} prints"
        assert not isinstance(node, ast.Assert), f"{path.name}:{node.lineno} uses assert"
