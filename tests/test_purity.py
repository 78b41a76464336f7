"""The pure packages stay pure: no Faust/Kafka imports, no clock reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PURE = ("features", "labels", "events", "engine", "evaluation", "training")
FORBIDDEN_MODULES = {"faust", "aiokafka", "confluent_kafka", "mode", "kafka", "streams",
                     "freshet", "time", "datetime"}
FORBIDDEN_CALLS = {"time.time", "time.monotonic", "time.perf_counter", "datetime.now",
                   "datetime.utcnow", "date.today", "datetime.datetime.now"}


def _files() -> list[Path]:
    return sorted(p for pkg in PURE for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_and_calls(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path}: imports {name}"
        if isinstance(node, ast.Call):
            dotted = ast.unparse(node.func)
            assert dotted not in FORBIDDEN_CALLS, f"{path}: calls {dotted}"


def test_there_are_pure_modules_to_check() -> None:
    assert len(_files()) >= 3
