"""freshet's feature benchmark: throughput against Kafka/Faust/Quix baselines, then
freshness, state size, read-path latency and replay speed of freshet itself.

Run by hand (not a test)::

    .venv/bin/python bench/features.py [--events N] [--quick] [--skip NAMES] [--profile]

One run uses a broker of its own (``FRESHET_KAFKA_BOOTSTRAP`` if set), pre-produces
the same seeded log into each contender's topics, runs the contenders one after the
other over that backlog, and prints a report. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
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
    topic_size,
    wait_for_progress,
)
from bench._common import broker as bench_broker  # noqa: E402
from bench.quix_hopping import QUIX_VENV, ensure_quix_venv  # noqa: E402
from features.catalog import default_catalog  # noqa: E402
from freshet.generator import GeneratedRecord, GeneratorConfig, generate, write_jsonl  # noqa: E402
from freshet.settings import Settings  # noqa: E402
from freshet.topics import create_topics as create_freshet_topics  # noqa: E402

log = logging.getLogger("bench")

CONTENDERS = ("raw", "faust-count", "faust-hopping", "quix", "freshet")
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
def freshet_settings(bootstrap: str, prefix: str, work: Path) -> Settings:
    return Settings(bootstrap_servers=bootstrap, app_id=f"{prefix}app", topic_prefix=prefix,
                    data_dir=work / f"{prefix}data", web_port=free_port(pairs=False),
                    store="rocksdb")


def freshet_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    env.update({"FRESHET_KAFKA_BOOTSTRAP": s.bootstrap_servers, "FRESHET_APP_ID": s.app_id,
                "FRESHET_TOPIC_PREFIX": s.topic_prefix, "FRESHET_PARTITIONS": str(s.partitions),
                "FRESHET_DATA_DIR": str(s.data_dir), "FRESHET_WEB_PORT": str(s.web_port),
                "FRESHET_STORE": s.store})
    return env


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


def freshet_run(s: Settings, work: Path, total: int, timeout_s: float,
                profile: bool) -> tuple[Throughput, Proc | None]:
    """Run a worker over the backlog; returns the throughput and the running worker."""
    name = "freshet worker (full catalog, RocksDB)"
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
    # Each user batch forwards one items-repartition record per item partition it
    # touches (1..partitions): the record count bounds the number of batches.
    forwards = topic_size(s.bootstrap_servers, f"{s.app_id}-items-repartition")
    if forwards:
        log.info("freshet user batches: %d..%d, so %.0f..%.0f events per batch", forwards //
                 s.partitions, forwards, total / forwards, total * s.partitions / forwards)
    note = f"user+item+labels; {dead:,} dead letters ({late:,} late)"
    note += "; py-spy attached" if profile else ""
    return Throughput(name, total - c0, t_end - t0, note=note), proc


def state_sizes(s: Settings) -> dict[str, dict[str, float]]:
    """Latest value size per key of each entity's changelog: mean, p99, keys."""
    catalog = default_catalog()
    out: dict[str, dict[str, float]] = {}
    for entity, fs in (("user", catalog.user), ("item", catalog.item)):
        topic = f"{s.app_id}-{fs.state_name}-changelog"
        sizes: dict[bytes, int] = {}
        for msg in read_topic(s.bootstrap_servers, topic):
            if msg.value() is None:
                sizes.pop(msg.key(), None)
            else:
                sizes[msg.key()] = len(msg.value())
        vals = list(sizes.values())
        out[entity] = {"keys": len(vals), "mean": sum(vals) / max(1, len(vals)),
                       "p99": percentile(vals, 99), "topic": topic}  # type: ignore[dict-item]
    return out


def freshness(bootstrap: str, prefix: str, work: Path, rate: float,
              duration_s: float) -> dict[str, float]:
    """Produce fresh events at ``rate``/s into fresh topics with a running worker; per
    features.user record: its CreateTime minus the produce time of the newest input
    record it includes (found through its ``source`` offsets)."""
    s = freshet_settings(bootstrap, prefix, work)
    create_freshet_topics(s)
    records = list(generate(world(int(rate * duration_s) + 300, seed=2,
                                  start_ts_ms=int(time.time() * 1000))))
    warm, paced = records[:300], records[300:]
    topic_of = {t: s.topic(t) for t in ("clicks", "predictions")}
    proc = start_worker(s, work)
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
    finally:
        proc.stop()
    lat: list[float] = []
    missing = 0
    for msg in read_topic(bootstrap, s.topic("features_user")):
        src = orjson.loads(msg.value())["source"]
        p = src["partition"]
        times = [sent.timestamps.get((topic_of[t], p, src[t])) for t in topic_of if t in src]
        produced = [x for x in times if x is not None]
        if not produced:
            missing += 1  # a warm-up record (produced before `sent` started)
            continue
        newest = max(produced)
        if newest >= start_ms:
            lat.append(msg.timestamp()[1] - newest)
    return {"rate": rate, "records": len(lat), "p50": percentile(lat, 50),
            "p99": percentile(lat, 99), "max": max(lat, default=float("nan")),
            "warmup_records": missing}


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
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    secs = time.perf_counter() - t
    if proc.returncode != 0:
        return {"error": f"replay failed ({proc.returncode}): {proc.stderr[-600:]}"}
    result: dict[str, Any] = {"events": total, "seconds": secs, "rate": total / secs}
    try:  # the command's own figure: processing only, without interpreter start-up
        own = orjson.loads(proc.stdout.strip().splitlines()[-1])
        result["own_rate"], result["own_seconds"] = own["events_per_s"], own["seconds"]
    except (ValueError, KeyError, IndexError):
        pass
    return result


# -- report ------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(results: dict[str, Throughput], extras: dict[str, Any], total: int) -> None:
    fr = results.get("freshet")
    print(f"\n== freshet feature benchmark: {total:,} events, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {_cores()} cores ==")
    print(f"code: {extras.get('code', '?')}")
    print(f"load average (1 min) at start {extras['load'][0]:.2f}, at end "
          f"{os.getloadavg()[0]:.2f} (anything above ~0.3 before start means other work "
          "shared the cores)")
    print(f"{'contender':50} {'events':>9} {'seconds':>8} {'events/s':>10} "
          f"{'freshet x':>9}  note")
    for r in results.values():
        if r.error:
            print(f"{r.name:50} FAILED: {r.error.splitlines()[0]}")
            continue
        ratio = f"{fr.rate / r.rate:>8.3g}x" if fr and not fr.error else "        -"
        print(f"{r.name:50} {r.events:>9,} {r.seconds:>8.2f} {r.rate:>10,.0f} "
              f"{ratio}  {r.note}")
    print("\n-- targets --")
    docs, quix = results.get("faust-hopping"), results.get("quix")
    if fr and not fr.error and docs and not docs.error:
        x = fr.rate / docs.rate
        print(f"freshet vs Faust-docs hopping table: {x:.2f}x  (>= 5x)  {verdict(x >= 5)}")
    if fr and not fr.error and quix and not quix.error:
        print(f"freshet vs Quix hopping window: {fr.rate / quix.rate:.2f}x  (> 1x)  "
              f"{verdict(fr.rate > quix.rate)}")
    f = extras.get("freshness")
    if isinstance(f, dict):
        print(f"freshness at {f['rate']:,.0f} ev/s (half max): p50 {f['p50']:.0f} ms, "
              f"p99 {f['p99']:.0f} ms, max {f['max']:.0f} ms over {f['records']:,} records  "
              f"(p99 < 250 ms)  {verdict(f['p99'] < 250)}")
    elif f:
        print(f"freshness: {f}")
    st = extras.get("state")
    if isinstance(st, dict):
        u, i = st["user"], st["item"]
        print(f"state per active user: mean {u['mean']:.0f} B, p99 {u['p99']:.0f} B over "
              f"{u['keys']:,} users  (<= 1024 B)  {verdict(u['mean'] <= 1024)}")
        print(f"state per active item: mean {i['mean']:.0f} B, p99 {i['p99']:.0f} B over "
              f"{i['keys']:,} items")
    rd = extras.get("read")
    if isinstance(rd, dict):
        print(f"read path GET /features/user/{{id}}: p50 {rd['p50']:.2f} ms, p99 "
              f"{rd['p99']:.2f} ms ({rd['ok']}/{rd['n']} 200s)  (p99 < 10 ms)  "
              f"{verdict(rd['p99'] < 10)}")
    rp = extras.get("replay")
    if isinstance(rp, dict) and "rate" in rp:
        print(f"replay: {rp['events']:,} events in {rp['seconds']:.2f} s = {rp['rate']:,.0f} "
              f"events/s wall clock of the command  (>= 200k/s)  "
              f"{verdict(rp['rate'] >= 200_000)}")
        if "own_rate" in rp:
            print(f"        the command's own figure (after start-up): {rp['own_rate']:,.0f} "
                  f"events/s in {rp['own_seconds']:.2f} s")
    elif isinstance(rp, dict):
        print(rp["error"])


def _code_version() -> str:
    """HEAD and whether the code the worker runs has uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()
    dirty = git("status", "--porcelain", "--", "streams", "features", "labels", "events",
                "freshet")
    return f"{git('rev-parse', '--short', 'HEAD')}" + (" + uncommitted changes" if dirty else "")


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="about this many events")
    parser.add_argument("--quick", action="store_true", help="about 50k events")
    parser.add_argument("--skip", default="", help=f"comma-separated, of {CONTENDERS}")
    parser.add_argument("--profile", action="store_true",
                        help="attach py-spy (20 s) to the freshet worker's backlog run")
    parser.add_argument("--freshness-seconds", type=float, default=25.0)
    parser.add_argument("--cap-seconds", type=float, default=180.0,
                        help="measure a slower Faust/Quix app over its first N seconds")
    parser.add_argument("--keep-broker-data", action="store_true",
                        help="keep the broker's folder and the contenders' state folders")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    skip = {x for x in args.skip.split(",") if x}
    cfg = world(50_000 if args.quick else args.events)
    records: list[GeneratedRecord] = list(generate(cfg))
    total = len(records)
    work = ROOT / "var" / f"bench-run-{time.strftime('%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Throughput] = {}
    extras: dict[str, Any] = {"load": os.getloadavg(), "code": _code_version()}
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
        if c == "freshet":
            create_freshet_topics(freshet_settings(bootstrap, prefix, work))
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
    for r in results.values():
        log.info("%s: %s", r.name, r.error or f"{r.rate:,.0f} events/s")
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
            extras["freshness"] = freshness(bootstrap, f"bench-{run_id}-fresh-", work,
                                            fr.rate / 2, args.freshness_seconds)
    extras["replay"] = replay(cfg, work, timeout_s)


if __name__ == "__main__":
    main()
