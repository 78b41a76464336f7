"""The packages stay lint-clean (ruff) and fully typed (mypy --strict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["events", "features", "labels", "engine", "evaluation", "training", "streams",
            "freshet"]


@pytest.mark.parametrize("command", [
    ["ruff", "check", "."],
    ["mypy", "--strict", *PACKAGES],
], ids=["ruff", "mypy"])
def test_static_checks_pass(command: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
