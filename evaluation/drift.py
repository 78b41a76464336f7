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

import bisect
import math
from collections import deque
from typing import Any

import numpy as np

from evaluation.config import DriftConfig
from evaluation.records import ExampleEvent, flatten_features
from events.contracts import SCHEMA_VERSION


def quantile_edges(values: list[float], bins: int) -> list[float]:
    """Distinct ``k / bins`` quantiles (k = 1..bins-1) of a non-empty reference.

    >>> quantile_edges([float(v) for v in range(11)], 5)
    [2.0, 4.0, 6.0, 8.0]
    >>> quantile_edges([0.0, 0.0, 0.0, 1.0], 4)
    [0.0, 0.25]
    """
    qs = [k / bins for k in range(1, bins)]
    return sorted({float(q) for q in np.quantile(np.asarray(values, dtype=float), qs)})


def psi_term(r_count: int, n_ref: int, c_count: int, n_cur: int, epsilon: float) -> float:
    """One bin's PSI term, shares floored at ``epsilon``.

    >>> round(psi_term(50, 100, 80, 100, 1e-4), 6)
    0.141001
    """
    r = max(r_count / n_ref, epsilon)
    c = max(c_count / n_cur, epsilon)
    return (c - r) * math.log(c / r)


def psi(reference: list[int], current: list[int], epsilon: float) -> float:
    """PSI of two bin-count vectors, shares floored at ``epsilon``.

    >>> round(psi([50, 50], [80, 20], 1e-4), 6)
    0.415888
    >>> psi([10, 0], [10, 0], 1e-4)
    0.0
    """
    n_ref, n_cur = sum(reference), sum(current)
    total = 0.0
    for r_count, c_count in zip(reference, current, strict=True):
        r = max(r_count / n_ref, epsilon)
        c = max(c_count / n_cur, epsilon)
        total += (c - r) * math.log(c / r)
    return total


class PsiSubject:
    """One PSI subject: reference values, then frozen bins and a sliding current window.

    >>> s = PsiSubject("logged.x", 4)
    >>> for v in [1.0, 2.0, 3.0, 4.0]:
    ...     s.add_reference(v)
    >>> s.freeze(2)
    >>> for v in [9.0] * 4:
    ...     _ = s.add_current(v, 1e-4)
    >>> s.edges, s.current_counts, round(s.value, 3)
    ([2.5], [0, 4], 4.604)
    """

    __slots__ = ("current", "current_counts", "current_size", "edges", "n_ref", "name",
                 "reference", "reference_counts", "terms", "value")

    def __init__(self, name: str, current_size: int) -> None:
        self.name = name
        self.current_size = current_size
        self.reference: list[float] | None = []
        self.edges: list[float] | None = None
        self.reference_counts: list[int] = []
        self.current: deque[int] = deque()
        self.current_counts: list[int] = []
        #: each bin's PSI term once the window is full (only changed bins are recomputed)
        self.terms: list[float] = []
        self.n_ref = 0
        self.value: float | None = None

    @property
    def frozen(self) -> bool:
        """True once the bins are fixed.

        >>> PsiSubject("x", 3).frozen
        False
        """
        return self.edges is not None

    def add_reference(self, value: float) -> None:
        """Add one reference value (before :meth:`freeze`).

        >>> s = PsiSubject("x", 3); s.add_reference(1.0); s.reference
        [1.0]
        """
        if self.reference is not None:
            self.reference.append(value)

    def freeze(self, bins: int) -> None:
        """Fix the bins from the reference values and count them (then drop the values).

        >>> s = PsiSubject("x", 3); s.add_reference(1.0); s.freeze(10); s.reference_counts
        [1, 0]
        """
        if self.reference is None or not self.reference:
            return
        self.edges = quantile_edges(self.reference, bins)
        self.reference_counts = [0] * (len(self.edges) + 1)
        for v in self.reference:
            self.reference_counts[bisect.bisect_left(self.edges, v)] += 1
        self.current_counts = [0] * len(self.reference_counts)
        self.n_ref = sum(self.reference_counts)
        self.reference = None

    def add_current(self, value: float, epsilon: float) -> float | None:
        """Slide one value into the current window; the PSI (None until it is full).

        >>> s = PsiSubject("x", 1); s.add_reference(1.0); s.freeze(2)
        >>> s.add_current(1.0, 1e-4)
        0.0
        """
        if self.edges is None:
            return None
        b = bisect.bisect_left(self.edges, value)
        current = self.current
        current.append(b)
        if len(current) > self.current_size:
            out: int | None = current.popleft()
            if out == b and self.terms:  # the same bin in and out: nothing changed
                return self.value
        else:
            out = None
        counts = self.current_counts
        counts[b] += 1
        if out is not None:
            counts[out] -= 1
        if len(current) < self.current_size:
            return self.value
        # the same arithmetic as psi(), bin by bin: only the bins that changed are redone
        # (psi_term inlined: this runs once per numeric feature of every example)
        ref, n_ref, n_cur = self.reference_counts, self.n_ref, self.current_size
        terms = self.terms
        if not terms:
            terms = self.terms = [psi_term(r, n_ref, c, n_cur, epsilon)
                                  for r, c in zip(ref, counts, strict=True)]
        else:
            log = math.log
            r = max(ref[b] / n_ref, epsilon)
            c = max(counts[b] / n_cur, epsilon)
            terms[b] = (c - r) * log(c / r)
            if out is not None and out != b:
                r = max(ref[out] / n_ref, epsilon)
                c = max(counts[out] / n_cur, epsilon)
                terms[out] = (c - r) * log(c / r)
        total = 0.0
        for term in terms:
            total += term
        self.value = total
        return self.value


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
        if len(_psi_keys) < 4_096:
            _psi_keys[name] = key
    return key


class DriftMonitor:
    """Every PSI subject and ADWIN detector, fed matured examples and labels in order.

    >>> mon = DriftMonitor(DriftConfig(reference_size=2, current_size=2))
    >>> for i, x in enumerate([1.0, 2.0, 9.0, 9.0]):
    ...     mon.on_example(ExampleEvent(f"p{i}", 1, "m", 0.5, 0, i, True, {"logged.x": x}))
    >>> mon.drifted_subjects("m")
    {'psi:logged.x'}
    """

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
        if not ev.served:
            return
        cfg = self.config
        if not self.reference_given and self.examples_seen < cfg.reference_size:
            self.examples_seen += 1
            for name, value in ev.features.items():
                self._subject(self.features, name).add_reference(value)
            if self.examples_seen == cfg.reference_size:
                for subject in self.features.values():
                    subject.freeze(cfg.bins)
            return
        self.examples_seen += 1
        subjects, drifted = self.features, self.drifted
        epsilon, threshold = cfg.epsilon, cfg.psi_threshold
        for name, value in ev.features.items():  # _current, inlined: once per feature
            current = subjects.get(name)
            if current is not None:
                psi_value = current.add_current(value, epsilon)
                if psi_value is not None and psi_value > threshold:
                    drifted.add(_psi_key(name))
                elif drifted:
                    drifted.discard(_psi_key(name))

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
        own = f"psi:score:{model_id}"
        return {s for s in self.drifted if not s.startswith("psi:score:") or s == own}

    def psi_value(self, key: str) -> float | None:
        """The current PSI of subject ``key`` (``psi:<feature>`` or ``psi:score:<m>``).

        >>> DriftMonitor(DriftConfig()).psi_value("psi:logged.x") is None
        True
        """
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
