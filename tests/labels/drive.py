"""Drive a LabelEngine one event (or one batch) at a time, with records as dicts.

The label tests state the rules as calls "a prediction arrives with watermark W",
"a click arrives", "the watermark reaches W"; :class:`Labels` maps each to the
engine the way the stream layer does (predictions of a batch first, then its clicks
in arrival order, then the watermark), and decodes what comes out. With
``roundtrip`` the engine is rebuilt from its own changelog after every call, as a
restarted worker would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from events.contracts import Click, Prediction
from labels.config import LabelConfig
from labels.engine import LabelEngine
from labels.pending import PredictionColumns


@dataclass(frozen=True)
class Out:
    """One output, decoded: kind, record key and record."""

    kind: str
    key: str
    record: dict[str, Any]


def prediction_columns(preds: Sequence[Prediction], seqs: Sequence[int],
                       snapshots: Sequence[dict[str, Any] | None]) -> PredictionColumns:
    return PredictionColumns(
        [p.prediction_id for p in preds], [p.request_id for p in preds],
        [p.user_id for p in preds], [p.item_id for p in preds], [p.model_id for p in preds],
        np.array([p.score for p in preds], dtype=np.float64),
        np.array([p.ts for p in preds], dtype=np.int64),
        [orjson.dumps(p.to_dict())[1:-1] for p in preds],
        [None if s is None else orjson.dumps(s) for s in snapshots],
        np.array(seqs, dtype=np.int64),
        np.array([p.served is not False for p in preds], dtype=np.bool_))


class Labels:
    """A LabelEngine with a per-call API (see the module doc)."""

    def __init__(self, config: LabelConfig, roundtrip: bool = False) -> None:
        self.config = config
        self.roundtrip = roundtrip
        self.engine = LabelEngine(config, item_snapshots=False)
        self.seq = 0
        self.changelog: dict[bytes, bytes] = {}

    def _after(self, watermark_ms: int | None) -> list[Out]:
        if watermark_ms is not None:
            self.engine.advance(watermark_ms)
        out = [Out(o.kind, o.key, orjson.loads(o.value)) for o in self.engine.take_outputs()]
        for key, value in self.engine.take_deltas():
            if value is None:
                self.changelog.pop(key, None)
            else:
                self.changelog[key] = value
        if self.roundtrip:
            again = LabelEngine(self.config, item_snapshots=False)
            again.restore(self.changelog.items())
            again.counts = self.engine.counts
            self.engine = again
        return out

    def batch(self, events: Sequence[Prediction | Click], watermarks: Sequence[int | None],
              end_watermark: int | None, snapshot: Any = None) -> list[Out]:
        """Feed a batch: its predictions, then its clicks in order, then the watermark."""
        seqs = list(range(self.seq, self.seq + len(events)))
        self.seq += len(events)
        preds = [(e, s) for e, s in zip(events, seqs, strict=True) if isinstance(e, Prediction)]
        if preds:
            snaps = [snapshot(p) if callable(snapshot) else snapshot for p, _ in preds]
            self.engine.add_predictions(prediction_columns([p for p, _ in preds],
                                                           [s for _, s in preds], snaps))
        for event, seq, wm in zip(events, seqs, watermarks, strict=True):
            if isinstance(event, Click):
                self.engine.add_click(event, orjson.dumps(event.to_dict()), seq, wm)
        return self._after(end_watermark)

    def on_prediction(self, pred: Prediction, watermark_ms: int | None,
                      snapshot: dict[str, Any] | None = None) -> list[Out]:
        return self.batch([pred], [watermark_ms], watermark_ms, snapshot)

    def on_click(self, click: Click, watermark_ms: int | None) -> list[Out]:
        return self.batch([click], [watermark_ms], watermark_ms)

    def on_watermark(self, watermark_ms: int) -> list[Out]:
        return self._after(watermark_ms)

    def next_deadline_ms(self) -> int | None:
        return self.engine.next_due_ms()

    def earliest_open_ts_ms(self) -> int | None:
        return self.engine.earliest_open_ts()

    def is_empty(self) -> bool:
        return self.engine.is_empty()
