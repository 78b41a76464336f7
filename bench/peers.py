"""More peers for the feature benchmark: Bytewax 0.21.1 and Pathway 0.33.0, each doing
the Quix peer's job (``bench/quix_hopping.py``) on the same backlog.

Run by hand (not a test)::

    .venv/bin/python bench/peers.py [--events 200000] [--only bytewax,pathway] \\
        [--pathway-threads 1[,2]] [--json FILE] [--cap-seconds 180] [--keep-outputs]

The job, for every peer: both input topics (clicks and predictions, keyed by
``user_id``, JSON values whose ``ts`` is the event time in ms, 4 partitions), every
event counted per user over 5-minute windows sliding every 25 s in event time, over
a pre-produced backlog. Each peer is a standalone app in a virtualenv of its own,
created on first use (``.venv-bench-bytewax``: ``bytewax[kafka]==0.21.1`` + orjson;
``.venv-bench-pathway``: ``pathway==0.33.0`` + orjson; never the project's ``.venv``):

* ``bench/bytewax_sliding.py`` -- ``count_window(EventClock, SlidingWindower)``, one
  worker, in-memory state; timed from its first counted event to its last window
  emitted (the windows close at the end of the input, see that file).
* ``bench/pathway_sliding.py`` -- ``windowby(sliding(...)).reduce(count())``, static
  Kafka readers; timed as ``pw.run()`` minus the same app's run on empty topics.

After each run the peer's window counts are checked, (user, window) by (user,
window), against the counts computed here from the log read back from the peer's
own input topics; the result goes into the ``Throughput`` note (or its error).

:func:`bytewax_app` and :func:`pathway_app` take the arguments of ``quix_app`` in
``bench/features.py`` and return a ``bench._common.Throughput``. ``main()`` runs them
on their own: a broker of its own (``bench._common.broker``; ``FRESHET_KAFKA_BOOTSTRAP``
if set), the seeded log of ``bench/features.py``'s ``world()`` produced into each
peer's topics (``peers-<hhmmss>-<peer>-clicks``/``-predictions``, ``retention.ms=-1``),
each peer alone, one Pathway run per ``--pathway-threads`` value; it prints events/s
per peer (``--json`` also writes them). Logs and progress files stay in
``var/peers-run-<hhmmss>/``; the window outputs are removed unless ``--keep-outputs``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

# This file's folder must not shadow the ``features`` package: import from the repo root.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from bench._common import (  # noqa: E402
    ROOT,
    Proc,
    Throughput,
    create_topics,
    produce_backlog,
    read_topic,
    stop_all,
    wait_for_progress,
)
from bench._common import broker as bench_broker  # noqa: E402

log = logging.getLogger("bench.peers")

PEERS = ("bytewax", "pathway")
#: The separate virtualenvs and what goes into them (never the project's own venv).
BYTEWAX_VENV = ROOT / ".venv-bench-bytewax"
BYTEWAX_VERSION = "0.21.1"
BYTEWAX_PINS = (f"bytewax[kafka]=={BYTEWAX_VERSION}", "orjson")
PATHWAY_VENV = ROOT / ".venv-bench-pathway"
PATHWAY_VERSION = "0.33.0"
PATHWAY_PINS = (f"pathway=={PATHWAY_VERSION}", "orjson")
#: The job's windows: 5 minutes, sliding by 25 s, aligned to multiples of 25 s.
WINDOW_MS, HOP_MS = 300_000, 25_000
#: As in bench/features.py: the records' Kafka timestamps are in the past.
NO_RETENTION = {"retention.ms": "-1"}
#: Realised clicks per prediction of the seeded world (as in bench/features.py).
CLICKS_PER_PREDICTION = 0.149


# -- virtualenvs --------------------------------------------------------------------
def _ensure_venv(venv: Path, pins: tuple[str, ...], probe: str, version: str) -> str | None:
    """Create ``venv`` with ``pins`` once (system ``python3 -m venv``); None or why not.

    ``probe`` is Python code that imports what the app needs and prints the version."""
    py = venv / "bin" / "python"
    check = [str(py), "-c", probe]
    if py.exists():
        out = subprocess.run(check, capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip() == version:
            return None
    base = shutil.which("python3") or sys.executable
    for step in ([base, "-m", "venv", str(venv)],
                 [str(py), "-m", "pip", "install", "-q", *pins], check):
        log.info("%s: %s", venv.name, " ".join(step))
        try:
            out = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        except subprocess.TimeoutExpired:
            return f"{' '.join(step)} did not finish within 900 s"
        if out.returncode != 0:
            tail = (out.stderr or out.stdout)[-600:]
            return f"{' '.join(step)} failed ({out.returncode}): {tail}"
        if step is check and out.stdout.strip() != version:
            return f"{venv.name} has version {out.stdout.strip()!r}, not {version}"
    return None


def ensure_bytewax_venv() -> str | None:
    """Create ``.venv-bench-bytewax`` with ``bytewax[kafka]==0.21.1`` once; None or why
    not. The plain ``bytewax`` package has no Kafka client: the extra brings
    confluent-kafka, which the probe imports too."""
    probe = ("import importlib.metadata as m, bytewax.connectors.kafka, confluent_kafka, "
             "orjson; print(m.version('bytewax'))")
    return _ensure_venv(BYTEWAX_VENV, BYTEWAX_PINS, probe, BYTEWAX_VERSION)


def ensure_pathway_venv() -> str | None:
    """Create ``.venv-bench-pathway`` with ``pathway==0.33.0`` once; None or why not."""
    probe = "import pathway, orjson; print(pathway.__version__)"
    return _ensure_venv(PATHWAY_VENV, PATHWAY_PINS, probe, PATHWAY_VERSION)


# -- the expected output, from the produced log ----------------------------------------
def inputs(prefix: str) -> dict[str, str]:
    return {"clicks": f"{prefix}clicks", "predictions": f"{prefix}predictions"}


class Expected:
    """Per-(user, window start) event counts of the log in the given topics, read back
    from the broker and computed here, independently of any peer."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()
        self.events = 0
        lo, hi = None, None
        for topic in topics:
            for msg in read_topic(bootstrap, topic, timeout_s=120):
                event = orjson.loads(msg.value())
                user, ts = event["user_id"], event["ts"]
                self.events += 1
                lo = ts if lo is None or ts < lo else lo
                hi = ts if hi is None or ts > hi else hi
                # every window [k * HOP, k * HOP + WINDOW) that holds ts
                for k in range((ts - WINDOW_MS) // HOP_MS + 1, ts // HOP_MS + 1):
                    self.counts[(user, k * HOP_MS)] += 1
        self.span_ms = (hi - lo) if lo is not None and hi is not None else 0

    def check(self, got: dict[tuple[str, int], int]) -> tuple[bool, str]:
        """Compare a peer's final counts with these; (ok, a one-line summary)."""
        exp = self.counts
        total_got, total_exp = sum(got.values()), sum(exp.values())
        wrong = sum(1 for k, n in got.items() if k in exp and exp[k] != n)
        missing = sum(1 for k in exp if k not in got)
        extra = sum(1 for k in got if k not in exp)
        ok = not (wrong or missing or extra) and total_got == total_exp
        summary = (f"{len(got):,} (user, window) counts, total {total_got:,} "
                   f"(expected {len(exp):,} and {total_exp:,} = {WINDOW_MS // HOP_MS} x "
                   f"{self.events:,} events)")
        if ok:
            return True, f"output check OK: {summary}"
        return False, (f"output check FAILED: {summary}; {wrong:,} wrong, {missing:,} "
                       f"missing, {extra:,} unexpected")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _wait_exit(proc: Proc, timeout_s: float) -> bool:
    """Wait (bounded) for an app to exit by itself; True if it did with code 0."""
    try:
        proc.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return proc.popen.returncode == 0


# -- Bytewax ------------------------------------------------------------------------------
def bytewax_app(bootstrap: str, prefix: str, work: Path, total: int, timeout_s: float,
                cap_s: float) -> Throughput:
    """Bytewax 0.21.1 over the backlog in ``prefix``'s topics, output checked."""
    name = f"Bytewax {BYTEWAX_VERSION} count_window sliding (EventClock)"
    why = ensure_bytewax_venv()
    if why:
        return Throughput(name, error=f"could not install Bytewax here: {why}")
    topics = list(inputs(prefix).values())
    expected = Expected(bootstrap, topics)
    # The per-key watermark must never pass an event of the topic that is read behind
    # the other: wait longer than the whole backlog's event-time span.
    wait_s = expected.span_ms / 1000 + 3600
    progress, output = work / "bytewax.progress.json", work / "bytewax.windows.json"
    cmd = [str(BYTEWAX_VENV / "bin" / "python"), str(ROOT / "bench" / "bytewax_sliding.py"),
           "--bootstrap", bootstrap, "--topics", ",".join(topics), "--total", str(total),
           "--progress", str(progress), "--output", str(output),
           "--wait-seconds", f"{wait_s:.0f}"]
    proc = Proc("bytewax", cmd, work / "bytewax.log")
    try:
        result = wait_for_progress(proc, progress, total, timeout_s, name, cap_s)
        base = f"1 worker, in-memory state, wait_for_system_duration {wait_s / 3600:.1f} h"
        if result.error:
            return result
        if result.note:  # capped: stopped before the end, so no final output to check
            result.note = f"{base}; {result.note}; output not checked"
            return result
        # All events are in; the windows are emitted when the input ends.
        if not _wait_exit(proc, timeout_s=max(60.0, timeout_s / 4)):
            return Throughput(name, error=f"did not finish its output:\n{proc.tail()}")
        final = _read_json(progress) or {}
        out = _read_json(output) or {}
        if not final.get("done") or "windows" not in out:
            return Throughput(name, error=f"no final output:\n{proc.tail()}")
        counted = final["last"] - final["first"]
        seconds = final["last_output"] - final["first"]
        got = {(u, s): n for u, s, n in out["windows"]}
        ok, check = expected.check(got)
        if out.get("late") or out.get("repeated"):
            check += f"; {out['late']:,} late (event, window) entries, " \
                     f"{out['repeated']:,} windows emitted twice"
            ok = False
        note = f"{base}; to last window emitted (last event counted at {counted:.2f} s)"
        result = Throughput(name, final["count"] - 1, seconds, note=f"{note}; {check}")
        if not ok:
            result.error = f"{check} (measured {result.events / seconds:,.0f} events/s)"
        return result
    finally:
        proc.stop()


# -- Pathway ------------------------------------------------------------------------------
def _pathway_cmd(bootstrap: str, topics: list[str], total: int, progress: Path,
                 output: Path, group: str, threads: int, startup_s: float) -> list[str]:
    return [str(PATHWAY_VENV / "bin" / "python"), str(ROOT / "bench" / "pathway_sliding.py"),
            "--bootstrap", bootstrap, "--topics", ",".join(topics), "--total", str(total),
            "--progress", str(progress), "--output", str(output), "--group", group,
            "--threads", str(threads), "--startup-seconds", f"{startup_s:.4f}"]


def _pathway_counts(path: Path) -> tuple[dict[tuple[str, int], int], int]:
    """The final window table from Pathway's JSON lines (insertions and retractions);
    also the number of (user, window) keys left with more than one row."""
    rows: Counter[tuple[str, int, int]] = Counter()
    with open(path, "rb") as f:
        for line in f:
            r = orjson.loads(line)
            rows[(r["user"], r["start"], r["n"])] += r["diff"]
    got: dict[tuple[str, int], int] = {}
    doubled = 0
    for (user, start, n), mult in rows.items():
        if mult <= 0:
            continue
        if (user, start) in got or mult > 1:
            doubled += 1
        got[(user, start)] = got.get((user, start), 0) + n * mult
    return got, doubled


def pathway_app(bootstrap: str, prefix: str, work: Path, total: int, timeout_s: float,
                cap_s: float, threads: int = 1) -> Throughput:
    """Pathway 0.33.0 over the backlog in ``prefix``'s topics, output checked.

    Pathway writes no per-event progress (static readers, one ``pw.run()``), so
    ``cap_s`` does not apply; ``timeout_s`` bounds the run."""
    name = f"Pathway {PATHWAY_VERSION} windowby sliding ({threads} thread{'s' * (threads > 1)})"
    why = ensure_pathway_venv()
    if why:
        return Throughput(name, error=f"could not install Pathway here: {why}")
    tag = f"pathway-{threads}t"
    topics = list(inputs(prefix).values())
    expected = Expected(bootstrap, topics)
    # 1. The same app on two empty topics: pw.run()'s start-up and shutdown.
    empty = list(inputs(f"{prefix}empty-").values())
    create_topics(bootstrap, empty, config=NO_RETENTION)
    e_progress, e_output = work / f"{tag}-empty.progress.json", work / f"{tag}-empty.jsonl"
    proc = Proc(f"{tag}-empty", _pathway_cmd(bootstrap, empty, 0, e_progress, e_output,
                                             f"{prefix}{tag}-empty-group", threads, 0.0),
                work / f"{tag}-empty.log")
    try:
        ok = _wait_exit(proc, timeout_s=120)
        startup = (_read_json(e_progress) or {}).get("run_seconds")
        if not ok or startup is None:
            return Throughput(name, error=f"the empty run failed:\n{proc.tail()}")
    finally:
        proc.stop()
    # 2. The backlog.
    progress, output = work / f"{tag}.progress.json", work / f"{tag}.windows.jsonl"
    proc = Proc(tag, _pathway_cmd(bootstrap, topics, total, progress, output,
                                  f"{prefix}{tag}-group", threads, startup),
                work / f"{tag}.log")
    try:
        result = wait_for_progress(proc, progress, total, timeout_s, name)
        if result.error:
            return result
        if not _wait_exit(proc, timeout_s=60):
            log.warning("%s did not exit after its run", tag)
        final = _read_json(progress) or {}
        seconds = final["last"] - final["first"]
        got, doubled = _pathway_counts(output)
        good, check = expected.check(got)
        if doubled:
            check += f"; {doubled:,} windows with more than one final row"
            good = False
        note = (f"PATHWAY_THREADS={threads}, static readers; pw.run() {final['run_seconds']:.2f} s"
                f" - empty run {startup:.2f} s; {check}")
        result = Throughput(name, final["count"], seconds, note=note)
        if seconds <= 0:
            result.error = f"pw.run() ({final['run_seconds']:.2f} s) was not longer than " \
                           f"the empty run ({startup:.2f} s)"
        elif not good:
            result.error = f"{check} (measured {result.events / seconds:,.0f} events/s)"
        return result
    finally:
        proc.stop()


# -- running them by hand ---------------------------------------------------------------
def _world(events: int) -> Any:
    """The seeded log of bench/features.py's ``world()``: about ``events`` records."""
    from freshet.generator import GeneratorConfig

    predictions = max(1, round(events / (1 + CLICKS_PER_PREDICTION)))
    return GeneratorConfig(seed=1, users=20_000, items=2_000, predictions=predictions)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="about this many events")
    parser.add_argument("--only", default=",".join(PEERS), help=f"comma-separated, of {PEERS}")
    parser.add_argument("--pathway-threads", default="1",
                        help="comma-separated PATHWAY_THREADS values, one run each")
    parser.add_argument("--cap-seconds", type=float, default=180.0,
                        help="measure a slower Bytewax over its first N seconds")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--keep-broker-data", action="store_true")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep the peers' window outputs (some MB) in var/peers-run-*/")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    only = [p for p in args.only.split(",") if p]
    unknown = set(only) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {PEERS}")
    threads = [int(x) for x in args.pathway_threads.split(",") if x]
    from freshet.generator import generate

    records = list(generate(_world(args.events)))
    total = len(records)
    run_id = time.strftime("%H%M%S")
    work = ROOT / "var" / f"peers-run-{run_id}"
    work.mkdir(parents=True, exist_ok=True)
    timeout_s = 120 + total / 250
    load0 = os.getloadavg()[0]
    results: dict[str, Throughput] = {}
    signal.signal(signal.SIGTERM, _terminate)
    with bench_broker(keep_data=args.keep_broker_data) as bootstrap:
        try:
            prefixes = {p: f"peers-{run_id}-{p}-" for p in only}
            for peer, prefix in prefixes.items():
                create_topics(bootstrap, inputs(prefix).values(), config=NO_RETENTION)
                t = time.perf_counter()
                produce_backlog(bootstrap, records, inputs(prefix))
                log.info("produced %d events for %s in %.1f s", total, peer,
                         time.perf_counter() - t)
            for peer, prefix in prefixes.items():
                if peer == "bytewax":
                    results[peer] = bytewax_app(bootstrap, prefix, work, total, timeout_s,
                                                args.cap_seconds)
                else:
                    for n in threads:
                        key = peer if n == 1 else f"{peer}-{n}threads"
                        results[key] = pathway_app(bootstrap, prefix, work, total, timeout_s,
                                                   args.cap_seconds, threads=n)
                for key, r in results.items():
                    if key.startswith(peer):
                        log.info("%s: %s", r.name, r.error or f"{r.rate:,.0f} events/s")
        finally:
            stop_all()  # whatever a failure left running, by PID (before the broker stops)
            if not args.keep_outputs:  # logs and progress files stay
                for bulky in (*work.glob("*.windows.json*"), *work.glob("*-empty.jsonl")):
                    bulky.unlink(missing_ok=True)
    load1 = os.getloadavg()[0]
    print(f"\n== peers: {total:,} events, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{len(os.sched_getaffinity(0))} cores; load average (1 min) {load0:.2f} at start, "
          f"{load1:.2f} at end ==")
    print(f"{'peer':52} {'events':>9} {'seconds':>8} {'events/s':>10}  note")
    for r in results.values():
        if r.error:
            print(f"{r.name:52} FAILED: {r.error.splitlines()[0]}")
        else:
            print(f"{r.name:52} {r.events:>9,} {r.seconds:>8.2f} {r.rate:>10,.0f}  {r.note}")
    if args.json:
        doc = {"events": total, "time": time.time(), "load": [load0, load1], "work": str(work),
               "results": {k: {"name": r.name, "events": r.events,
                               "seconds": None if r.seconds != r.seconds else r.seconds,
                               "events_per_s": None if r.error else r.rate,
                               "note": r.note, "error": r.error} for k, r in results.items()}}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
