"""Helpers for broker tests: produce a log with its offsets, run a worker, consume."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer

from freshet.generator import GeneratedRecord
from freshet.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Produced:
    """A generated record and where the broker put it."""

    record: GeneratedRecord
    partition: int
    offset: int


def produce_log(settings: Settings, records: Iterable[GeneratedRecord]) -> list[Produced]:
    """Produce records in order (Java-compatible murmur2 partitioning); return offsets."""
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers,
                         "partitioner": "murmur2_random", "enable.idempotence": True,
                         "linger.ms": 5})
    out: list[Produced | None] = []
    errors: list[str] = []

    def on_delivery(index: int, rec: GeneratedRecord) -> Callable[[Any, Any], None]:
        def cb(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                out[index] = Produced(rec, msg.partition(), msg.offset())
        return cb

    for i, rec in enumerate(records):
        out.append(None)
        producer.produce(settings.topic(rec.topic), key=rec.key, value=rec.value,
                         on_delivery=on_delivery(i, rec))
        producer.poll(0)
    producer.flush(30)
    assert not errors, errors
    assert all(p is not None for p in out)
    return [p for p in out if p is not None]


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that reproduce ``settings`` in a worker process (all of them)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    return {**env, **settings.to_env()}


def stats(settings: Settings) -> dict[str, Any] | None:
    """The worker's ``/stats`` counters, or None while it is not serving."""
    try:
        url = f"http://127.0.0.1:{settings.web_port}/stats"
        with urllib.request.urlopen(url, timeout=1) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except OSError:
        return None


def http_get(port: int, path: str, timeout_s: float = 5) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of a GET on a worker's web server (errors included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout_s) as resp:
            return int(resp.status), dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), dict(err.headers), json.loads(err.read())


def processed(settings: Settings) -> int:
    """Input events the worker has run through its engine (0 while it is not serving)."""
    doc = stats(settings)
    return sum(doc["events"].values()) if doc else 0


class Worker:
    """A ``freshet worker`` subprocess this test started (ended by its own PID)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen([sys.executable, "-m", "freshet.cli", "worker"],
                                     cwd=ROOT, env=settings_env(self.settings),
                                     stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while stats(self.settings) is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not serving after {timeout_s}s:\n{self.log_tail()}")
            time.sleep(0.3)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log_tail(self, n: int = 40) -> str:
        """The log's last ``n`` lines, without librdkafka's per-partition metadata noise."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join([line for line in lines if _NOISE not in line][-n:])

    def thread_stacks(self, frames: int = 8) -> str:
        """The innermost frames of the worker's own threads (SIGUSR1: mode's stack dump).

        A timed-out test says where the worker is stuck, not only what it last logged.
        """
        if self.proc is None or self.proc.poll() is not None:
            return "(the worker is not running)"
        start = self.log_path.stat().st_size
        self.proc.send_signal(signal.SIGUSR1)
        time.sleep(2.0)
        with open(self.log_path, "rb") as f:
            f.seek(start)
            dump = f.read().decode(errors="replace").splitlines()
        out: list[str] = []
        for i, line in enumerate(dump):
            if line.startswith("THREAD freshet"):
                stack = []
                for frame_line in dump[i + 2:]:
                    if frame_line.startswith("-----"):
                        break
                    stack.append(frame_line)
                out += [line, *stack[-2 * frames:]]
        return "\n".join(out) or "(no stack dump)"


@contextmanager
def running_worker(settings: Settings, log_path: Path) -> Iterator[Worker]:
    worker = Worker(settings, log_path)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


#: librdkafka's per-partition leader lines after a broker restart: hundreds, no news
_NOISE = "METADATAUPDATE"

#: No new output for this long while not done: the worker has stalled. With
#: ``max_restarts`` > 0, ``consume`` then restarts it, as a supervisor would (logged).
#: The tests allow none: a worker must get going again by itself (README, Known issues:
#: the stall watchdog).
STALL_S = 30.0


def consume(settings: Settings, logical_topics: list[str],
            done: Callable[[dict[str, list[Any]]], bool], timeout_s: float = 120,
            worker: Worker | None = None, max_restarts: int = 0) -> dict[str, list[Any]]:
    """Read topics from the start until ``done(records_by_logical_topic)`` or timeout."""
    names = {settings.topic(t): t for t in logical_topics}
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                         "group.id": settings.app_id + "-test-reader",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed",
                         "fetch.queue.backoff.ms": 10})
    consumer.subscribe(list(names))
    got: dict[str, list[Any]] = {t: [] for t in logical_topics}
    deadline = time.monotonic() + timeout_s
    last_progress = time.monotonic()
    restarts = 0
    try:
        while not done(got):
            now = time.monotonic()
            if worker is not None and now - last_progress > STALL_S and restarts < max_restarts:
                restarts += 1
                log.warning("no output for %.0f s: restarting the stalled worker (%d)",
                            STALL_S, restarts)
                worker.stop()
                worker.start()
                last_progress = time.monotonic()
                deadline += STALL_S + 30
            if now > deadline:
                sizes = {k: len(v) for k, v in got.items()}
                why = getattr(done, "explain", lambda g: "")(got)
                where = (f"\nworker threads:\n{worker.thread_stacks()}\nworker log:\n"
                         f"{worker.log_tail()}" if worker else "")
                raise AssertionError(f"timed out; got {sizes}; {why}{where}")
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None:
                    got[names[msg.topic()]].append(msg)
                    last_progress = time.monotonic()
    finally:
        consumer.close()
    return got


def produce_then_kill(settings: Settings, log_path: Path, records: list[GeneratedRecord],
                      reached: Callable[[dict[str, Any]], bool],
                      timeout_s: float = 60, sig: int = signal.SIGKILL) -> list[Produced]:
    """Start a worker, produce ``records``, stop it with ``sig`` once ``reached(stats)``.

    The signal lands while it has processed some but (very likely) not all of them.
    Returns the produced log.
    """
    worker = Worker(settings, log_path)
    worker.start()
    try:
        log = produce_log(settings, records)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            s = stats(settings)
            if s and reached(s):
                break
            time.sleep(0.05)
    finally:
        worker.stop(sig=sig)
    return log
