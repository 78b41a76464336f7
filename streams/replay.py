"""``freshet replay``: the stream's processors over JSONL files, no Kafka involved.

The two files are merged in event-time order (ties: predictions before clicks, then
file order), cut into batches and run through exactly the processors the workers
use — user features, labels, the item repartition and the item snapshots that come
back — with in-memory state. At the end of the input the watermark moves to
+infinity, so every label is final. Records go to ``DIR/<topic>.jsonl``, one JSON
object per line, in the order the stream would publish them.

Replay runs as one partition; its ``source`` provenance fields therefore count lines
of the merged input, not Kafka offsets.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from events.timing import END_OF_TIME_MS
from features.catalog import Catalog, default_catalog
from freshet.settings import DEFAULT_TOPICS, Settings
from labels import LabelConfig
from streams.labelstage import LabelStage, label_report_records
from streams.processor import ItemProcessor, UserProcessor
from streams.records import BatchResult, Counters, InputRecord, Output

log = logging.getLogger(__name__)

BATCH = 2_000


@dataclass
class ReplaySummary:
    """What a replay read and wrote."""

    events: int
    written: dict[str, int]
    seconds: float


def _lines(path: Path, source: str) -> Iterator[tuple[int, int, int, str, bytes]]:
    """(event ts or -1, source rank, line no, source, raw) for each non-empty line."""
    rank = 0 if source == "predictions" else 1
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            raw = line.rstrip(b"\r\n")
            if not raw:
                continue
            yield _ts_or_minus_one(raw), rank, n, source, raw


def _ts_or_minus_one(raw: bytes) -> int:
    """The record's ``ts`` when it has a plausible one; -1 sorts the rest first.

    Only for ordering: the processors validate every record (and dead-letter the
    malformed ones) exactly as the workers do.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return -1
    ts = obj.get("ts") if isinstance(obj, dict) else None
    return ts if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 else -1


def merged(predictions: Path, clicks: Path) -> list[tuple[int, int, int, str, bytes]]:
    """Both files in event-time order (malformed lines first)."""
    return list(heapq.merge(sorted(_lines(predictions, "predictions")),
                            sorted(_lines(clicks, "clicks"))))


class _Store:
    """A plain dict of decoded states standing in for a table."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, partition: int, key: str) -> bytes | None:
        state = self.data.get(key)  # only on a state-cache miss
        return None if state is None else orjson.dumps(state)

    def keys_for_partition(self, partition: int) -> list[str]:
        return list(self.data)


class Replay:
    """Drives the worker's processors over an ordered list of raw input records."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None) -> None:
        catalog = catalog or default_catalog(settings.ctr_prior_clicks,
                                             settings.ctr_prior_non_clicks)
        config = LabelConfig(window_ms=settings.label_window_ms, skew_ms=settings.label_skew_ms,
                             mode=settings.label_mode, observe_ms=settings.label_observe_ms,
                             eager_clicks=settings.label_eager_clicks)
        self.counters = Counters()
        self.stores = {name: _Store() for name in ("user", "item", "label")}
        self.labels = LabelStage(config, self.stores["label"].get,
                                 self.stores["label"].keys_for_partition, self.counters)
        self.users = UserProcessor(catalog.user, self.stores["user"].get,
                                   settings.allowed_lateness_ms, lambda item_id: 0,
                                   self.counters, self.labels)
        self.items = ItemProcessor(catalog.item, self.stores["item"].get, self.counters, 1)
        self.offsets = {"items_repartition": 0, "item_snapshots": 0}

    def _internal(self, outputs: list[Output], topic: str) -> list[InputRecord]:
        recs = []
        for out in outputs:
            if out.topic == topic:
                recs.append(InputRecord(topic, topic, 0, self.offsets[topic], out.key, out.value))
                self.offsets[topic] += 1
        return recs

    def run_batch(self, batch: list[InputRecord], emit: Callable[[Output], None]) -> None:
        """One user batch, then the item side, then the snapshots coming back."""
        user_result = self.users.process(batch)
        self._finish(user_result, "user", emit)
        item_result = self.items.process(self._internal(user_result.outputs,
                                                        "items_repartition"))
        self._finish(item_result, "item", emit)
        snapshots = self._internal(item_result.outputs, "item_snapshots")
        if snapshots:
            self._finish(self.users.process(snapshots), "user", emit)

    def end_of_input(self, emit: Callable[[Output], None]) -> None:
        """Move the watermark to +infinity: every open label becomes final."""
        result = BatchResult()
        for partition, wm in self.users.watermarks.items():
            wm.advance_to(END_OF_TIME_MS)
            self.labels.on_watermark(partition, END_OF_TIME_MS)
        self.labels.finish(result)
        self._finish(result, "user", emit)

    def _finish(self, result: BatchResult, entity: str, emit: Callable[[Output], None]) -> None:
        for (_, key), value in result.writes.items():
            self.stores[entity].data[key] = value
        labels = self.stores["label"].data
        for (_, key), raw in result.label_writes.items():
            if raw is None:
                labels.pop(key, None)
            else:
                labels[key] = raw
        for out in result.outputs:
            if out.topic not in ("items_repartition", "item_snapshots"):
                emit(out)


def replay_files(predictions: Path, clicks: Path, out_dir: Path, settings: Settings,
                 progress: bool = True) -> ReplaySummary:
    """Replay two JSONL files into ``out_dir``; see the module docstring."""
    import time

    from tqdm import tqdm

    t0 = time.perf_counter()
    records = merged(predictions, clicks)
    out_dir.mkdir(parents=True, exist_ok=True)
    replay = Replay(settings)
    written: dict[str, int] = {}
    with ExitStack() as stack:
        files: dict[str, IO[bytes]] = {}

        def emit(out: Output) -> None:
            f = files.get(out.topic)
            if f is None:
                name = DEFAULT_TOPICS[out.topic]
                f = files[out.topic] = stack.enter_context(open(out_dir / f"{name}.jsonl", "wb"))
            f.write(out.value + b"\n")
            written[out.topic] = written.get(out.topic, 0) + 1

        seq = {"predictions": 0, "clicks": 0}
        bar = stack.enter_context(tqdm(total=len(records), unit="ev", desc="replay",
                                       disable=not progress, mininterval=0.5))
        for start in range(0, len(records), BATCH):
            batch = []
            for _ts, _, _line, source, raw in records[start:start + BATCH]:
                # offsets: the record's rank among its file's records, in merged order
                batch.append(InputRecord(source, f"{source}.jsonl", 0, seq[source], None, raw))
                seq[source] += 1
            replay.run_batch(batch, emit)
            bar.update(len(batch))
        replay.end_of_input(emit)
        for report in label_report_records(replay.users, replay.labels):
            emit(report)
    return ReplaySummary(len(records), written, time.perf_counter() - t0)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL output file."""
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]
