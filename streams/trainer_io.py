"""``freshet train``'s IO: examples from Kafka or files, local checkpoints, ``model-versions``.

- :class:`KafkaExampleSource` reads ``training-examples`` and ``label-watermarks``
  (read_committed, assigned partitions, no consumer group offsets: the position lives
  in the checkpoint) into a :class:`training.feed.LabelOrderFeed`; after a restart it
  first re-reads the position's recovery ranges.
- :class:`FileExampleSource` reads JSONL files (a file per partition, line numbers as
  offsets) whose examples are all matured (``freshet replay`` ends at +infinity).
- :class:`CheckpointStore` keeps ``checkpoint.bin`` (atomic: temp file, fsync, rename),
  ``versions/vNNNNNN.json`` / ``.model`` and ``champion.json`` in the checkpoint folder.
- :class:`VersionPublisher` publishes version records to ``model-versions`` (key: the
  version) after they are on disk, and republishes at start-up what a crash kept off it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as TP
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from events.timing import END_OF_TIME_MS
from freshet.settings import Settings
from streams.startup import FolderLock
from training import Checkpoint
from training.checkpoint_file import StoredCheckpoint
from training.feed import LabelOrderFeed

log = logging.getLogger("freshet.train")

_TIMEOUT_S = 30.0


class TrainIOError(RuntimeError):
    """The trainer cannot go on with its input or checkpoints; the message says why."""


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temp file beside it, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointStore:
    """The trainer's checkpoint folder (one trainer per folder, locked while it runs)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.versions = directory / "versions"
        self.path = directory / "checkpoint.bin"
        self._lock = FolderLock(directory / "trainer.lock", "trainer")

    def acquire(self) -> None:
        """Lock the folder, or raise :class:`TrainIOError` naming its holder."""
        self.versions.mkdir(parents=True, exist_ok=True)
        holder = self._lock.acquire()
        if holder is not None:
            raise TrainIOError(f"the checkpoint folder {self.directory} is in use by {holder}: "
                               "give each trainer its own --checkpoint-dir")

    def release(self) -> None:
        """Unlock."""
        self._lock.release()

    def version_path(self, version: int, suffix: str) -> Path:
        """``versions/vNNNNNN.<suffix>``."""
        return self.versions / f"v{version:06d}.{suffix}"

    def load(self) -> StoredCheckpoint | None:
        """The latest checkpoint, or None when the folder has none."""
        try:
            stored = StoredCheckpoint.from_bytes(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise TrainIOError(f"{self.path}: {exc}; restore the file, or delete the folder "
                               "to train from scratch") from None
        self._champion(stored.record)
        return stored

    def _champion(self, record: dict[str, Any]) -> None:
        """``champion.json``: the record of the record's champion version (repaired at load)."""
        champion = record.get("champion_version")
        if isinstance(champion, int):
            want = self.version_path(champion, "json").read_bytes()
            current = self.directory / "champion.json"
            if not current.exists() or current.read_bytes() != want:
                atomic_write(current, want)

    def save(self, cp: Checkpoint, input_desc: dict[str, Any]) -> None:
        """Version files first, then ``checkpoint.bin`` (the commit point), then the champion."""
        version = cp.version.version
        atomic_write(self.version_path(version, "model"), cp.model)
        atomic_write(self.version_path(version, "json"),
                     orjson.dumps(cp.record, option=orjson.OPT_SORT_KEYS))
        atomic_write(self.path, StoredCheckpoint.of(cp, input_desc).to_bytes())
        self._champion(cp.record)

    def records(self, after: int, up_to: int) -> list[dict[str, Any]]:
        """The stored version records with ``after < version <= up_to``, in order."""
        paths = (self.version_path(v, "json") for v in range(after + 1, up_to + 1))
        return [orjson.loads(p.read_bytes()) for p in paths if p.exists()]


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer({**settings.kafka_client_config(), "group.id": group,
                     "enable.auto.commit": False, "isolation.level": "read_committed",
                     "auto.offset.reset": "earliest", "fetch.queue.backoff.ms": 10})


class VersionPublisher:
    """Publishes version records to ``model-versions`` (created with 1 partition if missing).

    With several partitions (``freshet topics create`` makes FRESHET_PARTITIONS), records
    keyed by version spread over them: readers order them by ``version``.
    """

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._errors: list[str] = []
        self._producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True,
                                   "acks": "all", "linger.ms": 0})

    def ensure_topic(self) -> None:
        """Create the topic if it is missing (one partition: versions stay in order)."""
        admin = AdminClient(dict(self.settings.kafka_client_config()))
        if self.topic in admin.list_topics(timeout=_TIMEOUT_S).topics:
            return
        fut = admin.create_topics([NewTopic(self.topic, num_partitions=1,
                                            replication_factor=self.settings.replication_factor)],
                                  operation_timeout=_TIMEOUT_S)[self.topic]
        try:
            fut.result()
            log.info("created topic %s", self.topic)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise TrainIOError(f"could not create topic {self.topic!r}: {exc}") from exc

    def last_version(self) -> int | None:
        """The highest version among the last records of every partition of the topic."""
        consumer = _consumer(self.settings, f"{self.settings.app_id}-trainer-probe")
        try:
            parts = consumer.list_topics(self.topic, timeout=_TIMEOUT_S).topics[self.topic]
            ends = {p: consumer.get_watermark_offsets(TP(self.topic, p), timeout=_TIMEOUT_S,
                                                      cached=False) for p in parts.partitions}
            ends = {p: (lo, hi) for p, (lo, hi) in ends.items() if hi > lo}
            consumer.assign([TP(self.topic, p, max(lo, hi - 5)) for p, (lo, hi) in ends.items()])
            versions: list[Any] = [-1]
            deadline = time.monotonic() + _TIMEOUT_S
            while ends and time.monotonic() < deadline:
                recs = [orjson.loads(m.value() or b"{}")
                        for m in consumer.consume(100, timeout=0.5) if m.error() is None]
                versions += [r.get("version") for r in recs if isinstance(r, dict)]
                for tp in consumer.position([TP(self.topic, p) for p in ends]):
                    if tp.offset >= ends[tp.partition][1]:
                        del ends[tp.partition]
            best = max(v for v in versions if isinstance(v, int))
            return None if best < 1 else best
        finally:
            consumer.close()

    def publish(self, record: dict[str, Any]) -> None:
        """Produce one record and wait until the broker has it (raises on failure)."""
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                self._errors.append(str(err))

        self._producer.produce(self.topic, key=str(record["version"]).encode(),
                               value=orjson.dumps(record, option=orjson.OPT_SORT_KEYS),
                               on_delivery=on_delivery)
        left = self._producer.flush(_TIMEOUT_S)
        if self._errors or left:
            raise TrainIOError(f"publishing version {record['version']} to {self.topic} "
                               f"failed: {self._errors or 'timed out'}")

    def reconcile(self, store: CheckpointStore, latest: int) -> int:
        """Publish stored versions the topic lacks (a crash between file and topic)."""
        last = self.last_version() or 0
        missing = store.records(last, latest)
        for record in missing:
            self.publish(record)
        if missing:
            log.info("republished %d version record(s) to %s", len(missing), self.topic)
        return len(missing)


def _where(msg: Message) -> tuple[int, int] | None:
    """A record's (partition, offset); None for a (logged) non-fatal consumer error."""
    err = msg.error()
    if err is not None:
        if err.fatal():
            raise TrainIOError(f"consumer error: {err}")
        log.warning("consumer: %s", err)
        return None
    part, offset = msg.partition(), msg.offset()
    if part is None or offset is None:
        raise TrainIOError(f"a consumed record without partition/offset: {msg!r}")
    return part, offset


def _offer(feed: LabelOrderFeed, part: int, offset: int, raw: bytes | None, origin: str) -> None:
    if feed.offer(part, offset, raw) == "invalid" and feed.counters["invalid"] <= 10:
        log.warning("skipping an invalid training example at %s offset %d: %.200r",
                    origin, offset, raw)


class FileExampleSource:
    """JSONL files of training examples, every one of them matured (see the module doc)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = [p.resolve() for p in paths]
        self._lines: list[list[bytes]] = []
        for path in self.paths:
            try:
                self._lines.append(path.read_bytes().split(b"\n"))
            except OSError as exc:
                raise TrainIOError(f"--examples {path}: {exc.strerror}") from None
        self._desc = {"kind": "files", "files": [
            {"path": str(p), "bytes": p.stat().st_size,
             "sha256": hashlib.sha256(b"\n".join(lines)).hexdigest()}
            for p, lines in zip(self.paths, self._lines, strict=True)]}

    def describe(self) -> dict[str, Any]:
        """The input's identity (paths, sizes, digests), kept with each checkpoint."""
        return self._desc

    def label_partitions(self) -> int:
        """Files are matured as one partition at +infinity."""
        return 1

    def start(self, feed: LabelOrderFeed, should_stop: Callable[[], bool]) -> None:
        """Give the feed every line, recovery ranges first, then the watermark +infinity."""
        for part, (lo, hi) in feed.recovery_ranges().items():
            for offset in range(lo, hi):
                self._line(feed, part, offset)
        feed.end_recovery()
        for part, lines in enumerate(self._lines):
            for offset in range(feed.consumed.get(part, 0), len(lines)):
                self._line(feed, part, offset)
            feed.seen(part, len(lines))
        feed.add_label_watermarks({0: END_OF_TIME_MS},
                                  {p: len(lines) for p, lines in enumerate(self._lines)})

    def _line(self, feed: LabelOrderFeed, part: int, offset: int) -> None:
        raw = self._lines[part][offset].rstrip(b"\r")
        if raw.strip():
            _offer(feed, part, offset, raw, str(self.paths[part]))

    def fill(self, feed: LabelOrderFeed) -> bool:
        """Nothing more to read: everything was given at :meth:`start`."""
        return False

    def close(self) -> None:
        """Nothing to close."""


class KafkaExampleSource:
    """``training-examples`` + ``label-watermarks`` from the broker (see the module doc)."""

    def __init__(self, settings: Settings, until_end: bool = False, batch: int = 5_000,
                 poll_s: float = 0.2) -> None:
        self.settings = settings
        self.examples = settings.topic("training_examples")
        self.watermarks = settings.topic("label_watermarks")
        self.until_end = until_end
        self.batch, self.poll_s = batch, poll_s
        self.invalid_watermarks = 0
        self._consumer = _consumer(settings, f"{settings.app_id}-trainer")
        self._parts: dict[str, list[int]] = {}
        self._ends: dict[str, dict[int, int]] = {}

    def describe(self) -> dict[str, Any]:
        """The input's identity, kept with each checkpoint."""
        return {"kind": "kafka", "training_examples": self.examples,
                "label_watermarks": self.watermarks}

    def _partitions(self, topic: str) -> list[int]:
        meta = self._consumer.list_topics(topic, timeout=_TIMEOUT_S).topics[topic]
        if meta.error is not None or not meta.partitions:
            raise TrainIOError(f"topic {topic!r} does not exist on "
                               f"{self.settings.bootstrap_servers}: start a worker or run "
                               "`freshet topics create` (check FRESHET_TOPIC_PREFIX)")
        return sorted(meta.partitions)

    def label_partitions(self) -> int:
        """The engine's partitions (those of ``predictions``; FRESHET_PARTITIONS without it)."""
        topic = self.settings.topic("predictions")
        meta = self._consumer.list_topics(topic, timeout=_TIMEOUT_S).topics[topic]
        if meta.error is None and meta.partitions:
            return len(meta.partitions)
        return self.settings.partitions

    def _end(self, topic: str, part: int) -> int:
        # read_committed: the last stable offset, what this consumer can read up to
        return int(self._consumer.get_watermark_offsets(TP(topic, part), timeout=_TIMEOUT_S,
                                                        cached=False)[1])

    def start(self, feed: LabelOrderFeed, should_stop: Callable[[], bool]) -> None:
        """Assign every partition at the feed's position, re-read its recovery ranges."""
        ex, wm = self.examples, self.watermarks
        self._parts = {ex: self._partitions(ex), wm: self._partitions(wm)}
        for part, next_offset in feed.consumed.items():
            end = self._end(ex, part) if part in self._parts[ex] else -1
            if end < next_offset:
                raise TrainIOError(f"the checkpoint read {ex} partition {part} up to offset "
                                   f"{next_offset}, but it now ends at {end}: was the topic "
                                   "recreated? Use a new --checkpoint-dir to start over")
        if self.until_end:
            self._ends = {t: {p: self._end(t, p) for p in ps} for t, ps in self._parts.items()}
        ranges = feed.recovery_ranges()

        def at(topic: str, part: int) -> int:
            if topic == ex:
                return ranges[part][0] if part in ranges else feed.consumed.get(part,
                                                                                OFFSET_BEGINNING)
            return feed.watermark_offsets.get(part, OFFSET_BEGINNING)

        tps = [TP(t, p, at(t, p)) for t, ps in self._parts.items() for p in ps]
        self._consumer.assign(tps)
        if not ranges:
            feed.end_recovery()
        elif not self._recover(feed, ranges, tps, should_stop):
            log.info("stopped while recovering: nothing learned, no checkpoint needed")

    def _recover(self, feed: LabelOrderFeed, ranges: dict[int, tuple[int, int]],
                 tps: list[TP], should_stop: Callable[[], bool]) -> bool:
        ex = self.examples
        others = [TP(tp.topic, tp.partition) for tp in tps
                  if tp.topic != ex or tp.partition not in ranges]
        if others:
            self._consumer.pause(others)
        left = dict(ranges)
        later: list[Message] = []
        t0 = last = time.monotonic()
        log.info("recovering: re-reading %d offsets of %s from the oldest held example",
                 sum(hi - lo for lo, hi in ranges.values()), ex)
        while left and not should_stop():
            for msg in self._consumer.consume(self.batch, timeout=self.poll_s):
                if (where := _where(msg)) is None:
                    continue
                part, offset = where
                if msg.topic() == ex and part in left and offset < left[part][1]:
                    _offer(feed, part, offset, msg.value(), f"{ex}[{part}]")
                    last = time.monotonic()
                else:
                    later.append(msg)
            for tp in self._consumer.position([TP(ex, p) for p in left]):
                if tp.offset >= left[tp.partition][1]:
                    del left[tp.partition]
                    self._consumer.pause([TP(ex, tp.partition)])
            if time.monotonic() - last > 60:
                raise TrainIOError(f"recovery made no progress for 60 s re-reading {ex} "
                                   f"partitions {sorted(left)}")
        if left:
            return False
        log.info("recovered in %.1f s", time.monotonic() - t0)
        feed.end_recovery()
        self._consumer.resume([TP(tp.topic, tp.partition) for tp in tps])
        self._handle(feed, later)
        return True

    def _handle(self, feed: LabelOrderFeed, msgs: list[Message]) -> None:
        ex = self.examples
        values: dict[int, int] = {}
        for msg in msgs:
            if (where := _where(msg)) is None:
                continue
            part, offset = where
            if msg.topic() == ex:
                _offer(feed, part, offset, msg.value(), f"{ex}[{part}]")
                continue
            feed.seen_watermark_offset(part, offset + 1)
            try:
                rec = orjson.loads(msg.value() or b"")
                label_part, value = rec["partition"], rec["label_watermark_ms"]
                if not (isinstance(label_part, int) and isinstance(value, int)):
                    raise TypeError("partition and label_watermark_ms must be integers")
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                self.invalid_watermarks += 1
                log.warning("skipping an invalid label watermark at %s[%d] offset %d: %s",
                            self.watermarks, part, offset, exc)
                continue
            values[label_part] = max(value, values.get(label_part, value))
        # positions move past transaction markers too: what read_committed can see is read
        for tp in self._consumer.position([TP(t, p) for t, ps in self._parts.items() for p in ps]):
            if tp.offset >= 0 and tp.topic == ex:
                feed.seen(tp.partition, tp.offset)
            elif tp.offset >= 0:
                feed.seen_watermark_offset(tp.partition, tp.offset)
        if values:
            required = {p: self._end(ex, p) for p in self._parts[ex]}
            try:
                feed.add_label_watermarks(values, required)
            except ValueError as exc:
                raise TrainIOError(f"{self.watermarks}: {exc} (set FRESHET_TRAIN_LABEL_"
                                   "PARTITIONS to the engine's partition count)") from None

    def fill(self, feed: LabelOrderFeed) -> bool:
        """Read one batch into the feed; False once ``until_end`` is reached."""
        self._handle(feed, self._consumer.consume(self.batch, timeout=self.poll_s))
        if not self.until_end:
            return True
        have = {self.examples: feed.consumed, self.watermarks: feed.watermark_offsets}
        return not all(have[t].get(p, 0) >= end for t, ends in self._ends.items()
                       for p, end in ends.items())

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()
