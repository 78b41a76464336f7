"""The evaluator: matured labels and examples in, every evaluation record out.

Maturity: a final label (or training example) is held until the global label
watermark ``T`` passes its ``prediction_ts`` (``T > prediction_ts``); then all held
records below ``T`` are applied in ``(prediction_ts, prediction_id, label_version,
labels before examples)`` order. Non-final records are ignored; a repeated
``(prediction_id, label_version)`` is dropped (remembered until ``T`` is
``dedupe_horizon_ms`` past it; an older record is dropped as ``too_late``).

Invariances, given the caller's contract (every label with ``prediction_ts < T`` is
added before ``advance(T)``): the records of ``advance(T)`` depend only on the set of
records added with ``prediction_ts < T``, not on their arrival order nor on how many
advances led to ``T``. That holds because every time-dependent rule (windows, the
always-valid p-value, ADWIN, triggers) is evaluated per applied label, never per
advance, and :meth:`Evaluator.advance` returns a snapshot of the state (every model,
pair and drift subject, the latest trigger of each model), not the changes since the
previous call. A record that breaks the contract (``prediction_ts < T`` when added,
but within the dedupe horizon) is still applied, at the next advance, and counted as
``late``. Repeats are assumed identical (freshet's outputs are): of two different
records with one ``(prediction_id, label_version)``, the first to arrive wins.

The state serializes to bytes (:meth:`Evaluator.to_bytes`, a pickle: restore only
bytes this process family wrote) and restores to an evaluator that continues exactly
as if it had never stopped.
"""

from __future__ import annotations

import heapq
import pickle
from typing import Any, Literal

from evaluation.comparison import PairState, comparison_record, pair_key
from evaluation.config import EvalConfig
from evaluation.drift import DriftMonitor
from evaluation.metrics import ModelMetrics
from evaluation.records import EvalOutput, ExampleEvent, LabelEvent, parse_example, parse_label
from evaluation.routing import routing_record
from evaluation.stats import log_loss_term
from evaluation.triggers import TriggerState

#: the ids of records already seen are kept (and expire) per this much prediction_ts
_SEEN_BUCKET_MS = 60_000

AddStatus = Literal["pending", "late", "not_final", "duplicate", "too_late"]

_MAGIC = b"freshet-evaluator\x00v1\x00"
_LABEL, _EXAMPLE = 0, 1  # labels of a prediction are applied before its example


class Evaluator:
    """Online evaluation of every model from matured labels (see the module docstring).

    >>> ev = Evaluator()
    >>> base = {"request_id": "r", "user_id": "u", "item_id": "i", "label_version": 1,
    ...         "final": True, "kind": "negative"}
    >>> for n, (m, s, y) in enumerate([("a", 0.2, 0), ("a", 0.9, 1), ("b", 0.4, 0)]):
    ...     _ = ev.add_label({**base, "prediction_id": f"p{n}", "model_id": m, "score": s,
    ...                       "label": y, "prediction_ts": 1_000 + n})
    >>> out = ev.advance(1_002)   # p2 (ts 1002) is not matured yet
    >>> sorted({o.topic for o in out})
    ['drift', 'model-metrics', 'model-routing']
    >>> [(o.record["window"], o.record["impressions"], o.record["auc"]) for o in out
    ...  if o.topic == "model-metrics"]
    [('all', 2, 1.0), ('1h', 2, 1.0), ('24h', 2, 1.0)]
    >>> Evaluator.from_bytes(ev.to_bytes()).advance(1_002) == out
    True
    """

    def __init__(self, config: EvalConfig | None = None,
                 reference_examples: list[dict[str, Any]] | None = None) -> None:
        self.config = config if config is not None else EvalConfig()
        self.watermark_ms: int | None = None
        self._pending: list[tuple[int, str, int, int, LabelEvent | ExampleEvent]] = []
        # the ids of records held or applied, per minute of prediction_ts: one short
        # string each (~120 B; a tuple in a set plus a heap entry took ~400 B), and a
        # minute expires whole once the horizon has passed its end
        self._seen: dict[int, set[str]] = {}
        self.models: dict[str, ModelMetrics] = {}
        self.pairs: dict[str, PairState] = {}
        self.drift = DriftMonitor(self.config.drift, reference_examples)
        self.triggers: dict[str, TriggerState] = {}
        self.counters = {"labels_applied": 0, "examples_applied": 0, "not_final": 0,
                         "duplicates": 0, "too_late": 0, "late": 0}

    # -- input -------------------------------------------------------------------------

    def _hold(self, rank: int, ev: LabelEvent | ExampleEvent) -> AddStatus:
        t = self.watermark_ms
        if t is not None and ev.prediction_ts < t - self.config.dedupe_horizon_ms:
            self.counters["too_late"] += 1
            return "too_late"
        key = f"{rank}:{ev.label_version}:{ev.prediction_id}"
        seen = self._seen.setdefault(ev.prediction_ts // _SEEN_BUCKET_MS, set())
        if key in seen:
            self.counters["duplicates"] += 1
            return "duplicate"
        seen.add(key)
        heapq.heappush(self._pending, (ev.prediction_ts, ev.prediction_id, ev.label_version,
                                       rank, ev))
        if t is not None and ev.prediction_ts < t:
            self.counters["late"] += 1
            return "late"
        return "pending"

    def add_label(self, record: dict[str, Any]) -> AddStatus:
        """Hold one ``labels`` record until it matures; its fate.

        Raises ValueError (naming the field) for a record that breaks the contract.

        >>> rec = {"prediction_id": "p", "label_version": 1, "model_id": "m",
        ...        "score": 0.5, "label": 0, "prediction_ts": 5, "final": True}
        >>> ev = Evaluator(); ev.add_label(rec), ev.add_label(rec)
        ('pending', 'duplicate')
        >>> ev.add_label({**rec, "final": False})
        'not_final'
        """
        ev = parse_label(record)
        if ev is None:
            self.counters["not_final"] += 1
            return "not_final"
        return self._hold(_LABEL, ev)

    def add_training_example(self, record: dict[str, Any]) -> AddStatus:
        """Hold one ``training-examples`` record until it matures (feeds feature drift).

        >>> rec = {"prediction_id": "p", "label_version": 1, "model_id": "m",
        ...        "score": 0.5, "label": 0, "prediction_ts": 5, "final": True}
        >>> Evaluator().add_training_example(rec)
        'pending'
        """
        ev = parse_example(record)
        if ev is None:
            self.counters["not_final"] += 1
            return "not_final"
        return self._hold(_EXAMPLE, ev)

    # -- maturing ----------------------------------------------------------------------

    def _apply_label(self, ev: LabelEvent) -> None:
        loss = log_loss_term(ev.score, ev.label)
        mm = self.models.get(ev.model_id)
        if mm is None:
            mm = self.models[ev.model_id] = ModelMetrics(ev.model_id, self.config.metrics)
            self.triggers[ev.model_id] = TriggerState()
        mm.add(ev.prediction_ts, ev.score, ev.label, loss, served=ev.served)
        self.drift.on_label(ev.model_id, ev.score, loss, ev.prediction_ts)
        tau2 = self.config.comparison.msprt_tau2
        for other_id, other in self.models.items():
            if other_id == ev.model_id:
                continue
            key = pair_key(ev.model_id, other_id)
            state = self.pairs.get(key)
            if state is None:
                state = self.pairs[key] = PairState()
            a, b = (mm, other) if ev.model_id < other_id else (other, mm)
            state.update(a, b, tau2)
        self.triggers[ev.model_id].on_label(
            ev.model_id, ev.prediction_ts, ev.score, ev.label, loss, self.config.triggers,
            self.drift, shadow=mm.shadow)
        self.counters["labels_applied"] += 1

    def mature(self, label_watermark_ms: int) -> bool:
        """Apply every held record with ``prediction_ts < label_watermark_ms``, no output.

        False (and nothing done) for a watermark lower than the current one.

        >>> ev = Evaluator(); ev.mature(10), ev.mature(5), ev.watermark_ms
        (True, False, 10)
        """
        if isinstance(label_watermark_ms, bool) or not isinstance(label_watermark_ms, int):
            raise ValueError(f"label_watermark_ms must be an integer, got {label_watermark_ms!r}")
        if self.watermark_ms is not None and label_watermark_ms < self.watermark_ms:
            return False
        self.watermark_ms = label_watermark_ms
        run: list[LabelEvent | ExampleEvent] = []
        while self._pending and self._pending[0][0] < label_watermark_ms:
            run.append(heapq.heappop(self._pending)[4])
        # the examples' PSI windows slide all at once; labels between them see the
        # drifted set as it was at their place (ExamplePlan)
        plan = self.drift.plan_examples([ev for ev in run if isinstance(ev, ExampleEvent)])
        applied = 0
        for ev in run:
            if isinstance(ev, LabelEvent):
                self._apply_label(ev)
            else:
                plan.applied(applied)
                applied += 1
        plan.done()
        self.counters["examples_applied"] += applied
        # a minute whose every prediction_ts is below the horizon: a record there is
        # too late (checked before the ids), so its ids are no longer needed
        bound = (label_watermark_ms - self.config.dedupe_horizon_ms) // _SEEN_BUCKET_MS
        for bucket in [b for b in self._seen if b < bound]:
            del self._seen[bucket]
        return True

    def advance(self, label_watermark_ms: int) -> list[EvalOutput]:
        """:meth:`mature` to ``label_watermark_ms``, then every record of the state.

        A watermark lower than the current one is ignored (returns ``[]``).

        >>> ev = Evaluator(); ev.advance(10), ev.advance(5), ev.watermark_ms
        ([], [], 10)
        """
        return self.outputs() if self.mature(label_watermark_ms) else []

    # -- output ------------------------------------------------------------------------

    def outputs(self) -> list[EvalOutput]:
        """Every record of the current state, at the current label watermark.

        >>> Evaluator().outputs()
        []
        """
        t = self.watermark_ms
        if t is None:
            return []
        out: list[EvalOutput] = []
        models = sorted(self.models)
        for m in models:
            out.extend(EvalOutput("model-metrics", m, r) for r in self.models[m].records(t))
        for i, a in enumerate(models):
            for b in models[i + 1:]:
                state = self.pairs.get(pair_key(a, b)) or PairState()
                out.append(EvalOutput("model-comparisons", pair_key(a, b), comparison_record(
                    self.models[a], self.models[b], state, self.config.comparison, t)))
        served = {m: (mm.clicks, mm.impressions) for m, mm in self.models.items()
                  if not mm.shadow}
        if served:
            out.append(EvalOutput("model-routing", "routing",
                                  routing_record(served, self.config.routing, t)))
        out.extend(EvalOutput("drift", key, rec) for key, rec in self.drift.records(t))
        for m in models:
            trig = self.triggers[m]
            if trig.last is not None:
                out.append(EvalOutput("retrain-triggers", m, {
                    **trig.last, "history": list(trig.history), "label_watermark_ms": t}))
        return out

    # -- durability --------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole state (config included) as bytes, for durable storage.

        >>> Evaluator.from_bytes(Evaluator().to_bytes()).watermark_ms is None
        True
        """
        return _MAGIC + pickle.dumps(self.__dict__, protocol=5)

    @classmethod
    def from_bytes(cls, data: bytes, config: EvalConfig | None = None) -> Evaluator:
        """An evaluator restored from :meth:`to_bytes`: it continues as if never stopped.

        With ``config``, the stored state must have been made with an equal one (a
        state is only meaningful under the settings that built it).

        >>> Evaluator.from_bytes(b"junk")
        Traceback (most recent call last):
        ...
        ValueError: data is not a serialized Evaluator state
        >>> from evaluation.config import RoutingConfig
        >>> Evaluator.from_bytes(Evaluator().to_bytes(), EvalConfig(routing=RoutingConfig(seed=1)))
        Traceback (most recent call last):
        ...
        ValueError: config differs from the one the stored state was made with
        """
        if not data.startswith(_MAGIC):
            raise ValueError("data is not a serialized Evaluator state")
        obj = cls.__new__(cls)
        state = pickle.loads(data[len(_MAGIC):])
        if "_seen_order" in state:  # written before the ids were kept per minute
            seen: dict[int, set[str]] = {}
            for ts, rank, pid, version in state.pop("_seen_order"):
                seen.setdefault(ts // _SEEN_BUCKET_MS, set()).add(f"{rank}:{version}:{pid}")
            state["_seen"] = seen
        obj.__dict__.update(state)
        if config is not None and config != obj.config:
            raise ValueError("config differs from the one the stored state was made with")
        return obj
