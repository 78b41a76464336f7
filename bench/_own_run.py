"""The frame of a supervised bench run (``bench/chaos.py``, ``bench/soak.py``).

A broker of its own, a work folder under ``var/`` (removed after a clean run unless
``--keep``), every process it started stopped by PID, and the figures as JSON
(``--json FILE``) with how the run was made.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import ROOT, stop_all
from bench._supervise import OwnBroker, code_version


def run_on_own_broker(name: str, args: argparse.Namespace,
                      body: Callable[[Path, OwnBroker], dict[str, Any]],
                      judge: Callable[[dict[str, Any]], bool], verdict: str,
                      summary: Callable[[dict[str, Any]], dict[str, Any]],
                      **run_notes: Any) -> int:
    """Run ``body(work, broker)``; ``judge`` says whether its figures are clean.

    Writes ``{"run": ..., verdict: clean, **figures}`` to ``args.json`` and prints
    ``summary`` of it; the exit status is 0 only for a clean run.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    work = ROOT / "var" / f"{name}-run-{time.strftime('%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load0 = os.getloadavg()[0]
    broker = OwnBroker(name)
    ok = False
    doc: dict[str, Any] = {}
    try:
        broker.start()
        doc = body(work, broker)
        ok = judge(doc)
    finally:
        stop_all()
        broker.stop(remove=ok and not args.keep)
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    doc = {"run": {"started": started, "code": code_version(), "cores": os.cpu_count(),
                   **run_notes, "load_1min_start": load0, "load_1min_end": os.getloadavg()[0],
                   "work_dir": None if ok and not args.keep else str(work),
                   "args": {k: str(v) for k, v in vars(args).items()}},
           verdict: ok, **doc}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=str))
    print(json.dumps(summary(doc), indent=1))  # the summary
    return 0 if ok else 1
