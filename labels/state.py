"""What one partition's label engine holds, and the hooks its parts provide one another.

:class:`~labels.engine.LabelEngine` is one class assembled from parts, one concept a
module: the label state machine (:mod:`labels.engine`), clicks (:mod:`labels.clicks`),
shadow twins (:mod:`labels.shadows`) and the changelog (:mod:`labels.changelog`). Each
part is a mixin over :class:`EngineState`: the state they share is made here, and a part
calls another part's methods through the abstract hooks declared here, so no part
imports another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from events.contracts import Click
from labels.config import MODE_EARLY_NEGATIVE, MODE_OBSERVE_THEN_CORRECT, LabelConfig
from labels.delays import DelayStats
from labels.pending import DeadlineWheel, PendingTable

I64 = npt.NDArray[np.int64]

OutputKind = Literal["label", "training_example", "late_click", "extra_click", "unattributed",
                     "duplicate_prediction"]

#: The kind of a final negative record (no click in the window), by mode.
CLOSE_KIND = {"wait": "negative", MODE_EARLY_NEGATIVE: "negative",
              MODE_OBSERVE_THEN_CORRECT: "real_negative"}
#: The kind of the final positive record a click in the window makes, by mode (in
#: ``observe_then_correct``: ``observed_positive`` or ``late_positive``, see the engine).
POSITIVE_KIND = {"wait": "positive", MODE_EARLY_NEGATIVE: "late_positive"}


class LabelOutput(NamedTuple):
    """One record for the caller to publish (or count), by kind; ``key`` is its record key."""

    kind: OutputKind
    key: str
    value: bytes


@dataclass(slots=True)
class HeldClick:
    """A click waiting for the watermark to reach ``due_ms``, with its JSON as it came."""

    click: Click
    json: bytes
    due_ms: int


class EngineState(ABC):
    """The state of a :class:`~labels.engine.LabelEngine` and the hooks of its parts."""

    def __init__(self, config: LabelConfig, item_snapshots: bool = True,
                 bucket_ms: int = 1_000, changelog: bool = True,
                 counts: dict[str, int] | None = None) -> None:
        self.config = config
        self.item_snapshots = item_snapshots
        #: whether changes are kept for :meth:`take_deltas` (replay needs no changelog)
        self.changelog = changelog
        self.table = PendingTable()
        self.wheel = DeadlineWheel(bucket_ms)
        self.delays = DelayStats()
        #: outputs by kind (shared with the caller's counters when given)
        self.counts: dict[str, int] = {} if counts is None else counts
        self._eager = config.eager_clicks and config.mode != MODE_OBSERVE_THEN_CORRECT
        self._remember = config.window_ms + config.late_horizon_ms
        self._held: dict[int, HeldClick] = {}
        self._heap: list[tuple[int, int, str, int]] = []  # (due, ts, tiebreak, seq)
        self._held_by_pid: dict[str, set[int]] = {}
        self._held_by_request: dict[tuple[str, str, str], set[int]] = {}
        self._next_held = 0
        self._outputs: list[LabelOutput] = []
        self._dirty: set[int] = set()
        self._forgotten: list[str] = []
        self._held_dirty: set[int] = set()
        self._meta_dirty = False
        #: rows past their forget deadline whose final example still waits for its item
        #: snapshot: forgotten once the example is out, never before (nothing is lost)
        self._forget_after_example: set[int] = set()
        #: served row -> the shadow rows following its labels (linked, not final yet)
        self._followers: dict[int, list[int]] = {}
        #: while due clicks are walked: positives made, emitted together (row, at, delay)
        #: before any other output, so the records come out in the same order
        self._positives: list[tuple[int, int, int]] = []
        self._batch_positives = False

    # -- outputs --------------------------------------------------------------------

    def _out(self, kind: OutputKind, key: str, value: bytes) -> None:
        if self._positives:
            self._flush_positives()
        self._outputs.append(LabelOutput(kind, key, value))

    def take_outputs(self) -> list[LabelOutput]:
        """The records produced since the last call, in the order they were made."""
        out, self._outputs = self._outputs, []
        counts = self.counts
        for kind in [o.kind for o in out]:
            counts[kind] = counts.get(kind, 0) + 1
        return out

    # -- hooks: what each part provides the others ----------------------------------

    @abstractmethod
    def _schedule(self, rows: I64) -> None:
        """Set each row's next deadline from its state (:mod:`labels.engine`)."""

    @abstractmethod
    def _observe(self, rows: I64, reschedule: bool = True) -> None:
        """Apply the rows' observation deadline (:mod:`labels.engine`)."""

    @abstractmethod
    def _close(self, rows: I64) -> None:
        """Apply the rows' close deadline: final negative (:mod:`labels.engine`)."""

    @abstractmethod
    def _emit_bulk(self, rows: I64, label: int, kind: str, *, final: bool, label_ts: I64,
                   delay: I64 | None = None) -> None:
        """One label record (and example if due) per row (:mod:`labels.engine`)."""

    @abstractmethod
    def _flush_positives(self) -> None:
        """Emit the positives held back while due clicks were walked (:mod:`labels.engine`)."""

    @abstractmethod
    def _push(self, seq: int) -> None:
        """Put a held click on the due heap (:mod:`labels.clicks`)."""

    @abstractmethod
    def _index_held(self, seq: int, click: Click) -> None:
        """Index a held click by its explicit ids (:mod:`labels.clicks`)."""

    @abstractmethod
    def _served_of(self, shadow: int, at_ms: int) -> int | None:
        """The served row a click naming the shadow's request and item would go to
        (:mod:`labels.shadows`)."""

    @abstractmethod
    def _relink(self, rows: I64) -> None:
        """Rebuild the followers of restored linked shadows (:mod:`labels.shadows`)."""
