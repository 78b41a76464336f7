"""Quix Streams' documented hopping-window count, for the feature benchmark.

Runs in its own virtualenv (``.venv-bench-quix``, quixstreams==3.28.1), which
``bench/features.py`` creates on first use through :func:`ensure_quix_venv` so that
the project's pins are never touched; it imports nothing from freshet::

    .venv-bench-quix/bin/python bench/quix_hopping.py --bootstrap B --topics T1,T2 \\
        --total N --progress FILE --group G --state-dir DIR

The app counts every event per message key (the input topics are keyed by
``user_id``) in 5-minute windows hopping every 25 s, as Quix's windowing docs show
(``sdf.hopping_window(...).count().final()``), on its default RocksDB state with
changelog topics. It counts processed events itself and writes
``{"count", "first", "last"}`` to ``--progress`` (the parent stops it by PID).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench.quix")

#: The separate virtualenv and what goes into it (never the project's own venv).
QUIX_VENV = Path(__file__).resolve().parents[1] / ".venv-bench-quix"
QUIX_PINS = ("quixstreams==3.28.1", "orjson")


def ensure_quix_venv() -> str | None:
    """Create ``.venv-bench-quix`` with quixstreams 3.28.1 once; None or why not."""
    py = QUIX_VENV / "bin" / "python"
    check = [str(py), "-c", "import quixstreams, orjson; print(quixstreams.__version__)"]
    if py.exists():
        out = subprocess.run(check, capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip() == "3.28.1":
            return None
    base = shutil.which("python3") or sys.executable
    for step in ([base, "-m", "venv", str(QUIX_VENV)],
                 [str(py), "-m", "pip", "install", "-q", *QUIX_PINS], check):
        log.info("quix venv: %s", " ".join(step))
        try:
            out = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return f"{' '.join(step)} did not finish within 900 s"
        if out.returncode != 0:
            tail = (out.stderr or out.stdout)[-600:]
            return f"{' '.join(step)} failed ({out.returncode}): {tail}"
    return None


class Progress:
    """Same file format as ``bench/_common.Progress`` (kept here: other venv)."""

    def __init__(self, path: Path, total: int, every: int = 2_000) -> None:
        self.path, self.total, self.every = path, total, every
        self.count = 0
        self.first = 0.0

    def __call__(self, _value: Any) -> None:
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += 1
        if self.count % self.every == 0 or self.count == self.total:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"count": self.count, "first": self.first, "last": now}))
            tmp.replace(self.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated input topics")
    parser.add_argument("--total", type=int, required=True)
    parser.add_argument("--progress", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args()
    from quixstreams import Application  # type: ignore[import-not-found]  # own venv

    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest", state_dir=args.state_dir,
                      loglevel=args.loglevel)
    frames = [app.dataframe(app.topic(name, value_deserializer="json"))
              for name in args.topics.split(",")]
    sdf = frames[0]
    for other in frames[1:]:
        sdf = sdf.concat(other)
    sdf = sdf.update(Progress(Path(args.progress), args.total))
    sdf = sdf.hopping_window(duration_ms=300_000, step_ms=25_000, grace_ms=5_000).count().final()
    app.run()


if __name__ == "__main__":
    main()
