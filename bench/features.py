"""freshet's feature benchmark: throughput against a raw consumer and the Faust,
Quix Streams, Bytewax and Pathway peers, then freshness, state size, read-path
latency, memory and replay speed of freshet itself.

Run by hand (not a test)::

    .venv/bin/python bench/features.py [--events N] [--quick] [--skip NAMES] [--profile]
                                       [--replay-events N] [--rss-users N] [--json FILE]

One run uses a broker of its own (``FRESHET_KAFKA_BOOTSTRAP`` if set), pre-produces
the same seeded log into each contender's topics, runs the contenders one after the
other over that backlog, and prints a report (``--json FILE``: every figure, machine
readable). See ``bench/README.md``.
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
from dataclasses import replace
from pathlib import Path
from typing import Any

# This file's folder must not shadow the ``features`` package: import from the repo root.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402

from bench._common import (  # noqa: E402
    ROOT,
    VENV_PY,
    Proc,
    Throughput,
    create_topics,
    free_port,
    http_json,
    paced_produce,
    percentile,
    poll_counter,
    produce_backlog,
    raw_consume,
    read_latency,
    read_topic,
    stop_all,
    wait_for_progress,
)
from bench._common import broker as bench_broker  # noqa: E402
from bench.peers import bytewax_app, pathway_app  # noqa: E402
from bench.quix_hopping import QUIX_VENV, ensure_quix_venv  # noqa: E402
from freshet.generator import GeneratedRecord, GeneratorConfig, generate, write_jsonl  # noqa: E402
from freshet.settings import Settings  # noqa: E402
from freshet.topics import create_topics as create_freshet_topics  # noqa: E402

log = logging.getLogger("bench")

CONTENDERS = ("raw", "faust-count", "faust-hopping", "quix", "bytewax", "pathway", "freshet",
              "freshet-same-job")
#: The peers doing the same job as freshet-same-job (a per-user 5-minute count).
SAME_JOB_PEERS = ("quix", "bytewax", "pathway")
#: Realised clicks per prediction of the seeded world (so --events ~ total records).
CLICKS_PER_PREDICTION = 0.149
NO_RETENTION = {"retention.ms": "-1"}


def world(events: int, seed: int = 1, start_ts_ms: int | None = None) -> GeneratorConfig:
    """The seeded log of about ``events`` records (predictions plus clicks)."""
    predictions = max(1, round(events / (1 + CLICKS_PER_PREDICTION)))
    config = GeneratorConfig(seed=seed, users=20_000, items=2_000, predictions=predictions)
    return replace(config, start_ts_ms=start_ts_ms) if start_ts_ms else config


def inputs(prefix: str) -> dict[str, str]:
    return {"clicks": f"{prefix}clicks", "predictions": f"{prefix}predictions"}


# -- (b), (c) Faust; (d) Quix ---------------------------------------------------------
def run_app(name: str, cmd: list[str], work: Path, total: int, timeout_s: float,
            progress: Path, cap_s: float) -> Throughput:
    proc = Proc(name, cmd, work / f"{name}.log")
    try:
        return wait_for_progress(proc, progress, total, timeout_s, name, cap_s)
    finally:
        proc.stop()


def faust_app(mode: str, bootstrap: str, prefix: str, work: Path, total: int,
              timeout_s: float, cap_s: float) -> Throughput:
    progress = work / f"faust-{mode}.progress.json"
    cmd = [str(VENV_PY), str(ROOT / "bench" / "faust_baselines.py"), mode,
           "--bootstrap", bootstrap, "--topics", ",".join(inputs(prefix).values()),
           "--total", str(total), "--progress", str(progress),
           "--app-id", f"{prefix}app", "--datadir", str(work / f"faust-{mode}-data")]
    result = run_app(f"faust-{mode}", cmd, work, total, timeout_s, progress, cap_s)
    result.name = {"count": "Faust agent, count only (raw values)",
                   "hopping": "Faust docs: hopping windowed table (JSON)"}[mode]
    base = "RocksDB store, 12 windows/event" if mode == "hopping" else "no state"
    result.note = "; ".join(x for x in (base, result.note) if x)
    return result


def quix_app(bootstrap: str, prefix: str, work: Path, total: int, timeout_s: float,
             cap_s: float) -> Throughput:
    name = "Quix Streams 3.28.1 hopping_window count"
    why = ensure_quix_venv()
    if why:
        return Throughput(name, error=f"could not install Quix Streams here: {why}")
    progress = work / "quix.progress.json"
    cmd = [str(QUIX_VENV / "bin" / "python"), str(ROOT / "bench" / "quix_hopping.py"),
           "--bootstrap", bootstrap, "--topics", ",".join(inputs(prefix).values()),
           "--total", str(total), "--progress", str(progress),
           "--group", f"{prefix}group", "--state-dir", str(work / "quix-state")]
    result = run_app("quix", cmd, work, total, timeout_s, progress, cap_s)
    result.name = name
    result.note = "; ".join(x for x in ("RocksDB state + changelog", result.note) if x)
    return result


# -- (e) freshet ----------------------------------------------------------------------
#: ``--evaluation``: whether the freshet runs include the evaluation stage (issue 8's
#: pipeline is features + labels + training examples; the stage is downstream of it)
EVALUATION = {"on": False}


def freshet_settings(bootstrap: str, prefix: str, work: Path, same_job: bool = False,
                     ) -> Settings:
    """The worker's settings: defaults, or the peers' job (one feature, no labels)."""
    extra: dict[str, Any] = {"evaluation_enabled": EVALUATION["on"]}
    if same_job:
        extra = {"catalog": "bench.catalogs:same_job", "labels_enabled": False,
                 "evaluation_enabled": False}
    return Settings(bootstrap_servers=bootstrap, app_id=f"{prefix}app", topic_prefix=prefix,
                    data_dir=work / f"{prefix}data", web_port=free_port(pairs=False), **extra)


#: ``--worker-env`` settings given to every freshet worker of the run (experiments)
WORKER_ENV: dict[str, str] = {}


def freshet_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    return {**env, **s.to_env(), **WORKER_ENV, "PYTHONPATH": str(ROOT)}  # bench.catalogs


def start_worker(s: Settings, work: Path, timeout_s: float = 90) -> Proc:
    proc = Proc("freshet-worker", [str(ROOT / ".venv" / "bin" / "freshet"), "worker"],
                work / f"{s.app_id}.log", env=freshet_env(s))
    deadline = time.monotonic() + timeout_s
    while http_json(s.web_port, "/stats") is None:
        if not proc.alive() or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"the freshet worker did not start:\n{proc.tail()}")
        time.sleep(0.3)
    return proc


def events_seen(port: int) -> int | None:
    stats = http_json(port, "/stats")
    return None if stats is None else sum(stats["events"].values())


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def freshet_run(s: Settings, work: Path, total: int, timeout_s: float, profile: bool,
                name: str = "freshet worker (full catalog + labels)",
                ) -> tuple[Throughput, Proc | None]:
    """Run a worker over the backlog; returns the throughput and the running worker."""
    proc = start_worker(s, work)
    spy: list[Proc] = []
    last: dict[str, Any] = {}
    series = open(work / "freshet-stats.jsonl", "a")  # noqa: SIM115 (closed below)
    logged = [0.0]

    def seen() -> int | None:
        stats = http_json(s.web_port, "/stats")
        if stats is None:
            return None
        last.update(stats)
        if time.monotonic() - logged[0] >= 1.0:  # one sample a second, for diagnosis
            logged[0] = time.monotonic()
            series.write(orjson.dumps({"t": time.time(), **stats}).decode() + "\n")
        count = sum(stats["events"].values())
        if profile and count and not spy:  # profile the steady state, not the start-up
            spy.append(Proc("py-spy", [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "-p",
                                       str(proc.pid), "-d", "20", "-f", "raw", "-o",
                                       str(work / "freshet-worker.pyspy.txt")],
                            work / "py-spy.log"))
        return count

    out = poll_counter(seen, total, timeout_s, proc.alive,
                       extra=lambda: tuple(sorted(last["features_published"].items())))
    series.close()
    for p in spy:
        p.popen.wait(timeout=60)
    late, dead = last.get("late_events", 0), last.get("dead_letters", 0)
    if isinstance(out, str):
        proc.stop()
        return Throughput(name, error=f"{out}; dead letters {dead} (late {late}); /stats "
                                      f"series in {work / 'freshet-stats.jsonl'}"), None
    t0, c0, t_end = out
    batches = last.get("batches", {})
    if batches.get("first_started") and batches.get("last_ended"):
        # the worker's own clock: from the start of its first batch to the end of its
        # last (one 40k-event batch can be done before the first /stats sample)
        c0, t0, t_end = 0, batches["first_started"], batches["last_ended"]
    result = Throughput(name, total - c0, t_end - t0,
                        note=f"{batches.get('batches', 0)} batches of {batches.get('min')}.."
                             f"{batches.get('max')} events; {dead:,} dead letters "
                             f"({late:,} late)" + ("; py-spy attached" if profile else ""))
    result.extra = {"batches": batches, "rss_mib": rss_mib(proc.pid),
                    "transactions": last.get("transactions")}
    return result, proc


def state_sizes(s: Settings) -> dict[str, dict[str, float]]:
    """Latest value size per key of each entity's changelog: mean, p99, keys."""
    from engine.records import META_KEY

    catalog = s.load_catalog()
    out: dict[str, dict[str, float]] = {}
    for entity, fs in (("user", catalog.user), ("item", catalog.item)):
        topic = f"{s.app_id}-{fs.state_name}-changelog"
        sizes: dict[bytes, int] = {}
        for msg in read_topic(s.bootstrap_servers, topic):
            if msg.key() == META_KEY:
                continue
            if msg.value() is None:
                sizes.pop(msg.key(), None)
            else:
                sizes[msg.key()] = len(msg.value())
        vals = list(sizes.values())
        out[entity] = {"keys": len(vals), "mean": sum(vals) / max(1, len(vals)),
                       "p99": percentile(vals, 99), "topic": topic}  # type: ignore[dict-item]
    return out


class CommittedReader:
    """A read_committed consumer of one topic in a thread: when each record became visible."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        import threading
        import uuid

        from confluent_kafka import Consumer

        self.seen: list[tuple[float, Any]] = []
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": bootstrap,
                                   "group.id": f"fresh-{uuid.uuid4()}",
                                   "isolation.level": "read_committed",
                                   "auto.offset.reset": "earliest",
                                   "fetch.wait.max.ms": 5, "fetch.queue.backoff.ms": 1})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(1000, timeout=0.05):
                if msg.error() is None:
                    self.seen.append((time.time() * 1000, msg))

    def stop(self) -> list[tuple[float, Any]]:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()
        return self.seen


def freshness(bootstrap: str, prefix: str, work: Path, rate: float,
              duration_s: float, warmup_s: float = 10.0) -> dict[str, Any]:
    """Produce fresh events at ``rate``/s into fresh topics with a running worker; per
    features.user record: when a read_committed consumer received it (its batch's
    transaction committed) minus when the newest input record it includes (found
    through its ``source`` offsets) was handed to the producer.

    The first ``warmup_s`` of production at ``rate`` are a warm-up: a worker just
    started (fresh topics, cold caches, the broker's first transactions over them)
    is reported apart (``warmup_p50``/``warmup_p99``); ``p50``/``p99`` are of the
    ``duration_s`` that follow, the steady state at that rate.
    """
    s = freshet_settings(bootstrap, prefix, work)
    create_freshet_topics(s)
    records = list(generate(world(int(rate * (warmup_s + duration_s)) + 300, seed=2,
                                  start_ts_ms=int(time.time() * 1000))))
    warm, paced = records[:300], records[300:]
    topic_of = {t: s.topic(t) for t in ("clicks", "predictions")}
    proc = start_worker(s, work)
    reader = CommittedReader(bootstrap, s.topic("features_user"))
    try:
        paced_produce(bootstrap, warm, topic_of, rate=1_000)
        if isinstance(poll_counter(lambda: events_seen(s.web_port), len(warm), 60, proc.alive,
                                   settle_s=0.5), str):
            raise RuntimeError(f"the worker did not take the warm-up events:\n{proc.tail()}")
        start_ms = time.time() * 1000
        sent = paced_produce(bootstrap, paced, topic_of, rate=rate)
        done = poll_counter(lambda: events_seen(s.web_port), len(records), 120, proc.alive,
                            settle_s=1.0)
        if isinstance(done, str):
            raise RuntimeError(f"the worker did not catch up: {done}\n{proc.tail()}")
        worker_batches = (http_json(s.web_port, "/stats") or {}).get("batches")
    finally:
        seen = reader.stop()
        proc.stop()
    measured_from_ms = start_ms + warmup_s * 1000
    lat: list[float] = []
    warm_lat: list[float] = []
    by_second: dict[int, float] = {}
    missing = 0
    for received, msg in seen:
        src = orjson.loads(msg.value())["source"]
        p = src["partition"]
        times = [sent.timestamps.get((topic_of[t], p, src[t])) for t in topic_of if t in src]
        produced = [x for x in times if x is not None]
        if not produced:
            missing += 1  # a start-check record (produced before `sent` started)
            continue
        newest = max(produced)
        if newest >= start_ms:
            (lat if newest >= measured_from_ms else warm_lat).append(received - newest)
            second = int((newest - start_ms) // 1000)
            by_second[second] = max(by_second.get(second, 0.0), received - newest)
    return {"rate": rate, "records": len(lat), "p50": percentile(lat, 50),
            "p99": percentile(lat, 99), "max": max(lat, default=float("nan")),
            "warmup_seconds": warmup_s, "warmup_records": len(warm_lat),
            "warmup_p50": percentile(warm_lat, 50), "warmup_p99": percentile(warm_lat, 99),
            # the slowest record of each second of production (the warm-up's first):
            # a stall shows as a spike
            "max_ms_by_second": [round(by_second.get(k, 0.0)) for k in
                                 range(max(by_second, default=-1) + 1)],
            "start_check_records": missing, "worker_batches": worker_batches}


def replay(cfg: GeneratorConfig, work: Path, timeout_s: float) -> dict[str, Any]:
    """Time ``freshet replay`` over the same seeded log written as JSON lines."""
    exe = str(ROOT / ".venv" / "bin" / "freshet")
    probe = subprocess.run([exe, "replay", "--help"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        return {"error": "replay: not available yet"}
    logdir, out = work / "replay-in", work / "replay-out"
    counts = write_jsonl(generate(cfg), logdir)
    total = sum(counts.values())
    cmd = [exe, "replay", "--predictions", str(logdir / "predictions.jsonl"),
           "--clicks", str(logdir / "clicks.jsonl"), "--out", str(out)]
    if "--no-progress" in probe.stdout:
        cmd.append("--no-progress")
    import resource

    t = time.perf_counter()
    env = {**os.environ, "FRESHET_EVALUATION_ENABLED": str(EVALUATION["on"]).lower()}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False,
                          env=env)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": f"replay failed ({proc.returncode}): {proc.stderr[-600:]}"}
    written = sum(f.stat().st_size for f in out.iterdir())
    result: dict[str, Any] = {"events": total, "seconds": secs, "rate": total / secs,
                              "output_bytes": written, "input_bytes": sum(
                                  f.stat().st_size for f in logdir.iterdir()),
                              "max_rss_mib": resource.getrusage(
                                  resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(logdir, ignore_errors=True)
    try:  # the command's own figure: processing only, without interpreter start-up
        own = orjson.loads(proc.stdout.strip().splitlines()[-1])
        result["own_rate"], result["own_seconds"] = own["events_per_s"], own["seconds"]
    except (ValueError, KeyError, IndexError):
        pass
    return result


# -- report ------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def figures(results: dict[str, Throughput], extras: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the run, machine readable (what ``--json`` writes)."""
    def rate(name: str) -> float | None:
        r = results.get(name)
        return None if r is None or r.error else round(r.rate)

    fr, same = results.get("freshet"), results.get("freshet-same-job")
    batches = (fr.extra.get("batches", {}) if fr and not fr.error else {})
    f, st, rd, rp = (extras.get(k) for k in ("freshness", "state", "read", "replay"))
    return {
        "contenders": {name: rate(name) for name in results},
        "evaluation_stage": EVALUATION["on"],
        "errors": {name: r.error for name, r in results.items() if r.error},
        "freshet_full_events_per_s": rate("freshet"),
        "freshet_same_job_events_per_s": rate("freshet-same-job"),
        "replay_events_per_s": round(rp["rate"]) if isinstance(rp, dict) and "rate" in rp
        else None,
        "replay": rp,
        "freshness_p50_ms": f.get("p50") if isinstance(f, dict) else None,
        "freshness_p99_ms": f.get("p99") if isinstance(f, dict) else None,
        "freshness": f,
        "state_bytes_per_user_mean": st["user"]["mean"] if isinstance(st, dict) else None,
        "state": st,
        "read_path_p99_ms": rd.get("p99") if isinstance(rd, dict) else None,
        "read_path": rd,
        "batch_events_min": batches.get("min"),
        "batch_events_max": batches.get("max"),
        "batches": batches,
        "rss_mib": fr.extra.get("rss_mib") if fr and not fr.error else None,
        "rss_mib_same_job": same.extra.get("rss_mib") if same and not same.error else None,
        "rss_1m_users": extras.get("rss_users"),
        "code": extras.get("code"),
        "worker_env": extras.get("worker_env"),
        "load_at_start": extras.get("load", [None])[0],
        "when_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def report(results: dict[str, Throughput], extras: dict[str, Any], total: int) -> None:
    fr = results.get("freshet")
    same = results.get("freshet-same-job")
    print(f"\n== freshet feature benchmark: {total:,} events, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {_cores()} cores ==")
    print(f"code: {extras.get('code', '?')}")
    print(f"load average (1 min) at start {extras['load'][0]:.2f}, at end "
          f"{os.getloadavg()[0]:.2f} (anything above ~0.3 before start means other work "
          "shared the cores)")
    print(f"{'contender':50} {'events':>9} {'seconds':>8} {'events/s':>10} "
          f"{'freshet x':>9}  note")
    for key, r in results.items():
        if r.error:
            print(f"{r.name:50} FAILED: {r.error.splitlines()[0]}")
            continue
        mine = same if key in SAME_JOB_PEERS else fr
        ratio = f"{mine.rate / r.rate:>8.3g}x" if mine and not mine.error else "        -"
        print(f"{r.name:50} {r.events:>9,} {r.seconds:>8.2f} {r.rate:>10,.0f} "
              f"{ratio}  {r.note}")
    print("(freshet x: the full worker against the rest, the same-job run against "
          f"{', '.join(SAME_JOB_PEERS)})")
    print("\n-- targets --")
    peers = [results[k] for k in SAME_JOB_PEERS if k in results and not results[k].error]
    best = max(peers, key=lambda r: r.rate) if peers else None
    if fr and not fr.error:
        print(f"full pipeline: {fr.rate:,.0f} events/s  (>= 15,000; aim 50,000)  "
              f"{verdict(fr.rate >= 15_000)}")
        if best:
            print(f"full pipeline vs the fastest peer's lighter job ({best.name}, "
                  f"{best.rate:,.0f}/s): {fr.rate / best.rate:.2f}x  (> 1x)  "
                  f"{verdict(fr.rate > best.rate)}")
    if same and not same.error and best:
        x = same.rate / best.rate
        print(f"same job: {same.rate:,.0f} events/s = {x:.2f}x the fastest peer  (>= 3x)  "
              f"{verdict(x >= 3)}")
    f = extras.get("freshness")
    if isinstance(f, dict):
        print(f"freshness at {f['rate']:,.0f} ev/s (half max), read_committed: p50 "
              f"{f['p50']:.0f} ms, p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms over "
              f"{f['records']:,} records after a {f['warmup_seconds']:.0f} s warm-up at that "
              f"rate (its p99 {f['warmup_p99']:.0f} ms)  (p99 < 250 ms)  "
              f"{verdict(f['p99'] < 250)}")
        b = f.get("worker_batches") or {}
        if b.get("commit_ms_p50") is not None:
            print("  worker batches (p50 / p99 ms): "
                  + ", ".join(f"{k} {b[f'{k}_ms_p50']:.0f} / {b[f'{k}_ms_p99']:.0f}"
                              for k in ("process", "commit", "queue", "produce", "offsets",
                                        "end") if b.get(f"{k}_ms_p50") is not None)
                  + f"; {b['batches']} batches, mean {b['mean']:.0f} events")
    elif f:
        print(f"freshness: {f}")
    st = extras.get("state")
    if isinstance(st, dict):
        u, i = st["user"], st["item"]
        print(f"state per active user: mean {u['mean']:.0f} B, p99 {u['p99']:.0f} B over "
              f"{u['keys']:,} users  (<= 512 B)  {verdict(u['mean'] <= 512)}")
        print(f"state per active item: mean {i['mean']:.0f} B, p99 {i['p99']:.0f} B over "
              f"{i['keys']:,} items")
    rd = extras.get("read")
    if isinstance(rd, dict):
        print(f"read path GET /features/user/{{id}}: p50 {rd['p50']:.2f} ms, p99 "
              f"{rd['p99']:.2f} ms ({rd['ok']}/{rd['n']} 200s)  (p99 < 5 ms)  "
              f"{verdict(rd['p99'] < 5)}")
    if fr and not fr.error:
        print(f"worker RSS after the backlog: {fr.extra.get('rss_mib') or float('nan'):.0f} MiB; "
              f"batches {fr.extra.get('batches')}")
    ru = extras.get("rss_users")
    if isinstance(ru, dict) and "rss_after_mib" in ru:
        print(f"RSS of a user partition with {ru['users']:,} users: {ru['rss_after_mib']:.0f} "
              f"MiB ({ru['bytes_per_user']} B per user; numpy state "
              f"{ru['numpy_bytes_per_user']} B per user)")
    rp = extras.get("replay")
    if isinstance(rp, dict) and "rate" in rp:
        print(f"replay: {rp['events']:,} events in {rp['seconds']:.2f} s = {rp['rate']:,.0f} "
              f"events/s wall clock of the command  (>= 200k/s)  "
              f"{verdict(rp['rate'] >= 200_000)}; wrote {rp['output_bytes'] / 1e9:.2f} GB, "
              f"max RSS {rp['max_rss_mib']:.0f} MiB")
        if "own_rate" in rp:
            print(f"        the command's own figure (after start-up): {rp['own_rate']:,.0f} "
                  f"events/s in {rp['own_seconds']:.2f} s")
    elif isinstance(rp, dict):
        print(rp.get("error"))


def _code_version() -> str:
    """HEAD and whether the code the worker runs has uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()
    dirty = git("status", "--porcelain", "--", "streams", "features", "labels", "events",
                "engine", "freshet")
    return f"{git('rev-parse', '--short', 'HEAD')}" + (" + uncommitted changes" if dirty else "")


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="about this many events")
    parser.add_argument("--quick", action="store_true",
                        help="about 50k events, a 200k replay, no 1M-user memory run")
    parser.add_argument("--skip", default="", help=f"comma-separated, of {CONTENDERS}, "
                        "replay, freshness, rss")
    parser.add_argument("--profile", action="store_true",
                        help="attach py-spy (20 s) to the freshet worker's backlog run")
    parser.add_argument("--freshness-seconds", type=float, default=25.0,
                        help="the measured part of the freshness run (after its warm-up)")
    parser.add_argument("--freshness-warmup-seconds", type=float, default=10.0,
                        help="production at the freshness rate before the measured part")
    parser.add_argument("--freshness-rate", type=float, default=None,
                        help="measure freshness at this input rate (events/s) instead of "
                             "half the full run's; also without the full run (--skip freshet)")
    parser.add_argument("--cap-seconds", type=float, default=180.0,
                        help="measure a slower Faust/Quix app over its first N seconds")
    parser.add_argument("--replay-events", type=int, default=2_000_000,
                        help="the replay benchmark's log, in events")
    parser.add_argument("--rss-users", type=int, default=1_000_000,
                        help="users held by the memory measurement (bench/state_rss.py)")
    parser.add_argument("--pathway-threads", type=int, default=2,
                        help="PATHWAY_THREADS for the Pathway peer (2 = both cores)")
    parser.add_argument("--evaluation", choices=("on", "off"), default="off",
                        help="run freshet's evaluation stage in the worker and replay too")
    parser.add_argument("--worker-env", action="append", default=[], metavar="FRESHET_X=V",
                        help="a setting for every freshet worker of the run (repeatable), "
                             "e.g. FRESHET_BATCH_MIN_INTERVAL_MS=50")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    parser.add_argument("--keep-broker-data", action="store_true",
                        help="keep the broker's folder and the contenders' state folders")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    skip = {x for x in args.skip.split(",") if x}
    EVALUATION["on"] = args.evaluation == "on"
    for item in args.worker_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FRESHET_"):
            parser.error(f"--worker-env {item!r}: expected FRESHET_NAME=VALUE")
        WORKER_ENV[name] = value
    if args.quick:
        args.events, args.replay_events = 50_000, 200_000
        skip.add("rss")
    cfg = world(args.events)
    records: list[GeneratedRecord] = list(generate(cfg))
    total = len(records)
    work = ROOT / "var" / f"bench-run-{time.strftime('%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Throughput] = {}
    extras: dict[str, Any] = {"load": os.getloadavg(), "code": _code_version(),
                              "worker_env": dict(WORKER_ENV)}
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with bench_broker(keep_data=args.keep_broker_data) as bootstrap:
            run_all(args, skip, records, cfg, work, bootstrap, results, extras)
    finally:
        stop_all()  # whatever a failure left running, by PID
        if not args.keep_broker_data:  # state folders are large; logs and profiles stay
            for bulky in work.iterdir():
                if bulky.is_dir():
                    shutil.rmtree(bulky, ignore_errors=True)
    report(results, extras, total)
    if args.json:
        Path(args.json).write_text(json.dumps(figures(results, extras), indent=2) + "\n")
        print(f"figures written to {args.json}")


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_all(args: argparse.Namespace, skip: set[str], records: list[GeneratedRecord],
            cfg: GeneratorConfig, work: Path, bootstrap: str,
            results: dict[str, Throughput], extras: dict[str, Any]) -> None:
    """Every contender, then freshet's own measurements (fills results and extras)."""
    total = len(records)
    run_id = work.name.removeprefix("bench-run-")
    timeout_s = 120 + total / 250
    prefixes = {c: f"bench-{run_id}-{c}-" for c in CONTENDERS if c not in skip}
    for c, prefix in prefixes.items():
        # The records carry their event time (2026-01-01...) as Kafka timestamp: keep
        # the broker's time-based retention from deleting them mid-run.
        create_topics(bootstrap, inputs(prefix).values(), config=NO_RETENTION)
        if c.startswith("freshet"):
            create_freshet_topics(freshet_settings(bootstrap, prefix, work,
                                                   same_job=c == "freshet-same-job"))
        t = time.perf_counter()
        produce_backlog(bootstrap, records, inputs(prefix))
        log.info("produced %d events for %s in %.1f s", total, c, time.perf_counter() - t)
    if "raw" in prefixes:
        topics = list(inputs(prefixes["raw"]).values())
        results["raw"] = raw_consume(bootstrap, topics, total, True, timeout_s)
        results["raw-default"] = raw_consume(bootstrap, topics, total, False, timeout_s)
    for mode in ("count", "hopping"):
        if f"faust-{mode}" in prefixes:
            results[f"faust-{mode}"] = faust_app(mode, bootstrap, prefixes[f"faust-{mode}"],
                                                 work, total, timeout_s, args.cap_seconds)
    if "quix" in prefixes:
        results["quix"] = quix_app(bootstrap, prefixes["quix"], work, total, timeout_s,
                                   args.cap_seconds)
    if "bytewax" in prefixes:
        results["bytewax"] = bytewax_app(bootstrap, prefixes["bytewax"], work, total,
                                         timeout_s, args.cap_seconds)
    if "pathway" in prefixes:
        results["pathway"] = pathway_app(bootstrap, prefixes["pathway"], work, total,
                                         timeout_s, args.cap_seconds,
                                         threads=args.pathway_threads)
    for r in results.values():
        log.info("%s: %s", r.name, r.error or f"{r.rate:,.0f} events/s")
    if "freshet-same-job" in prefixes:
        s = freshet_settings(bootstrap, prefixes["freshet-same-job"], work, same_job=True)
        same, worker = freshet_run(s, work, total, timeout_s, False,
                                   name="freshet worker, same job (one-feature catalog)")
        results["freshet-same-job"] = same
        if worker is not None:
            worker.stop()
    if "freshet" in prefixes:
        s = freshet_settings(bootstrap, prefixes["freshet"], work)
        fr, worker = freshet_run(s, work, total, timeout_s, args.profile)
        results["freshet"] = fr
        log.info("%s: %s", fr.name, fr.error or f"{fr.rate:,.0f} events/s")
        if worker is not None:
            try:
                users = sorted({r.key.decode() for r in records if r.key})
                extras["read"] = read_latency(s.web_port, users)
            finally:
                worker.stop()
            extras["state"] = state_sizes(s)
    if "freshness" not in skip and (args.freshness_rate or "freshet" in prefixes):
        rate = args.freshness_rate or results["freshet"].rate / 2
        extras["freshness"] = freshness(bootstrap, f"bench-{run_id}-fresh-", work, rate,
                                        args.freshness_seconds, args.freshness_warmup_seconds)
    if "rss" not in skip:
        out = subprocess.run([str(VENV_PY), str(ROOT / "bench" / "state_rss.py"),
                              "--users", str(args.rss_users)], capture_output=True, text=True,
                             timeout=1800, check=False)
        try:
            extras["rss_users"] = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            extras["rss_users"] = {"error": out.stderr[-400:]}
    if "replay" not in skip:
        extras["replay"] = replay(world(args.replay_events), work,
                                  timeout_s=120 + args.replay_events / 1_000)


if __name__ == "__main__":
    main()
