"""Helpers shared by ``bench/chaos.py`` and ``bench/soak.py``: a broker of their own
that can be restarted, worker processes that can be SIGKILLed and restarted, a paced
producer that remembers where every record landed and when, the worker group's lag
in seconds, and process memory.

Every process is started here and ended through its own PID; all traffic stays on
127.0.0.1. The module logs and never prints.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from bench._common import ROOT, Proc, free_port, http_json, producer
from freshet.generator import GeneratedRecord
from freshet.settings import Settings

log = logging.getLogger("bench")
#: librdkafka's own lines (connection refused while the broker restarts, ...): to a
#: logger, warnings and worse only, instead of the terminal
kafka_log = logging.getLogger("bench.librdkafka")


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """A confluent-kafka client configuration whose log lines go to ``kafka_log``."""
    return {"bootstrap.servers": bootstrap, "logger": kafka_log, "log_level": 4, **extra}


# -- the broker -------------------------------------------------------------------------
class OwnBroker:
    """A ``LocalKafka`` of this run only (own folder, own free ports), restartable.

    Never the shared development broker: the port pair is chosen free, the folder is
    ``var/<name>-kafka-<port>``.
    """

    def __init__(self, name: str) -> None:
        from freshet.kafka_local import LocalKafka

        port = free_port()
        self.kafka = LocalKafka(home=ROOT / "var" / f"{name}-kafka-{port}", port=port)
        self.bootstrap = self.kafka.bootstrap

    def start(self, timeout_s: float = 120.0) -> None:
        shutil.rmtree(self.kafka.home, ignore_errors=True)
        log.info("starting a broker of our own on %s in %s", self.bootstrap, self.kafka.home)
        self.kafka.start(timeout_s=timeout_s)

    def restart(self, timeout_s: float = 120.0) -> tuple[float, float]:
        """Stop the broker and start it again on the same folder.

        Returns (seconds stopping, seconds until it answers metadata again).
        """
        t0 = time.monotonic()
        self.kafka.stop(timeout_s=60)
        t1 = time.monotonic()
        self.kafka.start(timeout_s=timeout_s)
        return t1 - t0, time.monotonic() - t1

    def stop(self, remove: bool) -> None:
        """Stop the broker; remove its folder when ``remove`` (kept for diagnosis else)."""
        self.kafka.stop(timeout_s=60)
        if remove:
            shutil.rmtree(self.kafka.home, ignore_errors=True)
        else:
            log.info("kept the broker folder %s", self.kafka.home)


# -- child processes -------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child before exec: SIGKILL me if the process that started me dies.

    Keeps a crashed benchmark (even one aborted inside librdkafka, where no ``finally``
    runs) from leaving workers behind. Workers are only ever started from the main
    thread, whose exit is what the kernel watches.
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


class Child(Proc):
    """A :class:`bench._common.Proc` that dies with this process (``PR_SET_PDEATHSIG``)."""

    def __init__(self, name: str, cmd: list[str], log_path: Path,
                 env: Mapping[str, str]) -> None:
        from bench import _common

        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            self.popen = subprocess.Popen(cmd, cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT,
                                          preexec_fn=_die_with_parent)
        self.pid = self.popen.pid
        _common._LIVE.append(self)
        log.info("started %s (pid %d)", name, self.pid)


# -- workers ------------------------------------------------------------------------------
def worker_settings(bootstrap: str, prefix: str, data_dir: Path, **extra: Any) -> Settings:
    """A worker's settings: its own data folder and web port, the run's topics and group."""
    return Settings(bootstrap_servers=bootstrap, app_id=f"{prefix}app", topic_prefix=prefix,
                    data_dir=data_dir, web_port=free_port(pairs=False), **extra)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces ``settings`` in a ``freshet worker`` process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHET_")}
    return {**env, **settings.to_env(), "PYTHONPATH": str(ROOT)}


class WorkerProc:
    """One ``freshet worker`` slot: the same settings (data folder, port) across restarts."""

    def __init__(self, name: str, settings: Settings, log_path: Path) -> None:
        self.name = name
        self.settings = settings
        self.log_path = log_path
        self.proc: Child | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        """Start the process (does not wait for it to serve)."""
        cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "freshet.cli", "worker"]
        self.proc = Child(self.name, cmd, self.log_path, env=settings_env(self.settings))
        self.starts += 1

    def wait_serving(self, timeout_s: float = 120.0) -> None:
        """Wait until ``GET /stats`` answers; raises if the process dies or times out."""
        deadline = time.monotonic() + timeout_s
        while self.stats() is None:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited while starting:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not serving after {timeout_s:.0f} s:\n"
                                   f"{self.tail()}")
            time.sleep(0.3)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.popen.poll()

    def kill(self) -> None:
        """SIGKILL this process (its own PID) and reap it."""
        if self.proc is None or not self.proc.alive():
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.popen.wait(timeout=30)
        self.proc.stop()  # bookkeeping only: already gone

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s (by PID)."""
        if self.proc is not None:
            self.proc.stop(timeout_s=30)

    def stats(self) -> Any:
        return http_json(self.settings.web_port, "/stats", timeout_s=2.0)

    def tail(self, lines: int = 30) -> str:
        return self.proc.tail(lines) if self.proc is not None else ""


def pyspy_dump(pid: int | None, path: Path, timeout_s: float = 30.0) -> str | None:
    """Where a process's threads are now (``py-spy dump``), saved to ``path``; the text.

    Evidence for a worker that stopped making progress. None if py-spy is missing or
    fails.
    """
    spy = ROOT / ".venv" / "bin" / "py-spy"
    if pid is None or not spy.exists():
        return None
    try:
        out = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True,
                             text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"py-spy failed: {exc}"
    text = out.stdout + out.stderr
    path.write_text(text)
    return text


def rss_kib(pid: int | None) -> int | None:
    """Resident set size (``VmRSS``) of a process in KiB; None once it is gone."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def dir_bytes(path: Path, match: Callable[[str], bool] = lambda name: True) -> int:
    """Bytes of the files below ``path`` whose top-level entry's name ``match``-es."""
    total = 0
    if not path.is_dir():
        return 0
    for sub in path.iterdir():
        if not match(sub.name):
            continue
        files = [sub] if sub.is_file() else [f for f in sub.rglob("*") if f.is_file()]
        for f in files:
            with suppress(OSError):  # a segment deleted or compacted meanwhile
                total += f.stat().st_size
    return total


# -- producing ----------------------------------------------------------------------------
@dataclass
class ProducedLog:
    """What the paced producer delivered, filled in by delivery reports (thread-safe)."""

    #: keep ``where`` (chaos needs it for the oracle; a soak's millions of records not)
    keep_where: bool = True
    #: record index -> (partition, offset), for the oracle's ``Produced`` log
    where: dict[int, tuple[int, int]] = field(default_factory=dict)
    #: (topic, partition) -> produce wall-clock seconds of offsets 0, 1, 2, ...
    times: dict[tuple[str, int], array[float]] = field(default_factory=dict)
    delivered_n: int = 0
    handed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def delivered(self, index: int, err: Any, msg: Any) -> None:
        if err is not None:
            with self.lock:
                self.errors.append(str(err))
            return
        part, offset = msg.partition(), msg.offset()
        with self.lock:
            self.delivered_n += 1
            if self.keep_where:
                self.where[index] = (part, offset)
            ts = self.times.setdefault((msg.topic(), part), array("d"))
            # offsets of an idempotent, non-transactional producer are dense from 0 on
            # a new topic; pad defensively if one ever is not
            while len(ts) < offset:
                ts.append(ts[-1] if ts else msg.timestamp()[1] / 1000.0)
            ts.append(msg.timestamp()[1] / 1000.0)

    def ends(self) -> dict[tuple[str, int], int]:
        """Delivered end offset per input partition."""
        with self.lock:
            return {tp: len(ts) for tp, ts in self.times.items()}

    def produced_at(self, tp: tuple[str, int], offset: int) -> float | None:
        with self.lock:
            ts = self.times.get(tp)
            return ts[offset] if ts is not None and 0 <= offset < len(ts) else None


class PacedProducer(threading.Thread):
    """Produces records at a fixed rate (monotonic clock) until they run out, the
    deadline passes or :meth:`halt`. Each record's Kafka timestamp is the wall-clock
    millisecond it was handed over: the lag in seconds is read from it."""

    def __init__(self, bootstrap: str, records: Iterable[GeneratedRecord],
                 topic_of: Mapping[str, str], rate: float, seconds: float,
                 keep_log: bool = True) -> None:
        super().__init__(name="paced-producer", daemon=True)
        self.bootstrap = bootstrap
        self.records = records
        self.topic_of = dict(topic_of)
        self.rate = rate
        self.seconds = seconds
        self.keep_log = keep_log
        self.log = ProducedLog(keep_where=keep_log)
        self.sent: list[GeneratedRecord] = []  # what was handed over, in order
        self.started_at = 0.0
        self.ended_at = 0.0
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def halt(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the caller
            self.error = exc
            log.exception("the paced producer failed")

    def _run(self) -> None:
        # queue.buffering.max.messages: a broker restart buffers ~rate x downtime records
        prod = producer(self.bootstrap, **{"linger.ms": 5, "message.timeout.ms": 300_000,
                                           "logger": kafka_log, "log_level": 4})
        start = self.started_at = time.monotonic()
        end = start + self.seconds
        for i, rec in enumerate(self.records):
            due = start + i / self.rate
            if due >= end or self._halt.is_set():
                break
            while (wait := due - time.monotonic()) > 0.0005:
                prod.poll(min(wait, 0.1))
            self._produce(prod, i, rec)
            prod.poll(0)
        self.ended_at = time.monotonic()
        left = prod.flush(120)
        if left:
            self.log.errors.append(f"{left} records not acknowledged 120 s after the end")
        log.info("produced %d records in %.1f s (%d delivery errors)", self.log.handed,
                 self.ended_at - start, len(self.log.errors))

    def _produce(self, prod: Any, i: int, rec: GeneratedRecord) -> None:
        topic = self.topic_of[rec.topic]
        cb = functools.partial(self.log.delivered, i)
        while True:
            try:
                prod.produce(topic, rec.value, key=rec.key, on_delivery=cb,
                             timestamp=int(time.time() * 1000))
                break
            except BufferError:
                prod.poll(0.05)
        if self.keep_log:
            self.sent.append(rec)
        self.log.handed += 1


# -- the worker group's lag -----------------------------------------------------------------
class GroupLag:
    """Committed offsets of the worker group against what the producer delivered.

    Reads them with ``Consumer.committed`` of a consumer that never subscribes (so it
    never joins the group). Not the AdminClient: its ``list_consumer_group_offsets``
    hit a librdkafka assertion (``rd_kafka_enq_once_del_source_return``) that aborted
    the whole process when a request timed out across a broker restart.
    """

    def __init__(self, bootstrap: str, group: str, inputs: list[str],
                 internal: list[str] | None = None) -> None:
        # read_uncommitted: committed() then asks for the last *stable* offsets instead
        # of retrying until its timeout while a transaction holds pending offsets (as
        # when a worker was SIGKILLed mid-transaction) -- exactly when lag matters
        self.consumer = Consumer(client_config(bootstrap, **{
            "group.id": group, "enable.auto.commit": False,
            "isolation.level": "read_uncommitted"}))
        # reads the first committed record past the group's offset of an internal topic
        self.peek = Consumer(client_config(bootstrap, **{
            "group.id": f"{group}-lag-peek", "enable.auto.commit": False,
            "isolation.level": "read_committed", "fetch.wait.max.ms": 50,
            "fetch.queue.backoff.ms": 10}))
        self.inputs = inputs
        self.internal = internal or []

    def internal_lag(self, partitions: int, now: float) -> dict[str, Any] | None:
        """The worker-written topics the group consumes (items repartition, snapshots):
        the age of the first committed record at or after the group's offset (its Kafka
        timestamp is when a worker produced it); 0 when there is none."""
        if not self.internal:
            return {"lag_s": 0.0}
        committed = self.committed(partitions, self.internal)
        if committed is None:
            return None
        try:
            self.peek.assign([TopicPartition(t, p, off) for (t, p), off in committed.items()])
            first: dict[tuple[str, int], float] = {}
            deadline = time.monotonic() + 0.3
            while len(first) < len(committed) and time.monotonic() < deadline:
                for msg in self.peek.consume(num_messages=100, timeout=0.1):
                    if msg.error() is None:
                        first.setdefault((msg.topic(), msg.partition()),
                                         msg.timestamp()[1] / 1000.0)
            self.peek.unassign()
        except KafkaException:
            return None
        return {"lag_s": max((now - t for t in first.values()), default=0.0)}

    def committed(self, partitions: int,
                  topics: list[str] | None = None) -> dict[tuple[str, int], int] | None:
        """Committed offset per partition of the inputs (or ``topics``), 0 when none yet;
        None if unanswered."""
        tps = [TopicPartition(t, p) for t in (topics or self.inputs) for p in range(partitions)]
        try:
            res = self.consumer.committed(tps, timeout=2.0)
        except KafkaException:  # the broker is down or restarting
            return None
        if any(tp.error is not None for tp in res):
            return None
        return {(tp.topic, tp.partition): max(0, tp.offset) for tp in res}

    def close(self) -> None:
        self.consumer.close()
        self.peek.close()

    def sample(self, plog: ProducedLog, partitions: int, now: float) -> dict[str, Any] | None:
        """{'lag_s', 'lag_records'}: the age of the oldest delivered record not yet
        committed (0 when caught up), and the records not yet committed."""
        committed = self.committed(partitions)
        if committed is None:
            return None
        ends = plog.ends()
        lag_s, lag_records = 0.0, 0
        for tp, end in ends.items():
            done = committed.get(tp, 0)
            if done < end:
                lag_records += end - done
                born = plog.produced_at(tp, done)
                if born is not None:
                    lag_s = max(lag_s, now - born)
        return {"lag_s": lag_s, "lag_records": lag_records}


def summarize(values: list[float]) -> dict[str, float | int | None]:
    """count, p50, p99 and max of a list (None when empty)."""
    from bench._common import percentile

    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {"n": len(values), "p50": round(percentile(values, 50), 3),
            "p99": round(percentile(values, 99), 3), "max": round(max(values), 3)}


def code_version() -> str:
    """The commit the run measured, marked when the work tree has uncommitted changes."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return out.stdout.strip() + ("+uncommitted changes" if dirty else "")
