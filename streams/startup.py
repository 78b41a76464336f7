"""What a worker checks before it starts: its data folder is its own, the broker answers.

- **The data folder is owned**: a worker holds an exclusive lock on
  ``FRESHET_DATA_DIR/worker.lock`` for its whole life (as Kafka Streams locks its state
  directory). A second worker pointed at the same folder stops at once with a
  message saying which process holds it and what to set; nothing in the folder is
  touched before the lock is held.
- **The broker answers**: the bootstrap servers are asked for metadata with a bounded
  retry and backoff, each failed attempt one log line saying what, where and which
  setting, instead of librdkafka's per-connection lines.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from typing import IO, Any

from freshet.settings import Settings

log = logging.getLogger("freshet.startup")


class StartupError(RuntimeError):
    """A worker cannot start; the message says what to fix."""


class FolderLock:
    """An exclusive, advisory lock file held while this process lives (even SIGKILL frees it)."""

    def __init__(self, path: Path, role: str) -> None:
        self.path, self.role = path, role
        self._file: IO[str] | None = None

    def acquire(self) -> str | None:
        """Take the lock: None, or (held elsewhere) who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open while the process lives)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            return holder
        handle.seek(0)
        handle.truncate()
        handle.write(f"{self.role} pid {os.getpid()}\n")
        handle.flush()
        self._file = handle
        return None

    def release(self) -> None:
        """Unlock."""
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class DataDirLock:
    """An exclusive, advisory lock on a worker's data folder (released at exit)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "worker.lock"
        self._lock = FolderLock(self.path, "worker")

    def acquire(self) -> None:
        """Lock, or raise :class:`StartupError` naming the process that holds the folder."""
        holder = self._lock.acquire()
        if holder is not None:
            raise StartupError(
                f"the data folder {self.path.parent} is in use by {holder}: every worker "
                "needs a folder of its own; set FRESHET_DATA_DIR to another folder "
                "(and keep it across that worker's restarts)")

    def release(self) -> None:
        """Unlock (the lock also goes when the process ends, even on SIGKILL)."""
        self._lock.release()


def wait_for_broker(settings: Settings, first_backoff_s: float = 1.0) -> None:
    """Return once the brokers answer a metadata request; else :class:`StartupError`.

    Tries for ``FRESHET_BROKER_WAIT_MS``, doubling the pause between tries (1, 2, 4, ...
    s, at most 30 s), one log line per failed try.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []

    def on_error(err: Any) -> None:
        errors.append(err.str() if hasattr(err, "str") else str(err))

    conf: dict[str, Any] = {**settings.kafka_client_config(), "error_cb": on_error,
                            "log_level": 0, "socket.connection.setup.timeout.ms": 3_000}
    admin = AdminClient(conf)
    deadline = time.monotonic() + settings.broker_wait_ms / 1000
    backoff = first_backoff_s
    attempt = 0
    where = (f"Kafka at {settings.bootstrap_servers} (FRESHET_KAFKA_BOOTSTRAP, "
             f"FRESHET_KAFKA_SECURITY_PROTOCOL={settings.security_protocol})")
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        try:
            admin.list_topics(timeout=max(0.5, min(3.0, left)))
            if attempt > 1:
                log.info("Kafka at %s answers (attempt %d)", settings.bootstrap_servers,
                         attempt)
            return
        except KafkaException as exc:
            admin.poll(0.05)  # error callbacks are served by poll
            reason = errors[-1] if errors else exc.args[0].str()
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pause = min(backoff, left, 30.0)
        log.warning("cannot reach %s: %s; retrying in %.1f s (attempt %d, giving up after "
                    "FRESHET_BROKER_WAIT_MS=%d)", where, reason, pause, attempt,
                    settings.broker_wait_ms)
        time.sleep(pause)
        backoff *= 2
    raise StartupError(
        f"cannot reach Kafka at {settings.bootstrap_servers} after {attempt} attempts over "
        f"{settings.broker_wait_ms / 1000:.0f} s: {reason}. Check FRESHET_KAFKA_BOOTSTRAP "
        "(host:port of brokers that answer) and FRESHET_KAFKA_SECURITY_PROTOCOL and the "
        "SASL/SSL settings")


def prepare_worker(settings: Settings) -> DataDirLock:
    """Lock the data folder and wait for the broker; the lock is held until exit."""
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    wait_for_broker(settings)
    return lock


class RepeatFilter(logging.Filter):
    """Lets each distinct librdkafka log line through at most once a period.

    A broker that is down makes librdkafka log every failed connection (several a
    second per broker and client); one line per period says the same.

    >>> f = RepeatFilter(period_s=60)
    >>> rec = logging.makeLogRecord({"msg": "%s [%s] %s", "args": ("FAIL", "rdkafka#1",
    ...     "127.0.0.1:1/bootstrap: Connect failed (after 3ms in state CONNECT)")})
    >>> f.filter(rec), f.filter(rec), f.suppressed
    (True, False, 1)
    """

    def __init__(self, period_s: float = 30.0) -> None:
        super().__init__()
        self.period_s = period_s
        self.suppressed = 0
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether to emit ``record``."""
        args = record.args if isinstance(record.args, tuple) else ()
        text = str(args[-1]) if args else record.getMessage()
        key = f"{args[0] if args else ''}|" + "".join(c for c in text if not c.isdigit())[:120]
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.period_s:
            self.suppressed += 1
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


class ErrorThrottle:
    """librdkafka's error callback, logging each distinct error at most once a period."""

    def __init__(self, logger: logging.Logger, period_s: float = 30.0) -> None:
        self.logger = logger
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self.count = 0

    def __call__(self, err: Any) -> None:
        """Log ``err`` (a ``KafkaError``) unless the same kind was logged recently."""
        self.count += 1
        fatal = bool(getattr(err, "fatal", lambda: False)())
        key = str(getattr(err, "name", lambda: str(err))())
        now = time.monotonic()
        if fatal:
            self.logger.error("fatal Kafka client error: %s", err)
        elif now - self._last.get(key, -1e18) >= self.period_s:
            self._last[key] = now
            self.logger.warning("Kafka client error: %s (logged at most every %.0f s)", err,
                                self.period_s)
