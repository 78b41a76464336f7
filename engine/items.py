"""One item partition: item features behind the items repartition topic.

User partitions forward every accepted event to the partition of its ``item_id``
(frames of :mod:`engine.frames`, one per user partition per batch). An
:class:`ItemPartition` applies them to its :class:`~features.table.FeatureTable`,
whose provenance is (input topic, origin partition): a repartition partition merges
events of every origin, and each origin's offsets grow on their own. For every
forwarded prediction it reads the item's features as of that prediction and sends
them back to the prediction's user partition (``item_snapshots``) for its training
example: one frame per user partition per batch.

Each forward frame carries its origin's watermark; the item side's watermark (for
stores that use one) is the minimum over all origins, unknown until every origin
has spoken.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from engine import frames
from engine.records import META_KEY, Delta, Out, Result, dead_letter
from engine.users import SOURCES, Counters, split_frames
from events.contracts import MAX_ID_LEN, MAX_TS_MS, MIN_TS_MS
from features.batch import CLICKS, NONE, PREDICTIONS
from features.featureset import FeatureSet
from features.records import RecordEncoder
from features.table import FeatureTable

I64 = npt.NDArray[np.int64]

#: The columns of a forward frame.
FORWARD_COLUMNS: dict[str, frames.Kind] = {
    "source": "i8", "offset": "i64", "ts": "i64", "item_id": "str", "user_id": "str",
    "prediction_id": "str",
}


class _Meta(msgspec.Struct):
    origins: dict[str, int]


_encode_meta = msgspec.json.Encoder().encode
_decode_meta = msgspec.json.Decoder(_Meta).decode


class ItemPartition:
    """The item features of one repartition partition (see the module doc)."""

    def __init__(self, partition: int, items: FeatureSet, partitions: int, snapshots: bool,
                 counters: Counters, topic: str = "items_repartition",
                 changelog: bool = True) -> None:
        self.partition = partition
        self.changelog = changelog
        self.items = items
        self.partitions = partitions
        self.snapshots = snapshots
        self.counters = counters
        self.topic = topic
        provenances = [f"{s}:{o}" for s in SOURCES for o in range(partitions)]
        self.table = FeatureTable(items, provenances=len(provenances))
        self.encoder = RecordEncoder(items, provenances)
        #: the latest watermark each origin partition sent
        self.origins: dict[int, int] = {}

    def watermark_ms(self) -> int | None:
        """The oldest event time any origin can still forward (None: not every one known)."""
        if len(self.origins) < self.partitions:
            return None
        return min(self.origins.values())

    def process(self, records: Sequence[tuple[int, bytes | None]],
                keys: Sequence[bytes | None] | None = None) -> Result:
        """Apply forwarded frames ((offset, value) of the repartition topic), in order;
        ``keys`` (the records' keys) only go into dead letters."""
        result = Result()
        good: list[frames.Frame] = []
        wms: list[int] = []
        for i, (offset, raw) in enumerate(records):
            try:
                frame = frames.decode(raw, FORWARD_COLUMNS)
                origin = _check_forward(frame, self.partitions)
            except frames.FrameError as exc:
                self.counters.dead_letters += 1
                result.outputs.append(dead_letter(self.topic, "items_repartition",
                                                  self.partition, offset,
                                                  None if keys is None else keys[i], raw,
                                                  f"not a forward frame: {exc}"))
                continue
            wm = self.watermark_ms()
            wms.extend([NONE if wm is None else wm] * len(frame))
            good.append(frame)
            sent = frame.meta.get("wm")
            if sent is not None and sent > self.origins.get(origin, sent - 1):
                self.origins[origin] = sent
        if not good:
            return result
        cols: dict[str, Any] = frames.concat(good, FORWARD_COLUMNS)
        origin_col = np.concatenate([np.full(len(f), int(f.meta["origin"]), dtype=np.int64)
                                     for f in good])
        self._apply(cols, origin_col, np.array(wms, dtype=np.int64), result)
        result.deltas.append(Delta("item", self.partition, META_KEY, _encode_meta(
            _Meta({str(k): v for k, v in sorted(self.origins.items())}))))
        return result

    def _apply(self, cols: dict[str, Any], origin: I64, wm: I64, result: Result) -> None:
        source = cols["source"].astype(np.int8)
        items: list[str] = cols["item_id"]
        rows = self.table.rows_for(items)
        prov = source.astype(np.int64) * self.partitions + origin
        is_pred = source == PREDICTIONS
        fields: dict[str, Any] = {}
        if "item_id" in self.items.fields:
            fields["item_id"] = np.array(items, dtype=object)
        if "user_id" in self.items.fields:
            fields["user_id"] = np.array(cols["user_id"], dtype=object)
        out = self.table.apply(rows, cols["ts"], source, prov, cols["offset"],
                               points=is_pred if self.snapshots else None, watermark=wm,
                               fields=fields)
        self.counters.duplicates += out.duplicates
        ids = self.table.ids
        touched = [ids[r] for r in out.rows.tolist()]
        records = self.encoder.records(touched, out.as_of, out.values, out.prov, self.partition)
        result.outputs.extend(Out("features_item", key.encode(), value)
                              for key, value in zip(touched, records, strict=True))
        self.counters.published("item", len(touched))
        if self.changelog:
            result.deltas.extend(Delta("item", self.partition, key.encode(), value)
                                 for key, value in zip(touched, self.table.encode(out.rows),
                                                       strict=True))
        if self.snapshots and len(out.points):
            snaps = self.encoder.snapshots(out.point_as_of, out.point_values, out.point_prov,
                                           self.partition)
            back = origin[out.points]
            pids = cols["prediction_id"]
            points = out.points.tolist()
            for target in np.unique(back).tolist():
                sel = np.flatnonzero(back == target).tolist()
                frame = frames.Frame({"prediction_id": [pids[points[i]] for i in sel],
                                      "snapshot": [snaps[i] for i in sel]})
                for value in split_frames(frame):
                    result.outputs.append(Out("item_snapshots", None, value, target))

    def restore(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Rebuild from the item changelog's latest value per key (before any input)."""
        keys, values = [], []
        for key, value in records:
            if key == META_KEY:
                self.origins = {int(k): v for k, v in _decode_meta(value).origins.items()}
            else:
                keys.append(key.decode())
                values.append(value)
        self.table.load(keys, values)


def _check_forward(frame: frames.Frame, partitions: int) -> int:
    """The origin partition of a forward frame, or :class:`~engine.frames.FrameError`.

    A user partition only forwards events it accepted (README, topic contracts), so a
    frame with anything else is not one of ours: it is refused whole, before any of
    its rows touches state.
    """
    origin, wm = frame.meta.get("origin"), frame.meta.get("wm")
    if isinstance(origin, bool) or not isinstance(origin, int) or not 0 <= origin < partitions:
        raise frames.FrameError(f"origin {origin!r} is not a partition in [0, {partitions})")
    if isinstance(wm, bool) or not isinstance(wm, int | None):
        raise frames.FrameError(f"watermark {wm!r} is not an integer")
    cols = frame.columns
    source, offset, ts = cols["source"], cols["offset"], cols["ts"]
    if not np.isin(source, (CLICKS, PREDICTIONS)).all():
        raise frames.FrameError("a source is neither clicks (0) nor predictions (1)")
    if (offset < 0).any():
        raise frames.FrameError("a negative offset")
    if ((ts < MIN_TS_MS) | (ts >= MAX_TS_MS)).any():
        raise frames.FrameError(f"an event time outside [{MIN_TS_MS}, {MAX_TS_MS})")
    for name in ("item_id", "user_id"):
        if not all(0 < len(x) <= MAX_ID_LEN for x in cols[name]):
            raise frames.FrameError(f"an empty {name} or one longer than {MAX_ID_LEN}")
    pids, is_pred = cols["prediction_id"], (source == PREDICTIONS).tolist()
    if not all(0 < len(p) <= MAX_ID_LEN if pred else not p
               for p, pred in zip(pids, is_pred, strict=True)):
        raise frames.FrameError("a prediction without its prediction_id (or a click with one)")
    return origin
