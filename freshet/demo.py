"""``freshet run``: the whole pipeline on this machine, with a live summary.

Starts the local Kafka (unless FRESHET_KAFKA_BOOTSTRAP points elsewhere and answers),
creates the topics, starts one worker process, one evaluator process (``freshet
evaluate``) and the generator, and prints events/s, feature records published and dead
letters every second, and the evaluation loop every 5 s, until Ctrl-C or --duration.
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
from dataclasses import replace
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


def evaluation_line(doc: dict[str, Any] | None) -> str:
    """The evaluation loop in one line: per model CTR and AUC, routing weights, triggers.

    >>> evaluation_line({"models": {"a": {"impressions": 10, "ctr": 0.2, "auc": 0.71,
    ...     "shadow": False, "trigger": {"sequence": 2, "reasons": ["drift"]}}},
    ...     "routing": {"weights": {"a": 1.0}}})
    'a: CTR 0.200 AUC 0.710 n=10 route 1.00 triggers 2 (drift) '
    >>> evaluation_line(None)
    ''
    """
    if not doc or not doc.get("models"):
        return ""
    weights = (doc.get("routing") or {}).get("weights", {})
    parts = []
    for model, m in sorted(doc["models"].items()):
        auc = "  -  " if m.get("auc") is None else f"{m['auc']:.3f}"
        ctr = "  -  " if m.get("ctr") is None else f"{m['ctr']:.3f}"
        route = "shadow" if m.get("shadow") else f"route {weights.get(model, 0.0):.2f}"
        trig = m.get("trigger")
        why = f" triggers {trig['sequence']} ({','.join(trig['reasons'])})" if trig else ""
        parts.append(f"{model}: CTR {ctr} AUC {auc} n={m.get('impressions')} {route}{why} ")
    return "| ".join(parts)


def _routing_weights(settings: Settings) -> dict[str, float] | None:
    """The worker's latest routing weights (``GET /routing``), or None before any."""
    url = f"http://{settings.web_host}:{settings.web_port}/routing"
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            weights = json.loads(resp.read()).get("weights")
    except (OSError, ValueError):
        return None
    return weights if isinstance(weights, dict) and weights else None


def demo_config(seed: int, drift_after_min: float) -> Any:
    """The generator of ``freshet run``: two served models, a shadow, a drift.

    model-a ranks better than model-b; ``model-c`` scores every served impression in
    shadow (``served: false``); after ``drift_after_min`` minutes of event time (0:
    never) the logged ``user_ctr_prior`` shifts by two standard deviations and every
    model's score noise grows, so drift and retrain triggers fire.

    >>> demo_config(7, 0).shadow_models, demo_config(7, 0).drift_at_ms is None
    (('model-c',), True)
    """
    from freshet.generator import GeneratorConfig

    base = GeneratorConfig(seed=seed, shadow_models=("model-c",), malformed_fraction=0.002)
    if drift_after_min <= 0:
        return base
    return replace(base, drift_at_ms=base.start_ts_ms + int(drift_after_min * 60_000),
                   drift_feature_shift=2.0, drift_noise=1.5)


def _generate_forever(settings: Settings, rate: float, seed: int, stop: threading.Event,
                      produced: list[int], drift_after_min: float) -> None:
    from freshet.producer import produce_stream

    topics = {name: settings.topic(name) for name in ("clicks", "predictions")}

    def progress(n: int) -> None:
        produced[0] = n  # the live summary shows it as it goes

    # traffic follows the bandit: each chunk of 1,000 requests is routed by the
    # worker's latest weights (uniform until the first matured labels)
    produce_stream(demo_config(seed, drift_after_min), settings.bootstrap_servers,
                   topics=topics, rate=rate, weights_source=lambda: _routing_weights(settings),
                   forever=True, stop=stop.is_set, extra_config=settings.kafka_client_config(),
                   on_progress=progress)


def run_demo(settings: Settings, duration_s: float | None, rate: float, seed: int,
             keep_kafka: bool, drift_after_min: float = 0.0) -> int:
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
    # the evaluator in a process of its own: its per-label work then has a core of its
    # own instead of sharing the worker's interpreter (FRESHET_EVALUATION_LEADER)
    env = {**os.environ, "FRESHET_EVALUATION_LEADER": "process"}
    worker = subprocess.Popen([sys.executable, "-m", "freshet.cli", "worker"],
                              env=env, stdin=subprocess.DEVNULL,
                              stdout=open(settings.data_dir / "worker.log", "ab"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
    evaluator = subprocess.Popen([sys.executable, "-m", "freshet.cli", "evaluate"],
                                 env=env, stdin=subprocess.DEVNULL,
                                 stdout=open(settings.data_dir / "evaluator.log",  # noqa: SIM115
                                             "ab"),
                                 stderr=subprocess.STDOUT)
    stop = threading.Event()
    produced = [0]
    gen = threading.Thread(target=_generate_forever, args=(settings, rate, seed, stop, produced,
                                                          drift_after_min),
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
        last_events, last_eval = 0, 0.0
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
            line = evaluation_line(stats.get("evaluation"))
            if line and now - last_eval >= 5.0:  # the loop's figures, every 5 s
                last_eval = now
                print(f"          {line}", flush=True)
    finally:
        stop.set()
        for proc in (worker, evaluator):
            proc.send_signal(signal.SIGTERM)
        for proc in (worker, evaluator):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if kafka is not None and not keep_kafka:
            kafka.stop()
            print("stopped the local Kafka")
    return code
