"""Drift: PSI of features and scores against a reference, ADWIN on each model's log-loss.

PSI subjects: every flattened numeric feature of served training examples
(``logged.x``, ``user.clicks_1h``, ...) and ``score:<model_id>`` for each model's
matured labels. Reference: the values of the first ``reference_size`` matured served
examples (scores: the first ``reference_size`` matured labels of that model), or a
list of example records given up front (their features, and their scores per
``model_id``; a model absent from it uses its first labels). Bins: the reference's
``k / bins`` quantiles (``numpy.quantile``, linear), repeated edges merged, bin ``i``
= ``(edge[i-1], edge[i]]`` (first and last open-ended). Each bin's share is floored at
``epsilon``: ``PSI = sum (c - r) ln(c / r)`` with ``r = max(ref_count / ref_n, eps)``
and ``c = max(cur_count / cur_n, eps)`` over the last ``current_size`` values seen
after the reference (None until there are that many). A feature first seen after
the reference period has no reference and no PSI.

ADWIN (``river.drift.ADWIN(delta)``) is fed each matured label's log-loss term of its
model, in label order; its record is ``drifted`` when it detected a change within the
model's last ``current_size`` labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from evaluation.config import DriftConfig
from evaluation.psi import PsiSubject, psi, psi_term, quantile_edges, slide
from evaluation.records import SHARED_NAMES_MAX, ExampleEvent, FeatureVector, flatten_features
from events.contracts import SCHEMA_VERSION

# PsiSubject is named here too: checkpoints pickled before it moved refer to it here
__all__ = ["AdwinState", "DriftMonitor", "ExamplePlan", "PsiSubject", "psi", "psi_term",
           "quantile_edges"]


class AdwinState:
    """ADWIN on one model's per-label log-loss, with its detection bookkeeping.

    >>> st = AdwinState(0.002)
    >>> for i in range(600):
    ...     _ = st.update(0.1 if i < 300 else 2.0, i)
    >>> st.detections >= 1
    True
    """

    __slots__ = (
        "detections",
        "detector",
        "labels",
        "last_detection_label",
        "last_detection_ts",
    )

    def __init__(self, delta: float) -> None:
        # imported on first use: river (and scipy under it) take ~0.5 s to import, and
        # every process that validates settings imports this package
        from river.drift import ADWIN

        self.detector = ADWIN(delta=delta)  # type: ignore[no-untyped-call]
        self.detections = 0
        self.labels = 0
        self.last_detection_ts: int | None = None
        self.last_detection_label: int | None = None

    def update(self, loss: float, prediction_ts: int) -> bool:
        """Feed one log-loss term; True when ADWIN detects a change on it.

        >>> AdwinState(0.002).update(0.5, 0)
        False
        """
        self.labels += 1
        self.detector.update(loss)  # type: ignore[no-untyped-call]
        if self.detector.drift_detected:
            self.detections += 1
            self.last_detection_ts = prediction_ts
            self.last_detection_label = self.labels
            return True
        return False


_psi_keys: dict[str, str] = {}


def _psi_key(name: str) -> str:
    """``psi:<name>``, built once per name (up to a bound: names come from records)."""
    key = _psi_keys.get(name)
    if key is None:
        key = "psi:" + name
        if len(_psi_keys) < SHARED_NAMES_MAX:
            _psi_keys[name] = key
    return key


class ExamplePlan:
    """A run of examples already slid into the PSI windows, released one at a time.

    Holds, per feature subject, the PSI after each of its values; :meth:`applied`
    moves the monitor's drifted set past example ``i`` (events only where a subject
    crosses the threshold), and the monitor's :meth:`DriftMonitor.psi_value` reads a
    subject's PSI as it was after the last applied example.

    >>> plan = ExamplePlan(DriftMonitor(DriftConfig()))
    >>> plan.add("psi:x", np.array([0, 2]), np.array([0.1, 0.5]), None)
    >>> plan.sort(); plan.applied(0); plan.applied(1); plan.value("psi:x")
    (True, 0.1)
    >>> plan.applied(2); plan.value("psi:x"), plan.monitor.drifted
    ((True, 0.5), {'psi:x'})
    """

    def __init__(self, monitor: DriftMonitor) -> None:
        self.monitor = monitor
        self.position = -1
        self.events: list[tuple[int, str, bool]] = []
        self.next_event = 0
        self.values: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                                     float | None]] = {}

    def add(self, key: str, at: npt.NDArray[np.int64], psi_values: npt.NDArray[np.float64],
            before: float | None) -> None:
        """One subject's PSI after each of its values (NaN: window not full), at ``at``."""
        self.values[key] = (at, psi_values, before)
        over = psi_values > self.monitor.config.psi_threshold  # NaN: not over
        was = key in self.monitor.drifted
        flips = np.flatnonzero(over != np.concatenate([[was], over[:-1]]))
        self.events.extend((int(at[k]), key, bool(over[k])) for k in flips)

    def sort(self) -> None:
        """Order the threshold crossings by example (call once every subject is added)."""
        self.events.sort(key=lambda e: e[0])

    def applied(self, i: int) -> None:
        """Example ``i`` (its place in the planned run) has been applied."""
        self.position = i
        events, drifted = self.events, self.monitor.drifted
        while self.next_event < len(events) and events[self.next_event][0] <= i:
            _, key, over = events[self.next_event]
            if over:
                drifted.add(key)
            else:
                drifted.discard(key)
            self.next_event += 1

    def value(self, key: str) -> tuple[bool, float | None]:
        """(True, the subject's PSI now) if the run moves that subject, else (False, None)."""
        found = self.values.get(key)
        if found is None:
            return False, None
        at, psi_values, before = found
        k = int(np.searchsorted(at, self.position, side="right")) - 1
        if k < 0 or math.isnan(psi_values[k]):
            return True, before
        return True, float(psi_values[k])

    def done(self) -> None:
        """Every example was applied: the monitor reads its subjects directly again."""
        if self.events:
            self.applied(max(self.position, self.events[-1][0]))
        self.monitor.__dict__.pop("_plan", None)  # not part of the state


class DriftMonitor:
    """Every PSI subject and ADWIN detector, fed matured examples and labels in order.

    >>> mon = DriftMonitor(DriftConfig(reference_size=2, current_size=2))
    >>> for i, x in enumerate([1.0, 2.0, 9.0, 9.0]):
    ...     mon.on_example(ExampleEvent(f"p{i}", 1, "m", 0.5, 0, i, True, {"logged.x": x}))
    >>> mon.drifted_subjects("m")
    {'psi:logged.x'}
    """

    #: the run of examples being applied, while one is (a class default: checkpoints
    #: written before runs were planned have no such attribute)
    _plan: ExamplePlan | None = None

    def __init__(self, config: DriftConfig,
                 reference_examples: list[dict[str, Any]] | None = None) -> None:
        self.config = config
        self.features: dict[str, PsiSubject] = {}
        self.scores: dict[str, PsiSubject] = {}
        self.score_labels: dict[str, int] = {}
        self.adwin: dict[str, AdwinState] = {}
        self.examples_seen = 0
        self.reference_given = reference_examples is not None
        self.drifted: set[str] = set()  # PSI subjects ("psi:<name>") now over threshold
        if reference_examples is not None:
            for rec in reference_examples:
                for name, value in flatten_features(rec).items():
                    self._subject(self.features, name).add_reference(value)
                score, model_id = rec.get("score"), rec.get("model_id")
                if isinstance(model_id, str) and isinstance(score, int | float):
                    self._subject(self.scores, model_id).add_reference(float(score))
            for subject in (*self.features.values(), *self.scores.values()):
                subject.freeze(config.bins)
            self.score_labels = dict.fromkeys(self.scores, config.reference_size)

    def _subject(self, table: dict[str, PsiSubject], name: str) -> PsiSubject:
        subject = table.get(name)
        if subject is None:
            subject = table[name] = PsiSubject(name, self.config.current_size)
        return subject

    def _current(self, key: str, subject: PsiSubject, value: float) -> None:
        psi_value = subject.add_current(value, self.config.epsilon)
        if psi_value is not None and psi_value > self.config.psi_threshold:
            self.drifted.add(key)
        else:
            self.drifted.discard(key)

    def on_example(self, ev: ExampleEvent) -> None:
        """Apply one matured training example (shadow examples are skipped: not traffic).

        >>> mon = DriftMonitor(DriftConfig())
        >>> mon.on_example(ExampleEvent("p", 1, "m", 0.5, 0, 0, False, {"logged.x": 1.0}))
        >>> mon.examples_seen
        0
        """
        plan = self.plan_examples([ev])
        plan.applied(0)
        plan.done()

    def plan_examples(self, examples: list[ExampleEvent]) -> ExamplePlan:
        """Slide a run of matured examples into the PSI windows at once (see :class:`ExamplePlan`).

        The reference period is applied one example at a time; after it, each feature's
        values are slid with :func:`evaluation.psi.slide`. The drifted set is not
        touched here: :meth:`ExamplePlan.applied` moves it example by example, so that
        labels interleaved with the examples see it as it was at their place.

        >>> mon = DriftMonitor(DriftConfig(reference_size=2, current_size=2))
        >>> evs = [ExampleEvent(f"p{i}", 1, "m", 0.5, 0, i, True, {"logged.x": x})
        ...        for i, x in enumerate([1.0, 2.0, 9.0, 9.0])]
        >>> plan = mon.plan_examples(evs)
        >>> for i in range(3):
        ...     plan.applied(i)
        >>> mon.drifted_subjects("m"), mon.psi_value("psi:logged.x")
        (set(), None)
        >>> plan.applied(3); plan.done(); mon.drifted_subjects("m")
        {'psi:logged.x'}
        """
        cfg = self.config
        groups: dict[tuple[str, ...], tuple[list[int], list[bytes]]] = {}
        for i, ev in enumerate(examples):
            if not ev.served:
                continue
            if not self.reference_given and self.examples_seen < cfg.reference_size:
                self.examples_seen += 1
                for name, value in ev.features.items():
                    self._subject(self.features, name).add_reference(value)
                if self.examples_seen == cfg.reference_size:
                    for subject in self.features.values():
                        subject.freeze(cfg.bins)
                continue
            self.examples_seen += 1
            features = ev.features
            if isinstance(features, FeatureVector):
                names, packed = features.names, features.floats.tobytes()
            else:  # a checkpoint from before examples were packed holds dicts
                names = tuple(features)
                packed = np.array(list(features.values()), dtype=np.float64).tobytes()
            group = groups.get(names)
            if group is None:
                group = groups[names] = ([], [])
            group[0].append(i)
            group[1].append(packed)
        columns: dict[str, list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]] = {}
        for names, (positions, rows) in groups.items():
            at = np.array(positions, dtype=np.int64)
            matrix = np.frombuffer(b"".join(rows), dtype=np.float64).reshape(len(rows),
                                                                             len(names))
            for j, name in enumerate(names):
                columns.setdefault(name, []).append((at, matrix[:, j]))
        plan = ExamplePlan(self)
        for name, parts in columns.items():
            sliding = self.features.get(name)
            if sliding is None or sliding.edges is None:
                continue  # first seen after the reference period: no PSI
            at = np.concatenate([p for p, _ in parts])
            values = np.concatenate([v for _, v in parts])
            if len(parts) > 1:
                order = np.argsort(at, kind="stable")
                at, values = at[order], values[order]
            before = sliding.value
            plan.add(_psi_key(name), at, slide(sliding, values, cfg.epsilon), before)
        plan.sort()
        self._plan = plan
        return plan

    def on_label(self, model_id: str, score: float, loss: float, prediction_ts: int) -> None:
        """Apply one matured label: its model's score PSI and log-loss ADWIN.

        >>> mon = DriftMonitor(DriftConfig()); mon.on_label("m", 0.5, 0.69, 0)
        >>> mon.adwin["m"].labels
        1
        """
        cfg = self.config
        seen = self.score_labels.get(model_id, 0)
        subject = self._subject(self.scores, model_id)
        if seen < cfg.reference_size:
            subject.add_reference(score)
            if seen + 1 == cfg.reference_size:
                subject.freeze(cfg.bins)
        else:
            self._current(f"psi:score:{model_id}", subject, score)
        self.score_labels[model_id] = seen + 1
        adwin = self.adwin.get(model_id)
        if adwin is None:
            adwin = self.adwin[model_id] = AdwinState(cfg.adwin_delta)
        adwin.update(loss, prediction_ts)

    def drifted_subjects(self, model_id: str) -> set[str]:
        """PSI subjects relevant to a model now over threshold: every feature, its score.

        >>> DriftMonitor(DriftConfig()).drifted_subjects("m")
        set()
        """
        now = set(self.drifted)  # then drop other models' scores: a few, not every subject
        for other in self.scores:
            if other != model_id:
                now.discard(f"psi:score:{other}")
        return now

    def psi_value(self, key: str) -> float | None:
        """The current PSI of subject ``key`` (``psi:<feature>`` or ``psi:score:<m>``).

        >>> DriftMonitor(DriftConfig()).psi_value("psi:logged.x") is None
        True
        """
        if self._plan is not None:
            found, value = self._plan.value(key)
            if found:
                return value
        name = key.removeprefix("psi:")
        if name.startswith("score:"):
            subject: PsiSubject | None = self.scores.get(name.removeprefix("score:"))
        else:
            subject = self.features.get(name)
        return None if subject is None else subject.value

    def records(self, label_watermark_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """``(key, drift record)`` for every PSI subject with bins and every detector.

        >>> DriftMonitor(DriftConfig()).records(0)
        []
        """
        cfg = self.config
        base = {"label_watermark_ms": label_watermark_ms, "schema_version": SCHEMA_VERSION}
        out: list[tuple[str, dict[str, Any]]] = []
        named: list[tuple[str, str | None, PsiSubject]] = [
            (name, None, s) for name, s in sorted(self.features.items())]
        named += [(f"score:{m}", m, s) for m, s in sorted(self.scores.items())]
        for name, model_id, s in named:
            if not s.frozen:
                continue
            out.append((f"psi:{name}", {
                "kind": "psi", "subject": name, "model_id": model_id, "value": s.value,
                "threshold": cfg.psi_threshold,
                "drifted": s.value is not None and s.value > cfg.psi_threshold,
                "reference_size": sum(s.reference_counts), "current_size": len(s.current),
                "bins": len(s.reference_counts), **base}))
        for model_id, a in sorted(self.adwin.items()):
            recent = (a.last_detection_label is not None
                      and a.labels - a.last_detection_label < cfg.current_size)
            out.append((f"adwin:{model_id}", {
                "kind": "adwin", "subject": model_id, "model_id": model_id,
                "value": float(a.detector.estimation), "threshold": cfg.adwin_delta,
                "drifted": recent, "reference_size": a.labels,
                "current_size": int(a.detector.width), "detections": a.detections,
                "last_detection_ts": a.last_detection_ts, **base}))
        return out
