"""``freshet replay``: the engine over JSONL files, no Kafka involved.

The two files are merged in event-time order (ties: predictions before clicks, then
file order; lines without a valid ``ts`` first, they are dead-lettered anyway), cut
into large batches and run through exactly what the workers run -- a user partition
(:class:`engine.users.UserPartition`), the item repartition and the item snapshots
coming back (:class:`engine.items.ItemPartition`) -- with in-memory state. At the end
of the input the watermark moves to +infinity, so every label is final. Records go
to ``DIR/<topic>.jsonl``, one JSON object per line, in the order the stream would
publish them.

With the evaluation stage on (``FRESHET_EVALUATION_ENABLED``, the default), the
evaluator follows the labels as in the workers (:class:`EvalTap`) and its records go to
``model-metrics``, ``model-comparisons``, ``model-routing``, ``drift`` and
``retrain-triggers`` files.

Replay runs as one partition; its ``source`` provenance fields therefore count lines
of each file in merged order, not Kafka offsets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
import numpy as np
import orjson

from engine import InputBatch, ItemPartition, Out, Result, UserPartition, label_reports
from engine.users import Counters
from events.timing import END_OF_TIME_MS
from features.catalog import Catalog
from freshet.settings import DEFAULT_TOPICS, Settings

log = logging.getLogger(__name__)

#: Events per batch: large batches amortise every per-batch cost.
BATCH = 50_000
INTERNAL = ("items_repartition", "item_snapshots")


@dataclass
class ReplaySummary:
    """What a replay read and wrote."""

    events: int
    written: dict[str, int]
    seconds: float


class _Ts(msgspec.Struct):
    ts: int


_decode_ts = msgspec.json.Decoder(_Ts).decode


def _lines(path: Path) -> list[bytes]:
    with open(path, "rb") as f:
        return [raw for raw in (line.rstrip(b"\r\n") for line in f) if raw]


def _times(lines: Sequence[bytes]) -> np.ndarray:
    """Each line's ``ts`` for ordering only (-1 when it has none); validation is later."""
    out = np.full(len(lines), -1, dtype=np.int64)
    for i, raw in enumerate(lines):
        try:
            ts = _decode_ts(raw).ts
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if 0 <= ts < 2**62:
            out[i] = ts
    return out


def merged_order(pred_ts: np.ndarray, click_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source code, index in its file) of every line in merged event-time order.

    >>> merged_order(np.array([5, 1]), np.array([5, -1]))
    (array([0, 1, 1, 0], dtype=int8), array([0, 1, 0, 0]))
    """
    ts = np.concatenate((pred_ts, click_ts))
    rank = np.concatenate((np.zeros(len(pred_ts), np.int64), np.ones(len(click_ts), np.int64)))
    line = np.concatenate((np.arange(len(pred_ts)), np.arange(len(click_ts))))
    order = np.lexsort((line, rank, ts))
    source = np.where(rank[order] == 0, 1, 0).astype(np.int8)  # source codes: 1 predictions
    return source, line[order]


class Replay:
    """The engine's partitions over batches of raw input records (one partition)."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None,
                 changelog: bool = False) -> None:
        # changelog: make the changelog deltas a worker's partitions make (bench only)
        catalog = catalog or settings.load_catalog()
        self.counters = Counters()
        items = len(catalog.item.specs) > 0
        labels = settings.label_config() if settings.labels_enabled else None
        self.users = UserPartition(0, catalog.user, labels, settings.allowed_lateness_ms,
                                   (lambda item_id: 0) if items else None, self.counters,
                                   topics=("clicks.jsonl", "predictions.jsonl"),
                                   changelog=changelog)
        self.items = ItemPartition(0, catalog.item, 1, snapshots=labels is not None,
                                   counters=self.counters, changelog=changelog) if items else None
        self.offsets = dict.fromkeys(INTERNAL, 0)

    def _internal(self, result: Result, topic: str) -> list[tuple[int, bytes | None]]:
        recs = []
        for out in result.outputs:
            if out.topic == topic:
                recs.append((self.offsets[topic], out.value))
                self.offsets[topic] += 1
        return recs

    def run_batch(self, batch: InputBatch, emit: Callable[[list[Out]], None]) -> None:
        """One user batch, then the item side, then the snapshots coming back."""
        user_result = self.users.process(batch)
        self._emit(user_result, emit)
        if self.items is None:
            return
        item_result = self.items.process(self._internal(user_result, "items_repartition"))
        self._emit(item_result, emit)
        snapshots = self._internal(item_result, "item_snapshots")
        if snapshots:
            self._emit(self.users.process_snapshots(snapshots), emit)

    def end_of_input(self, emit: Callable[[list[Out]], None]) -> None:
        """Move the watermark to +infinity: every open label becomes final."""
        self._emit(self.users.end_of_input(END_OF_TIME_MS), emit)
        emit(list(label_reports([self.users])))

    @staticmethod
    def _emit(result: Result, emit: Callable[[list[Out]], None]) -> None:
        emit([out for out in result.outputs if out.topic not in INTERNAL])


class EvalTap:
    """The evaluation stage over replay's own labels: advanced after every batch.

    As in the workers (:mod:`streams.evaluation`), the evaluator advances to the label
    watermark, so each record at ``T`` equals the live one at ``T``; at the end of the
    input it advances to just past the newest prediction, where every label has matured.
    """

    def __init__(self, settings: Settings) -> None:
        # imported here: the evaluation stack (river, scipy) takes ~0.6 s to import
        from evaluation import Evaluator
        from streams.evaluation import OUTPUT_TOPICS

        self.evaluator = Evaluator(settings.eval_config())
        self.topics = OUTPUT_TOPICS
        self.newest_ts: int | None = None

    def take(self, out: Out) -> None:
        """Hold a ``labels`` or ``training-examples`` output (others are ignored)."""
        if out.value is None or out.topic not in ("labels", "training_examples"):
            return
        record = orjson.loads(out.value)
        if out.topic == "labels":
            self.evaluator.add_label(record)
            ts = record.get("prediction_ts")
            if isinstance(ts, int) and (self.newest_ts is None or ts > self.newest_ts):
                self.newest_ts = ts
        else:
            self.evaluator.add_training_example(record)

    def advance(self, label_watermark_ms: int | None) -> list[Out]:
        """The evaluation records at ``label_watermark_ms`` (none if it did not move)."""
        if label_watermark_ms is None:
            return []
        return [Out(self.topics[o.topic], o.key.encode(), orjson.dumps(o.record))
                for o in self.evaluator.advance(label_watermark_ms)]

    def finish(self) -> list[Out]:
        """The records once every label has matured (just past the newest prediction)."""
        return self.advance(None if self.newest_ts is None else self.newest_ts + 1)


def replay_files(predictions: Path, clicks: Path, out_dir: Path, settings: Settings,
                 progress: bool = True, batch_size: int = BATCH) -> ReplaySummary:
    """Replay two JSONL files into ``out_dir``; see the module doc."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    lines = {1: _lines(predictions), 0: _lines(clicks)}
    source, index = merged_order(_times(lines[1]), _times(lines[0]))
    total = len(source)
    # offsets: a record's rank among its own file's records, in merged order
    offset = np.empty(total, dtype=np.int64)
    for code in (0, 1):
        mine = source == code
        offset[mine] = np.arange(int(mine.sum()))
    out_dir.mkdir(parents=True, exist_ok=True)
    replay = Replay(settings)
    tap = EvalTap(settings) if settings.evaluation_enabled else None
    written: dict[str, int] = {}
    with ExitStack() as stack:
        files: dict[str, IO[bytes]] = {}

        def emit(outs: list[Out]) -> None:
            # per topic, one write of the joined records: order within a file is kept
            lines: dict[str, list[bytes]] = {}
            for out in outs:
                mine = lines.get(out.topic)
                if mine is None:
                    mine = lines[out.topic] = []
                mine.append(out.value or b"null")
            for topic, values in lines.items():
                f = files.get(topic)
                if f is None:
                    name = DEFAULT_TOPICS[topic]
                    f = files[topic] = stack.enter_context(
                        open(out_dir / f"{name}.jsonl", "wb", buffering=1 << 20))
                f.write(b"\n".join(values))
                f.write(b"\n")
                written[topic] = written.get(topic, 0) + len(values)
            if tap is not None:
                for out in outs:
                    tap.take(out)

        bar = stack.enter_context(tqdm(total=total, unit="ev", desc="replay",
                                       disable=not progress, mininterval=0.5))
        preds, clicks_ = lines[1], lines[0]
        for start in range(0, total, batch_size):
            src = source[start:start + batch_size]
            idx = index[start:start + batch_size].tolist()
            values: list[bytes | None] = [preds[i] if s == 1 else clicks_[i]
                                          for s, i in zip(src.tolist(), idx, strict=True)]
            batch = InputBatch(src, offset[start:start + batch_size], [None] * len(values),
                               values)
            replay.run_batch(batch, emit)
            if tap is not None:
                emit(tap.advance(replay.users.label_watermark_ms()))
            bar.update(len(values))
        replay.end_of_input(emit)
        if tap is not None:
            emit(tap.finish())
    return ReplaySummary(total, written, time.perf_counter() - t0)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL output file."""
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]
