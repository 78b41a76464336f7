"""Label latency benchmark: click produced -> positive label published, window close ->
negative label published, and pending label state per open prediction.

Run by hand: ``.venv/bin/python bench/labels.py [--seconds 30] [--rate 200]``. It starts
its own broker (or uses FRESHET_KAFKA_BOOTSTRAP), one freshet worker with a 10 s label
window, then produces live traffic whose event time is the wall clock: predictions at
``--rate`` per second, a click for ~20 % of them after 0.2-3 s carrying the
prediction_id. Every process it starts is ended by PID; traffic stays on 127.0.0.1.
Negative latency is reported apart for windows that closed while predictions were
still produced (steady state) and for those that closed after the last one (their
watermark then moves by the idle advance, ``--idle-ms``, default 1000).
Options: ``--eager`` (``FRESHET_LABEL_EAGER_CLICKS``), ``--skew-ms``, ``--lateness-ms``,
``--idle-ms`` (``FRESHET_IDLE_ADVANCE_MS``).
The worker's full-catalog throughput is measured by ``bench/features.py``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# bench/features.py would shadow the `features` package: import from the repo root.
_BENCH = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH)]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402

from bench._common import broker, free_port, percentile  # noqa: E402
from freshet.settings import Settings  # noqa: E402
from freshet.topics import create_topics  # noqa: E402

WINDOW_MS, SKEW_MS, LATENESS_MS = 10_000, 500, 200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=200.0, help="predictions per second")
    ap.add_argument("--eager", action="store_true",
                    help="FRESHET_LABEL_EAGER_CLICKS=true: positives at the click's arrival")
    ap.add_argument("--skew-ms", type=int, default=SKEW_MS, help="FRESHET_LABEL_SKEW_MS")
    ap.add_argument("--lateness-ms", type=int, default=LATENESS_MS,
                    help="FRESHET_ALLOWED_LATENESS_MS")
    ap.add_argument("--idle-ms", type=int, default=1000, help="FRESHET_IDLE_ADVANCE_MS")
    args = ap.parse_args()
    rng = random.Random(3)
    with broker() as bootstrap:
        prefix = f"bl{int(time.time())}-"
        work = ROOT / "var" / f"bench-labels-{prefix.rstrip('-')}"
        work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "FRESHET_KAFKA_BOOTSTRAP": bootstrap,
               "FRESHET_TOPIC_PREFIX": prefix, "FRESHET_APP_ID": prefix + "app",
               "FRESHET_DATA_DIR": str(work), "FRESHET_WEB_PORT": str(free_port(False)),
               "FRESHET_LABEL_WINDOW_MS": str(WINDOW_MS),
               "FRESHET_LABEL_SKEW_MS": str(args.skew_ms),
               "FRESHET_ALLOWED_LATENESS_MS": str(args.lateness_ms),
               "FRESHET_LABEL_EAGER_CLICKS": str(args.eager).lower(),
               "FRESHET_LABEL_OBSERVE_MS": "2000",
               "FRESHET_IDLE_ADVANCE_MS": str(args.idle_ms)}
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("FRESHET_")})
        create_topics(settings)
        with open(work / "worker.log", "ab") as log:
            worker = subprocess.Popen([sys.executable, "-m", "freshet.cli", "worker"], cwd=ROOT,
                                      env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{settings.web_port}/stats"
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(url, timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.5)
            time.sleep(3)  # let the group settle
            clicks_at, preds = produce_live(settings, args.seconds, args.rate, rng)
            report(settings, clicks_at, preds, args)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()


def produce_live(settings: Settings, seconds: float, rate: float,
                 rng: random.Random) -> tuple[dict[str, int], dict[str, int]]:
    """Predictions now, clicks later; returns prediction_id -> click / prediction wall ms."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers,
                         "partitioner": "murmur2_random", "linger.ms": 1})
    t_pred, t_click = settings.topic("predictions"), settings.topic("clicks")
    pending: list[tuple[float, bytes, bytes, str]] = []
    clicks_at: dict[str, int] = {}
    preds: dict[str, int] = {}
    start = time.time()
    n = 0
    while time.time() - start < seconds + 4:
        now = time.time()
        if now - start < seconds and n < (now - start) * rate:
            user = f"u{rng.randrange(500)}"
            pid = f"p{n}"
            ts = int(now * 1000)
            body = {"prediction_id": pid, "request_id": f"r{n}", "user_id": user,
                    "item_id": f"i{rng.randrange(200)}", "model_id": "m", "score": 0.5, "ts": ts}
            producer.produce(t_pred, key=user.encode(), value=orjson.dumps(body))
            preds[pid] = ts
            if rng.random() < 0.2:
                click = {"user_id": user, "item_id": body["item_id"], "prediction_id": pid}
                pending.append((now + rng.uniform(0.2, 3.0), user.encode(),
                                orjson.dumps(click), pid))
            n += 1
        due = [p for p in pending if p[0] <= now]
        for p in due:
            pending.remove(p)
            body = orjson.loads(p[2])
            body["ts"] = int(now * 1000)
            producer.produce(t_click, key=p[1], value=orjson.dumps(body))
            clicks_at[p[3]] = body["ts"]
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)
    return clicks_at, preds


def report(settings: Settings, clicks_at: dict[str, int], preds: dict[str, int],
           args: argparse.Namespace) -> None:
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                         "group.id": settings.app_id + "-bench", "auto.offset.reset": "earliest",
                         "fetch.queue.backoff.ms": 10})
    consumer.subscribe([settings.topic("labels")])
    pos: list[float] = []
    neg: list[float] = []
    drain: list[float] = []
    traffic_end_ms = min(preds.values()) + int(args.seconds * 1000) if preds else 0
    seen: set[str] = set()
    deadline = time.time() + WINDOW_MS / 1000 + 30
    while time.time() < deadline and len(seen) < len(preds):
        for msg in consumer.consume(1000, timeout=0.5):
            if msg.error():
                continue
            rec = orjson.loads(msg.value())
            if not rec["final"] or rec["prediction_id"] in seen:
                continue
            seen.add(rec["prediction_id"])
            published = msg.timestamp()[1]
            if rec["label"] == 1 and rec["prediction_id"] in clicks_at:
                pos.append(published - clicks_at[rec["prediction_id"]])
            elif rec["label"] == 0:
                close = rec["prediction_ts"] + WINDOW_MS
                # steady state: the window closed (plus the skew and lateness waits)
                # while predictions were still being produced
                live = close + args.skew_ms + args.lateness_ms < traffic_end_ms
                (neg if live else drain).append(published - close)
    consumer.close()
    state_bytes = pending_state_bytes(settings, args)
    print(f"predictions {len(preds)} at {args.rate:.0f}/s for {args.seconds:.0f} s; "
          f"final labels seen {len(seen)}; window {WINDOW_MS} ms, skew {args.skew_ms} ms, "
          f"allowed lateness {args.lateness_ms} ms, idle advance {args.idle_ms} ms, "
          f"eager clicks {args.eager}")
    for name, values, target in (
            ("positive (click produced -> label)", pos, 250),
            ("negative (window close -> label), window closed during traffic", neg, 1000),
            ("negative, window closed after the last prediction (idle advance)", drain, 0)):
        if values:
            p50, p99 = percentile(values, 50), percentile(values, 99)
            verdict = "" if not target else \
                f" (target p99 < {target} ms) {'PASS' if p99 < target else 'MISS'}"
            print(f"  {name}: n={len(values)} p50 {p50:.0f} ms p99 {p99:.0f} ms{verdict}")
    print(f"  pending label state: {state_bytes}")


def pending_state_bytes(settings: Settings, args: argparse.Namespace) -> str:
    """Bytes per open prediction in the labels changelog (its latest record, still open)."""
    from confluent_kafka import TopicPartition

    from labels import LabelConfig
    from labels.records import PREDICTION_KEY, decode_prediction
    from streams.kafka import label_state_name

    cfg = LabelConfig(window_ms=WINDOW_MS, skew_ms=args.skew_ms, observe_ms=2000,
                      eager_clicks=args.eager)
    topic = f"{settings.app_id}-{label_state_name(cfg)}-changelog"
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                         "group.id": settings.app_id + "-bench-state",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    latest: dict[bytes, bytes | None] = {}
    empty = 0
    while empty < 4:
        msgs = consumer.consume(1000, timeout=0.5)
        empty = 0 if msgs else empty + 1
        for msg in msgs:
            if msg.error() is None and msg.key().startswith(PREDICTION_KEY):
                latest[msg.key()] = msg.value()
    consumer.close()
    sizes = [len(v) for v in latest.values() if v is not None and not decode_prediction(v).final]
    if not sizes:
        return "no open prediction was in the labels changelog"
    return (f"{sum(sizes) / len(sizes):.0f} B per open prediction (its changelog record: core "
            f"fields, logged features, the user snapshot, the item snapshot once back; "
            f"{len(sizes)} open)")


if __name__ == "__main__":
    main()
