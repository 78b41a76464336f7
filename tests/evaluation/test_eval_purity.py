"""evaluation/ and training/ stay pure: no Faust/Kafka/stream/clock imports, no print."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ("evaluation", "training")
FORBIDDEN_MODULES = {"faust", "aiokafka", "confluent_kafka", "mode", "kafka", "streams",
                     "freshet", "time", "datetime"}
FORBIDDEN_CALLS = {"print", "time.time", "time.monotonic", "time.perf_counter", "datetime.now",
                   "datetime.utcnow", "date.today", "datetime.datetime.now", "open"}
MAX_LINES = 400


def _files() -> list[Path]:
    return sorted(p for pkg in PURE for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_LINES, f"{path}: more than {MAX_LINES} lines"
    tree = ast.parse(source, filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path}: imports {name}"
        if isinstance(node, ast.Call):
            assert ast.unparse(node.func) not in FORBIDDEN_CALLS, f"{path}: calls {node.func}"
        if isinstance(node, ast.Assert):
            pytest.fail(f"{path}:{node.lineno}: assert in package code")


def test_there_are_modules_to_check() -> None:
    assert len(_files()) >= 10
