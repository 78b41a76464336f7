"""Does `make run` keep up? ``freshet run --rate R`` for a while, its backlog measured.

Run by hand (not a test)::

    .venv/bin/python bench/run_rate.py [--rate 5000] [--seconds 120] [--json var/run-rate.json]

``freshet run`` is what ``make run`` runs: topics, a worker, ``freshet evaluate`` beside
it and the generator at ``--rate`` events/s. Here it runs against a broker of this
run's own (``FRESHET_KAFKA_BOOTSTRAP``: not the shared development broker), with its
own data folder and web port, for ``--seconds`` (its ``--duration``: it stops by
itself). Its live summary prints, once a second, the records produced and consumed;
the backlog is their difference, in records and in seconds of input at the rate.

Kept up means: the generator reached the rate, and the backlog stayed bounded (the
largest backlog of the second half is at most ``--bounded-s`` seconds of input, and
the last one too). Every figure and the series go to ``--json FILE``.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# This file's folder must not shadow the ``features`` package: import from the repo root.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import free_port, http_json  # noqa: E402
from bench._own_run import run_on_own_broker  # noqa: E402
from bench._supervise import ROOT, Child, OwnBroker  # noqa: E402

log = logging.getLogger("run_rate")

#: ``[  12.0s] produced     59000  consumed     58850 (  5000 ev/s) ...``
LINE = re.compile(r"^\[\s*([0-9.]+)s\] produced\s+(\d+)\s+consumed\s+(\d+)")


def parse_summary(text: str) -> list[tuple[float, int, int]]:
    """(seconds, produced, consumed) of each live-summary line of ``freshet run``.

    >>> parse_summary("x\\n[   1.0s] produced      4990  consumed      4800 (4800 ev/s)\\n")
    [(1.0, 4990, 4800)]
    """
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out.append((float(m.group(1)), int(m.group(2)), int(m.group(3))))
    return out


def judge_backlog(series: list[tuple[float, int, int]], rate: float,
                  bounded_s: float) -> dict[str, Any]:
    """Backlog figures of a run; ``kept_up`` by the rule of the module doc.

    >>> d = judge_backlog([(1.0, 5000, 4000), (2.0, 10000, 9900), (3.0, 15000, 14950),
    ...                    (4.0, 20000, 19990)], 5000, 1.0)
    >>> d["kept_up"], d["backlog_max_second_half_records"], d["produced_rate"]
    (True, 50, 5000.0)
    """
    if len(series) < 4:
        return {"error": f"only {len(series)} summary lines"}
    backlog = [(t, p - c) for t, p, c in series]
    half = backlog[len(backlog) // 2:]
    (t0, p0, _), (t1, p1, _) = series[len(series) // 4], series[-1]
    produced_rate = (p1 - p0) / (t1 - t0) if t1 > t0 else 0.0
    max_half = max(b for _, b in half)
    last = backlog[-1][1]
    return {"produced_rate": round(produced_rate, 1),
            "backlog_p50_records": statistics.median(b for _, b in backlog),
            "backlog_max_records": max(b for _, b in backlog),
            "backlog_max_second_half_records": max_half,
            "backlog_last_records": last,
            "backlog_max_second_half_s": round(max_half / rate, 2),
            "backlog_last_s": round(last / rate, 2),
            "kept_up": (produced_rate >= 0.95 * rate and max_half <= bounded_s * rate
                        and last <= bounded_s * rate)}


def run(args: argparse.Namespace, work: Path, broker: OwnBroker) -> dict[str, Any]:
    import os

    port = free_port(pairs=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env.update({"FRESHET_KAFKA_BOOTSTRAP": broker.bootstrap,
                "FRESHET_DATA_DIR": str(work / "data"),
                "FRESHET_WEB_PORT": str(port), "PYTHONPATH": str(ROOT),
                **dict(kv.split("=", 1) for kv in args.worker_env)})
    (work / "data").mkdir(parents=True, exist_ok=True)
    out = work / "run.out"
    child = Child("freshet run", [str(ROOT / ".venv" / "bin" / "freshet"), "run", "--rate",
                                  str(args.rate), "--duration", str(args.seconds)], out, env)
    deadline = time.monotonic() + args.seconds + 240
    # the worker's CPU time and batches over the middle of the run (its /stats)
    began = time.monotonic()
    first: tuple[float, dict[str, Any]] | None = None
    last: tuple[float, dict[str, Any]] | None = None
    while child.alive() and time.monotonic() < deadline:
        time.sleep(1.0)
        since = time.monotonic() - began
        if args.seconds * 0.25 <= since <= args.seconds * 0.9 + 20:
            doc = http_json(port, "/stats")
            if doc is not None and "cpu_seconds" in doc:
                last = (time.monotonic(), doc)
                first = first or last
    if child.alive():
        child.stop(timeout_s=60)
        return {"error": "freshet run did not stop by itself", "exit": None}
    text = out.read_text(errors="replace")
    series = parse_summary(text)
    worker: dict[str, Any] = {"error": "no /stats answered during the run"}
    if first is not None and last is not None and last[0] > first[0]:
        secs = last[0] - first[0]
        (_, a), (_, b) = first, last
        worker = {"seconds": round(secs, 1),
                  "cpu_cores": round((b["cpu_seconds"] - a["cpu_seconds"]) / secs, 3),
                  "batches_per_s": round((b["batches"]["batches"] - a["batches"]["batches"])
                                         / secs, 1),
                  "events_per_batch": round(
                      (sum(b["events"].values()) - sum(a["events"].values()))
                      / max(1, b["batches"]["batches"] - a["batches"]["batches"]), 1),
                  "batches_end": b["batches"], "rss_mib_end": round(
                      (b.get("memory") or {}).get("rss_bytes", 0) / 2**20, 1)}
    return {"rate": args.rate, "seconds": args.seconds, "exit": child.popen.poll(),
            **judge_backlog(series, args.rate, args.bounded_s), "worker": worker,
            "worker_env": dict(kv.split("=", 1) for kv in args.worker_env),
            "series": series, "tail": text.splitlines()[-5:]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="the generator's events/s")
    ap.add_argument("--seconds", type=float, default=120.0, help="freshet run --duration")
    ap.add_argument("--bounded-s", type=float, default=2.0,
                    help="most backlog (in seconds of input) that still counts as kept up")
    ap.add_argument("--worker-env", action="append", default=[], metavar="FRESHET_X=V",
                    help="a setting for the run (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the broker folder and logs")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    args = ap.parse_args(argv)
    if args.rate <= 0 or args.seconds < 10:
        ap.error("--rate must be > 0 and --seconds >= 10")
    if any("=" not in kv or not kv.startswith("FRESHET_") for kv in args.worker_env):
        ap.error("--worker-env takes FRESHET_NAME=VALUE")

    def judge(doc: dict[str, Any]) -> bool:
        return doc.get("exit") == 0 and "error" not in doc

    def summary(doc: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if k not in ("series", "tail")}

    return run_on_own_broker("run-rate", args, lambda work, broker: run(args, work, broker),
                             judge, "ok", summary, broker="own (LocalKafka)")


if __name__ == "__main__":
    raise SystemExit(main())
