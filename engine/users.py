"""One user partition: decode, watermark, user features, labels, items forwarding.

Both input topics are keyed by ``user_id`` and co-partitioned, so partition ``p`` of
``clicks`` and of ``predictions`` (and of the item snapshots coming back) is one unit
of state: a :class:`UserPartition`. A batch goes through it as columns:

1. decode every record (:mod:`events.decode`); what cannot be used goes to
   ``dead-letters`` with its reason;
2. the partition watermark after each event (the minimum over the two inputs of their
   max event time, minus the allowed lateness; never backwards) and lateness: an
   event behind the watermark when it arrives is dead-lettered;
3. user features (:class:`~features.table.FeatureTable`), read at every prediction
   for its training example and at each touched key for its record;
4. labels (:class:`~labels.engine.LabelEngine`): the batch's predictions, then its
   clicks in order, then the watermark;
5. every accepted event forwarded to the item side, one frame per item partition.

Nothing here reads the clock: the wall time for idle inputs is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from engine import frames
from engine.records import MAX_FRAME_BYTES, META_KEY, Delta, InputBatch, Out, Result, dead_letter
from events.contracts import ContractError
from events.decode import ClickIn, PredictionIn, decode_click_in, decode_prediction_in
from events.decode import encode as encode_json
from features.batch import CLICKS, NONE, PREDICTIONS
from features.featureset import FeatureSet
from features.records import RecordEncoder
from features.table import FeatureTable
from labels.config import LabelConfig
from labels.engine import LabelEngine
from labels.pending import PredictionColumns

I64 = npt.NDArray[np.int64]

SOURCES: Final = ("clicks", "predictions")
#: The columns of an item snapshot frame (the item side's answer to forwarded predictions).
SNAPSHOT_COLUMNS: Final[dict[str, frames.Kind]] = {"prediction_id": "str", "snapshot": "bytes"}
#: Machine output kind -> logical topic (None: counted, not published).
LABEL_ROUTES: Final[dict[str, str | None]] = {
    "label": "labels", "training_example": "training_examples", "late_click": "late_clicks",
    "unattributed": "unattributed_clicks", "extra_click": None, "duplicate_prediction": None,
}


class _Meta(msgspec.Struct):
    max_ms: list[int | None]
    watermark_ms: int | None


_encode_meta = msgspec.json.Encoder().encode
_decode_meta = msgspec.json.Decoder(_Meta).decode


@dataclass(slots=True)
class Counters:
    """Running totals of one worker (or replay), shown as metrics."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    dead_letters: int = 0
    late_events: int = 0
    duplicates: int = 0
    features_published: dict[str, int] = field(default_factory=dict)
    #: label engine outputs by kind (label, training_example, extra_click, ...)
    labels: dict[str, int] = field(default_factory=dict)

    def published(self, entity: str, n: int) -> None:
        """Count ``n`` feature records of ``entity``."""
        self.features_published[entity] = self.features_published.get(entity, 0) + n


@dataclass(slots=True)
class _Decoded:
    index: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    user_id: list[str] = field(default_factory=list)
    item_id: list[str] = field(default_factory=list)
    events: list[PredictionIn | ClickIn] = field(default_factory=list)


class UserPartition:
    """The state and processing of one user partition (see the module doc).

    ``topics`` are the broker names of (clicks, predictions), for dead letters;
    ``item_partition`` maps an item id to its item partition (None: no item side).
    """

    def __init__(self, partition: int, users: FeatureSet, labels: LabelConfig | None,
                 allowed_lateness_ms: int, item_partition: Callable[[str], int] | None,
                 counters: Counters, topics: tuple[str, str] = SOURCES,
                 changelog: bool = True, check_keys: bool = False) -> None:
        self.partition = partition
        #: dead-letter records whose Kafka key is not their user_id (live inputs)
        self.check_keys = check_keys
        self.users = users
        self.changelog = changelog
        self.table = FeatureTable(users, provenances=2)
        self.encoder = RecordEncoder(users, SOURCES)
        self.labels = None if labels is None else LabelEngine(
            labels, item_snapshots=item_partition is not None, changelog=changelog,
            counts=counters.labels)
        self.lateness_ms = allowed_lateness_ms
        self.item_partition = item_partition
        self.counters = counters
        self.topics = topics
        #: per source, the max event time seen (NONE: none yet); the watermark
        self.max_ms = [NONE, NONE]
        self.watermark_ms = NONE
        #: wall-clock ms when each source's max event time last grew (idle detection)
        self.progress_wall_ms: list[int | None] = [None, None]
        self.last_progress_wall_ms: int | None = None
        self._seq = 0
        self._item_of: dict[str, int] = {}

    # -- batches --------------------------------------------------------------------

    def process(self, batch: InputBatch, now_wall_ms: int = 0) -> Result:
        """Run one batch of input records (see the module doc)."""
        result = Result()
        dec = self._decode(batch, result)
        n = len(dec.index)
        for src in (CLICKS, PREDICTIONS):
            self.counters.events[SOURCES[src]] += int(np.count_nonzero(batch.source == src))
        if n == 0:
            self._note_progress(now_wall_ms, grew=(False, False))
            return result
        source = np.array(dec.source, dtype=np.int8)
        ts = np.array(dec.ts, dtype=np.int64)
        wm_before, wm_after, late = self._watermarks(source, ts, now_wall_ms)
        if late.any():
            for j in np.flatnonzero(late).tolist():
                i = dec.index[j]
                self.counters.late_events += 1
                self._dead(result, batch, i, f"late event: ts {dec.ts[j]} is behind the "
                           f"watermark {int(wm_before[j])} "
                           f"(allowed lateness {self.lateness_ms} ms)")
        keep = np.flatnonzero(~late)
        self._features_and_labels(dec, keep, source, ts, wm_after, batch, result)
        if self.item_partition is not None:
            self._forward(dec, keep, source, ts, batch, result)
        result.deltas.append(self._meta_delta())
        return result

    def _decode(self, batch: InputBatch, result: Result) -> _Decoded:
        dec = _Decoded()
        for i, (src, value) in enumerate(zip(batch.source.tolist(), batch.values,
                                             strict=True)):
            try:
                event: PredictionIn | ClickIn = (decode_prediction_in(value) if src == PREDICTIONS
                                                 else decode_click_in(value))
            except ContractError as exc:
                self._dead(result, batch, i, exc.reason)
                continue
            if self.check_keys and batch.keys[i] != event.user_id.encode():
                self._dead(result, batch, i, _key_reason(batch.keys[i]))
                continue
            dec.index.append(i)
            dec.source.append(src)
            dec.ts.append(event.ts)
            dec.user_id.append(event.user_id)
            dec.item_id.append(event.item_id)
            dec.events.append(event)
        return dec

    def _dead(self, result: Result, batch: InputBatch, i: int, reason: str) -> None:
        src = int(batch.source[i])
        self.counters.dead_letters += 1
        result.outputs.append(dead_letter(self.topics[src], SOURCES[src], self.partition,
                                          int(batch.offset[i]), batch.keys[i],
                                          batch.values[i], reason))

    def _watermarks(self, source: npt.NDArray[np.int8], ts: I64,
                    now_wall_ms: int) -> tuple[I64, I64, npt.NDArray[np.bool_]]:
        """The watermark before and after each event, and which arrived behind it."""
        maxima = []
        grew = []
        for src in (CLICKS, PREDICTIONS):
            mine = np.where(source == src, ts, NONE)
            running = np.maximum(np.maximum.accumulate(mine), self.max_ms[src])
            grew.append(bool(running[-1] > self.max_ms[src]))
            maxima.append(running)
        known = (maxima[0] != NONE) & (maxima[1] != NONE)
        low = np.where(known, np.minimum(maxima[0], maxima[1]) - self.lateness_ms, NONE)
        after = np.maximum.accumulate(np.maximum(low, self.watermark_ms))
        before = np.concatenate(([self.watermark_ms], after[:-1]))
        late = (before != NONE) & (ts < before)
        self.max_ms = [int(maxima[0][-1]), int(maxima[1][-1])]
        self.watermark_ms = int(after[-1])
        self._note_progress(now_wall_ms, grew=(grew[0], grew[1]))
        return before, after, late

    def _note_progress(self, now_wall_ms: int, grew: tuple[bool, bool]) -> None:
        for src in (CLICKS, PREDICTIONS):
            if grew[src] or self.progress_wall_ms[src] is None:
                self.progress_wall_ms[src] = now_wall_ms
        if any(grew) or self.last_progress_wall_ms is None:
            self.last_progress_wall_ms = now_wall_ms

    def _features_and_labels(self, dec: _Decoded, keep: I64, source: npt.NDArray[np.int8],
                             ts: I64, wm_after: I64, batch: InputBatch,
                             result: Result) -> None:
        keep_l = keep.tolist()
        users = [dec.user_id[j] for j in keep_l]
        rows = self.table.rows_for(users)
        k_source = source[keep]
        is_pred = k_source == PREDICTIONS
        fields: dict[str, Any] = {}
        if "item_id" in self.users.fields:
            fields["item_id"] = np.array([dec.item_id[j] for j in keep_l], dtype=object)
        if "user_id" in self.users.fields:
            fields["user_id"] = np.array(users, dtype=object)
        offsets = batch.offset[np.array([dec.index[j] for j in keep_l], dtype=np.int64)]
        out = self.table.apply(rows, ts[keep], k_source, k_source.astype(np.int64), offsets,
                               points=is_pred if self.labels is not None else None,
                               watermark=wm_after[keep], fields=fields)
        self.counters.duplicates += out.duplicates
        ids = self.table.ids
        touched = [ids[r] for r in out.rows.tolist()]
        records = self.encoder.records(touched, out.as_of, out.values, out.prov, self.partition)
        result.outputs.extend(Out("features_user", key.encode(), value)
                              for key, value in zip(touched, records, strict=True))
        self.counters.published("user", len(touched))
        if self.changelog:
            result.deltas.extend(Delta("user", self.partition, key.encode(), value)
                                 for key, value in zip(touched, self.table.encode(out.rows),
                                                       strict=True))
        if self.labels is not None:
            snapshots = self.encoder.snapshots(out.point_as_of, out.point_values, out.point_prov,
                                               self.partition)
            by_point = dict(zip(out.points.tolist(), snapshots, strict=True))
            self._labels(dec, keep_l, by_point, wm_after, result)

    def _labels(self, dec: _Decoded, keep_l: list[int], snapshots: dict[int, bytes],
                wm_after: I64, result: Result) -> None:
        engine = self.labels
        if engine is None:
            return
        base = self._seq
        self._seq += len(dec.index)
        preds = [(k, j) for k, j in enumerate(keep_l) if dec.source[j] == PREDICTIONS]
        if preds:
            events = [dec.events[j] for _, j in preds]
            p_events: list[PredictionIn] = [e for e in events if isinstance(e, PredictionIn)]
            engine.add_predictions(PredictionColumns(
                [e.prediction_id for e in p_events], [e.request_id for e in p_events],
                [e.user_id for e in p_events], [e.item_id for e in p_events],
                [e.model_id for e in p_events],
                np.array([e.score for e in p_events], dtype=np.float64),
                np.array([e.ts for e in p_events], dtype=np.int64),
                [encode_json(e)[1:-1] for e in p_events],
                [snapshots.get(k) for k, _ in preds],
                np.array([base + j for _, j in preds], dtype=np.int64),
                np.array([e.served is not False for e in p_events], dtype=np.bool_)))
        for j in keep_l:
            event = dec.events[j]
            if isinstance(event, ClickIn):
                wm = int(wm_after[j])
                engine.add_click(event.to_click(), encode_json(event), base + j,
                                 None if wm == NONE else wm)
        if self.watermark_ms != NONE:
            engine.advance(self.watermark_ms)
        self._take_labels(result)

    def _take_labels(self, result: Result) -> None:
        engine = self.labels
        if engine is None:
            return
        routes, append = LABEL_ROUTES, result.outputs.append
        for kind, key, value in engine.take_outputs():
            topic = routes[kind]
            if topic is not None:
                append(Out(topic, key.encode(), value))
        # asked also without a changelog (replay): it then forgets what it recorded as
        # changed, which would otherwise grow with every prediction of a backfill
        deltas = engine.take_deltas()
        if deltas:
            result.deltas.extend(Delta("label", self.partition, key, value)
                                 for key, value in deltas)

    def _forward(self, dec: _Decoded, keep: I64, source: npt.NDArray[np.int8], ts: I64,
                 batch: InputBatch, result: Result) -> None:
        """Every accepted event to its item's partition: one frame per partition."""
        partition_of = self.item_partition
        if partition_of is None or len(keep) == 0:
            return
        cache = self._item_of
        keep_l = keep.tolist()
        items = [dec.item_id[j] for j in keep_l]
        targets = np.empty(len(items), dtype=np.int64)
        for i, item in enumerate(items):
            t = cache.get(item)
            if t is None:
                t = cache[item] = partition_of(item)
                if len(cache) > 1_000_000:
                    cache.clear()
            targets[i] = t
        offsets = batch.offset[np.array([dec.index[j] for j in keep_l], dtype=np.int64)]
        pids = [e.prediction_id if isinstance(e, PredictionIn) else ""
                for e in (dec.events[j] for j in keep_l)]
        users = [dec.user_id[j] for j in keep_l]
        meta = {"origin": self.partition,
                "wm": None if self.watermark_ms == NONE else self.watermark_ms}
        cols = {"source": source[keep], "offset": offsets, "ts": ts[keep],
                "item_id": items, "user_id": users, "prediction_id": pids}
        whole = frames.Frame(cols, meta)
        for target in np.unique(targets).tolist():
            part = frames.take(whole, np.flatnonzero(targets == target))
            for value in split_frames(part):
                result.outputs.append(Out("items_repartition", None, value, target))

    # -- item snapshots -------------------------------------------------------------

    def process_snapshots(self, records: Sequence[tuple[int, bytes | None]],
                          topic: str = "item_snapshots",
                          keys: Sequence[bytes | None] | None = None) -> Result:
        """Item features as of predictions, sent back by the item side ((offset, frame)s;
        ``keys``, the records' keys, only go into dead letters)."""
        result = Result()
        engine = self.labels
        for i, (offset, raw) in enumerate(records):
            try:
                frame = frames.decode(raw, SNAPSHOT_COLUMNS)
                pids, snaps = frame.columns["prediction_id"], frame.columns["snapshot"]
                _check_snapshots(snaps)
            except frames.FrameError as exc:
                self.counters.dead_letters += 1
                result.outputs.append(dead_letter(topic, "item_snapshots", self.partition,
                                                  offset, None if keys is None else keys[i],
                                                  raw,
                                                  f"not an item snapshot frame: {exc}"))
                continue
            if engine is not None:
                engine.add_item_snapshots(pids, snaps)
        self._take_labels(result)
        return result

    # -- time without input ---------------------------------------------------------

    def advance_idle(self, now_wall_ms: int, idle_ms: int,
                     caught_up: Callable[[str], bool]) -> Result:
        """Move the watermark past idle inputs with the wall clock; close due labels.

        An input whose max event time has not grown for ``idle_ms`` of wall time and
        that has nothing left to read (``caught_up(source)``) holds the watermark back no
        longer: it then follows the other input alone; when both are idle it advances
        with the wall time since the partition last made progress (never backwards).
        An input with unread records (a backlog, a restore) is never idle.
        """
        result = Result()
        last = self.last_progress_wall_ms
        if last is None:
            # nothing read since a restore: the idle clock starts now, so a restored
            # partition whose inputs stay quiet still closes its labels
            if self.max_ms[CLICKS] != NONE or self.max_ms[PREDICTIONS] != NONE:
                self._note_progress(now_wall_ms, grew=(False, False))
            return result
        active: list[int] = []
        seen: list[int] = []
        for src in (CLICKS, PREDICTIONS):
            max_ms = self.max_ms[src]
            if max_ms != NONE:
                seen.append(max_ms)
            if not caught_up(SOURCES[src]):
                self.progress_wall_ms[src] = self.last_progress_wall_ms = now_wall_ms
                if max_ms == NONE:
                    return result
                active.append(max_ms)
                continue
            quiet_since = self.progress_wall_ms[src]
            quiet_since = now_wall_ms if quiet_since is None else quiet_since
            if max_ms != NONE and now_wall_ms - quiet_since < idle_ms:
                active.append(max_ms)
        if not seen:
            return result
        if active:
            target = min(active) - self.lateness_ms
        elif now_wall_ms - last >= idle_ms:
            target = max(seen) - self.lateness_ms + (now_wall_ms - last)
        else:
            return result
        if target > self.watermark_ms:
            self.watermark_ms = target
            result.deltas.append(self._meta_delta())
            if self.labels is not None:
                self.labels.advance(target)
                self._take_labels(result)
        return result

    def end_of_input(self, watermark_ms: int) -> Result:
        """Move the watermark to ``watermark_ms`` (replay: +infinity); close due labels."""
        result = Result()
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        if self.labels is not None:
            self.labels.advance(self.watermark_ms)
            self._take_labels(result)
        return result

    # -- state ----------------------------------------------------------------------

    def _meta_delta(self) -> Delta:
        meta = _Meta([None if m == NONE else m for m in self.max_ms],
                     None if self.watermark_ms == NONE else self.watermark_ms)
        return Delta("user", self.partition, META_KEY, _encode_meta(meta))

    def restore(self, user_records: Sequence[tuple[bytes, bytes]],
                label_records: Sequence[tuple[bytes, bytes]]) -> None:
        """Rebuild from the changelogs' latest value per key (before any input)."""
        keys, values = [], []
        for key, value in user_records:
            if key == META_KEY:
                meta = _decode_meta(value)
                self.max_ms = [NONE if m is None else m for m in meta.max_ms]
                self.watermark_ms = NONE if meta.watermark_ms is None else meta.watermark_ms
            else:
                keys.append(key.decode())
                values.append(value)
        self.table.load(keys, values)
        if self.labels is not None:
            self.labels.restore(label_records)

    def label_watermark_ms(self) -> int | None:
        """Every prediction of this partition with ts below it has its final label."""
        if self.labels is None or self.watermark_ms == NONE:
            return None
        return self.labels.label_watermark(self.watermark_ms)


def split_frames(frame: frames.Frame, limit: int = MAX_FRAME_BYTES) -> list[bytes]:
    """``frame`` as few encoded frames as fit ``limit`` bytes each (halved until they do).

    >>> f = frames.Frame({"x": np.arange(100)})
    >>> [len(frames.decode(b)) for b in split_frames(f, limit=300)]
    [25, 25, 25, 25]
    """
    return frames.encode_split(frame, limit)


def _check_snapshots(snaps: Sequence[bytes]) -> None:
    """Every snapshot is a JSON object (it goes raw into a training example), or FrameError.

    >>> _check_snapshots([b'{"as_of_ts":1}', b"[1]"])
    Traceback (most recent call last):
    ...
    engine.frames.FrameError: snapshot 1 is not a JSON object
    """
    for i, snap in enumerate(snaps):
        try:
            ok = isinstance(orjson.loads(snap), dict)
        except orjson.JSONDecodeError:
            ok = False
        if not ok:
            raise frames.FrameError(f"snapshot {i} is not a JSON object")


def _key_reason(key: bytes | None) -> str:
    """Why a record's key makes it unusable (inputs are keyed by ``user_id``).

    >>> _key_reason(None)
    'null key: clicks and predictions must be keyed by their user_id'
    """
    if key is None:
        return "null key: clicks and predictions must be keyed by their user_id"
    shown = key[:64].decode("utf-8", "backslashreplace")
    return (f"key {shown!r} is not the record's user_id: clicks and predictions must be "
            "keyed by their user_id (so that a user's events share a partition)")
