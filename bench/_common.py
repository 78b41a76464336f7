"""Shared helpers of the benchmarks: a broker of their own, topics, producing a
backlog, subprocesses ended by their own PID, throughput bookkeeping.

Only ``bench/features.py`` and the contender apps import this module; it logs and
never prints.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parents[1]
VENV_PY = ROOT / ".venv" / "bin" / "python"


# -- numbers -----------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100, nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


@dataclass
class Throughput:
    """One contender's backlog run: events over the time from first to last processed."""

    name: str
    events: int = 0
    seconds: float = float("nan")
    note: str = ""
    error: str | None = None
    #: anything else the run measured (batch sizes, memory...), JSON-ready
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Events per second (NaN when the run failed)."""
        if self.error or not self.seconds or self.seconds != self.seconds:
            return float("nan")
        return self.events / self.seconds


# -- broker ------------------------------------------------------------------
def free_port(pairs: bool = True) -> int:
    """A loopback port that is free (and, with ``pairs``, whose successor is free too)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if not pairs or port >= 65535:
            return port
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of loopback ports found")


@contextmanager
def broker(keep_data: bool = False) -> Iterator[str]:
    """Yield a bootstrap address: ``FRESHET_KAFKA_BOOTSTRAP`` if set, else a local
    broker of our own on a free port, stopped (and its folder removed) at the end."""
    external = os.environ.get("FRESHET_KAFKA_BOOTSTRAP")
    if external:
        log.info("using the broker at %s (FRESHET_KAFKA_BOOTSTRAP)", external)
        yield external
        return
    from freshet.kafka_local import LocalKafka

    port = free_port()
    kafka = LocalKafka(home=ROOT / "var" / f"bench-kafka-{port}", port=port)
    log.info("starting a local Kafka on %s in %s", kafka.bootstrap, kafka.home)
    kafka.start()
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()
        if not keep_data:
            shutil.rmtree(kafka.home, ignore_errors=True)


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 4,
                  config: Mapping[str, str] | None = None) -> None:
    """Create the topics (partitions, RF 1); existing ones are left alone."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    specs = [NewTopic(n, num_partitions=partitions, replication_factor=1,
                      config=dict(config or {})) for n in names]
    for name, fut in admin.create_topics(specs, operation_timeout=30).items():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
            log.debug("topic %s exists", name)


# -- producing -----------------------------------------------------------------
@dataclass
class Sent:
    """Where produced records landed: (topic, partition, offset) -> Kafka timestamp ms."""

    timestamps: dict[tuple[str, int, int], int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.timestamps[(msg.topic(), msg.partition(), msg.offset())] = msg.timestamp()[1]


def producer(bootstrap: str, **extra: Any) -> Any:
    """A confluent-kafka producer with the Java client's murmur2 partitioning."""
    from confluent_kafka import Producer

    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                            "enable.idempotence": True, "linger.ms": 20,
                            "batch.num.messages": 10_000,
                            "queue.buffering.max.messages": 1_000_000}
    conf.update(extra)
    return Producer(conf)


def produce_backlog(bootstrap: str, records: Iterable[Any], topic_of: Mapping[str, str]) -> int:
    """Produce generated records as fast as possible, in order, keyed by user.

    Each record's Kafka timestamp is its event time (as ``freshet generate`` does), so
    that Faust's and Quix's windows, which window by record timestamp, see event time.
    """
    prod = producer(bootstrap)
    sent = Sent()
    n = 0
    for rec in records:
        kwargs: dict[str, Any] = {"key": rec.key, "on_delivery": sent}
        if rec.ts is not None:
            kwargs["timestamp"] = rec.ts
        while True:
            try:
                prod.produce(topic_of[rec.topic], rec.value, **kwargs)
                break
            except BufferError:
                prod.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            prod.poll(0)
    left = prod.flush(60)
    if left or sent.errors:
        raise RuntimeError(f"producing failed: {left} unacknowledged, errors {sent.errors[:3]}")
    return n


def paced_produce(bootstrap: str, records: Sequence[Any], topic_of: Mapping[str, str],
                  rate: float) -> Sent:
    """Produce at ``rate`` records/s; each record's Kafka timestamp is the wall-clock
    millisecond at which it was handed to the producer (librdkafka defaults otherwise,
    linger.ms 5). Returns where each record landed and that timestamp."""
    prod = producer(bootstrap, **{"linger.ms": 5})
    sent = Sent()
    start = time.monotonic()
    for i, rec in enumerate(records):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0.001:
            prod.poll(wait)
        while True:
            try:
                prod.produce(topic_of[rec.topic], rec.value, key=rec.key, on_delivery=sent,
                             timestamp=int(time.time() * 1000))
                break
            except BufferError:
                prod.poll(0.01)
        prod.poll(0)
    prod.flush(60)
    if sent.errors:
        raise RuntimeError(f"paced producing failed: {sent.errors[:3]}")
    return sent


# -- consuming ------------------------------------------------------------------------
def raw_consume(bootstrap: str, topics: Sequence[str], total: int, tuned: bool,
                timeout_s: float) -> Throughput:
    """confluent-kafka ``consume(num_messages=1000)`` + ``orjson.loads`` of each value."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4()}",
                            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    if tuned:
        conf["fetch.queue.backoff.ms"] = 10
    consumer = Consumer(conf)
    md = consumer.list_topics(timeout=10)
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                     for t in topics for p in md.topics[t].partitions])
    name = "raw confluent-kafka + orjson" + ("" if tuned else " (librdkafka default)")
    n, first, deadline = 0, 0.0, time.monotonic() + timeout_s
    loads = orjson.loads
    try:
        while n < total and time.monotonic() < deadline:
            # ask for no more than is left: a short batch would wait out the timeout
            for msg in consumer.consume(num_messages=min(1000, total - n), timeout=1.0):
                if msg.error() is None:
                    loads(msg.value() or b"null")
                    n += 1
                    if n == 1:
                        first = time.perf_counter()
        end = time.perf_counter()
    finally:
        consumer.close()
    if n < total:
        return Throughput(name, error=f"timed out with {n}/{total} events")
    return Throughput(name, n - 1, end - first,
                      note="fetch.queue.backoff.ms=10" if tuned else "fetch.queue.backoff.ms=1000")


def read_topic(bootstrap: str, topic: str, timeout_s: float = 60) -> list[Any]:
    """Every record of a topic from the beginning to its current end."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4()}",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.queue.backoff.ms": 10})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    done: set[int] = set()
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(done) < len(parts) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is None:
                    got.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition() or 0)
    finally:
        consumer.close()
    return got


def topic_size(bootstrap: str, topic: str) -> int:
    """Records in a topic: the sum of its partitions' high watermarks (0 if missing)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"size-{uuid.uuid4()}"})
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return 0
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.partitions)
    finally:
        consumer.close()


def read_latency(port: int, ids: Sequence[str], n: int = 2_000) -> dict[str, float]:
    """Sequential keep-alive ``GET /features/user/{id}``: p50/p99 ms and 200 count."""
    rng = random.Random(3)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    lat: list[float] = []
    ok = 0
    try:
        for _ in range(n):
            uid = rng.choice(ids)
            t = time.perf_counter()
            conn.request("GET", f"/features/user/{uid}")
            resp = conn.getresponse()
            resp.read()
            lat.append((time.perf_counter() - t) * 1000)
            ok += resp.status == 200
    finally:
        conn.close()
    return {"p50": percentile(lat, 50), "p99": percentile(lat, 99), "ok": ok, "n": n}


# -- subprocesses ----------------------------------------------------------------
#: Every subprocess started and not yet stopped, for :func:`stop_all`.
_LIVE: list[Proc] = []


def stop_all() -> None:
    """Stop every subprocess this benchmark started that still runs (by its PID)."""
    for proc in list(_LIVE):
        proc.stop()


class Proc:
    """A subprocess this benchmark started; only ever ended through its own PID."""

    def __init__(self, name: str, cmd: Sequence[str], log_path: Path,
                 env: Mapping[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.popen = subprocess.Popen(list(cmd), cwd=cwd, env=dict(env or os.environ),
                                          stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT)
        self.pid = self.popen.pid
        _LIVE.append(self)
        log.info("started %s (pid %d): %s", name, self.pid, " ".join(cmd))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM this PID, then SIGKILL it if it has not exited in time."""
        if self in _LIVE:
            _LIVE.remove(self)
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name,
                        self.pid, timeout_s)
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def http_json(port: int, path: str, timeout_s: float = 1.0) -> Any:
    """GET a JSON document from 127.0.0.1:port, or None when nothing answers."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as r:
            return json.loads(r.read())
    except OSError:
        return None


# -- progress files written by the contender apps -----------------------------------
class Progress:
    """Counts processed events in a contender app and writes ``{"count", "first",
    "last"}`` (wall-clock seconds of the first and of the latest counted event) to a
    file every ``every`` events and at ``total``."""

    def __init__(self, path: Path, total: int, every: int = 2_000) -> None:
        self.path = Path(path)
        self.total = total
        self.every = every
        self.count = 0
        self.first = 0.0

    def tick(self, n: int = 1) -> None:
        now = time.time()
        if self.count == 0:
            self.first = now
        before = self.count
        self.count += n
        if self.count // self.every != before // self.every or \
                (before < self.total <= self.count):
            self.write(now)

    def write(self, now: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": self.count, "first": self.first, "last": now}))
        tmp.replace(self.path)


def wait_for_progress(proc: Proc, path: Path, total: int, timeout_s: float, name: str,
                      cap_s: float = float("inf")) -> Throughput:
    """Wait until the app's progress file reports ``total`` events (or it fails).

    A slow app is measured over what it processed in its first ``cap_s`` seconds of
    processing (its steady state) instead of waiting for the whole backlog.
    """
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        with suppress(OSError, ValueError):
            last = json.loads(path.read_text())
        if last and last["count"] >= total:
            return Throughput(name, last["count"] - 1, last["last"] - last["first"])
        if last and time.time() - last["first"] > cap_s and last["count"] > 1:
            return Throughput(name, last["count"] - 1, last["last"] - last["first"],
                              note=f"first {last['count']:,} of {total:,} events "
                                   f"(capped at {cap_s:.0f} s)")
        if not proc.alive():
            return Throughput(name, error=f"exited with code {proc.popen.returncode}:\n"
                                          f"{proc.tail()}")
        time.sleep(0.2)
    got = last["count"] if last else 0
    return Throughput(name, error=f"timed out after {timeout_s:.0f} s with {got}/{total} events")


def poll_counter(read: Callable[[], int | None], total: int, timeout_s: float,
                 alive: Callable[[], bool], settle_s: float = 1.5,
                 extra: Callable[[], Any] | None = None) -> tuple[float, int, float] | str:
    """Poll a cumulative counter every 50 ms until it reaches ``total``.

    Returns (t0, c0, t_end): the first sample that saw events, its count, and the time
    of the last change of ``read()`` or ``extra()`` (polled on until nothing changed
    for ``settle_s``). Returns an error string on timeout or death.
    """
    deadline = time.monotonic() + timeout_s
    t0 = c0 = None
    seen: tuple[Any, Any] = (None, None)
    t_change = 0.0
    while time.monotonic() < deadline:
        count = read()
        if count is None:  # the HTTP endpoint did not answer this time
            if not alive():
                return "the process exited"
            time.sleep(0.05)
            continue
        state = (count, extra() if extra else None)
        now = time.monotonic()
        if state != seen:
            seen, t_change = state, now
        if count and t0 is None:
            t0, c0 = now, count
        if t0 is not None and count >= total \
                and now - t_change >= settle_s:
            return t0, int(c0 or 0), t_change
        if not alive():
            return "the process exited"
        time.sleep(0.05)
    return f"timed out after {timeout_s:.0f} s (counter at {seen[0]} of {total})"
