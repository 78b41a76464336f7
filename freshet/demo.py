"""``freshet run``: the whole pipeline on this machine, with a live summary.

Starts the local Kafka (unless FRESHET_KAFKA_BOOTSTRAP points elsewhere and answers),
creates the topics, starts one worker process and the generator, and prints events/s,
feature records published and dead letters every second until Ctrl-C or --duration.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from freshet.settings import Settings

log = logging.getLogger(__name__)


def _stats(settings: Settings) -> dict[str, Any] | None:
    url = f"http://{settings.web_host}:{settings.web_port}/stats"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except OSError:
        return None


def _generate_forever(settings: Settings, rate: float, seed: int, stop: threading.Event,
                      produced: list[int]) -> None:
    from freshet.generator import GeneratorConfig, generate
    from freshet.producer import produce

    topics = {name: settings.topic(name) for name in ("clicks", "predictions")}
    start_ts = GeneratorConfig().start_ts_ms
    chunk = 0
    while not stop.is_set():
        config = GeneratorConfig(seed=seed + chunk, predictions=5_000, start_ts_ms=start_ts,
                                 malformed_fraction=0.002)
        records = list(generate(config))
        start_ts = max(r.ts for r in records if r.ts is not None) + 60_000

        def until_stopped(recs: list[Any]) -> Any:
            for r in recs:
                if stop.is_set():
                    return
                yield r

        base = produced[0]

        def progress(n: int, base: int = base) -> None:
            produced[0] = base + n  # the live summary shows it as it goes

        produced[0] = base + produce(until_stopped(records), settings.bootstrap_servers,
                                     topics=topics, rate=rate,
                                     extra_config=settings.kafka_client_config(),
                                     on_progress=progress)
        chunk += 1


def run_demo(settings: Settings, duration_s: float | None, rate: float, seed: int,
             keep_kafka: bool) -> int:
    """Run the pipeline and print a live summary; return a process exit code."""
    from freshet.cli import _local_kafka
    from freshet.topics import create_topics

    kafka = None
    if os.environ.get("FRESHET_KAFKA_BOOTSTRAP") is None:
        kafka = _local_kafka(settings)
        started_here = kafka.pid() is None
        print(f"starting Apache Kafka on {kafka.bootstrap} ...", flush=True)
        kafka.start()
        if not started_here:
            keep_kafka = True  # it was running before us: leave it as we found it
    create_topics(settings)
    print(f"topics ready; starting a worker (web on :{settings.web_port}) ...", flush=True)
    worker = subprocess.Popen([sys.executable, "-m", "freshet.cli", "worker"],
                              env={**os.environ}, stdin=subprocess.DEVNULL,
                              stdout=open(settings.data_dir / "worker.log", "ab"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
    stop = threading.Event()
    produced = [0]
    gen = threading.Thread(target=_generate_forever, args=(settings, rate, seed, stop, produced),
                           daemon=True)
    interrupted = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        deadline = time.monotonic() + 120
        while _stats(settings) is None:
            if worker.poll() is not None or time.monotonic() > deadline:
                print(f"worker failed to start; see {settings.data_dir / 'worker.log'}")
                return 1
            time.sleep(0.5)
        print(f"worker up; generating at {rate:.0f} events/s. Ctrl-C to stop.", flush=True)
        gen.start()
        t0 = last_t = time.monotonic()
        last_events = 0
        while not interrupted and (duration_s is None or time.monotonic() - t0 < duration_s):
            time.sleep(1.0)
            if worker.poll() is not None:
                print(f"worker exited with {worker.returncode}; see worker.log")
                code = 1
                break
            stats = _stats(settings)
            if stats is None:
                continue
            now = time.monotonic()
            events = sum(stats["events"].values())
            rate_seen = (events - last_events) / (now - last_t)
            last_events, last_t = events, now
            published = sum(stats["features_published"].values())
            print(f"[{now - t0:6.1f}s] produced {produced[0]:>9}  consumed {events:>9} "
                  f"({rate_seen:8.0f} ev/s)  features published {published:>9}  "
                  f"dead letters {stats['dead_letters']:>6}  late {stats['late_events']}",
                  flush=True)
    finally:
        stop.set()
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        if kafka is not None and not keep_kafka:
            kafka.stop()
            print("stopped the local Kafka")
    return code
