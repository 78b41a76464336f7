"""Retrain triggers per model, checked after each of its matured labels, in label order.

Reasons (each with its figures; all that hold at a label go in one trigger):

- ``time``: the label's ``prediction_ts`` minus the anchor (the ``prediction_ts`` of
  the label that fired the last trigger, or of the model's first matured label) is
  ``>= every_ms``.
- ``volume``: matured labels since the anchor (for a new model: counting its first)
  ``>= every_labels``.
- ``performance``: the first ``reference_labels`` labels after the anchor form the
  reference, the last ``recent_labels`` after those the recent window (disjoint).
  Every ``check_every`` labels once both are full, the drop (log-loss: recent mean -
  reference mean; AUC: reference - recent) gets a normal interval ``drop +- z se``:
  log-loss ``se = sqrt(s_ref²/n_ref + s_rec²/n_rec)`` (Welch, sample variances of the
  per-label log-loss terms); AUC ``se = sqrt(se_ref² + se_rec²)`` with Hanley-McNeil
  standard errors (independent windows). Fires when ``ci_low > margin``: the drop is
  larger than the margin with that confidence.
- ``drift``: a PSI subject of the model (any feature, or its own score) is over its
  threshold and was not over it at the last trigger, or ADWIN detected a change on
  its log-loss since the last trigger. A subject re-arms only once its PSI falls
  below ``drift_rearm`` times the threshold (hysteresis: a value hovering at the
  threshold fires once, not at every crossing).

A trigger resets the model's anchor, label count, both performance windows and the
acknowledged drift subjects. Checks run per label, so triggers do not depend on how
often the caller advances the label watermark.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from evaluation.config import TriggerConfig
from evaluation.drift import DriftMonitor
from evaluation.scores import ScoreCounts
from evaluation.stats import auc_standard_error, mean_and_variance
from events.contracts import SCHEMA_VERSION

#: triggers kept per model in ``history`` (a record shows every trigger since the
#: previous publication as long as fewer than this many fired in between)
HISTORY = 20

Entry = tuple[float, int, float]  # (score, label, log-loss term)


def _counts(entries: list[Entry] | deque[Entry]) -> ScoreCounts:
    sc = ScoreCounts()
    for score, label, _ in entries:
        sc.add(score, label)
    return sc


def log_loss_drop(reference: list[float], recent: list[float], z: float) -> dict[str, float]:
    """Recent minus reference mean log-loss, with its Welch normal interval.

    >>> fig = log_loss_drop([0.1, 0.2, 0.3], [0.5, 0.6, 0.7], 1.96)
    >>> round(fig["drop"], 6), round(fig["ci_low"], 4)
    (0.4, 0.24)
    """
    m_ref, v_ref = mean_and_variance(reference)
    m_rec, v_rec = mean_and_variance(recent)
    drop = m_rec - m_ref
    se = math.sqrt(v_ref / len(reference) + v_rec / len(recent))
    return {"reference": m_ref, "recent": m_rec, "drop": drop, "se": se,
            "ci_low": drop - z * se, "ci_high": drop + z * se}


def auc_drop(reference: ScoreCounts, recent: ScoreCounts, z: float) -> dict[str, float] | None:
    """Reference minus recent AUC with a Hanley-McNeil interval; None if either is undefined.

    >>> a, b = ScoreCounts(), ScoreCounts()
    >>> for i in range(20):
    ...     a.add(i / 20, int(i >= 10)); b.add(i / 20, i % 2)
    >>> fig = auc_drop(a, b, 1.96); fig["reference"], fig["recent"]
    (1.0, 0.55)
    """
    auc_ref = reference.auc()
    auc_rec = recent.auc()
    if auc_ref is None or auc_rec is None:
        return None
    se = math.sqrt(auc_standard_error(auc_ref, reference.positives, reference.negatives) ** 2
                   + auc_standard_error(auc_rec, recent.positives, recent.negatives) ** 2)
    drop = auc_ref - auc_rec
    return {"reference": auc_ref, "recent": auc_rec, "drop": drop, "se": se,
            "ci_low": drop - z * se, "ci_high": drop + z * se}


class TriggerState:
    """One model's trigger counters, windows and the last trigger it fired.

    >>> from evaluation.config import DriftConfig
    >>> st, mon = TriggerState(), DriftMonitor(DriftConfig())
    >>> cfg = TriggerConfig(every_labels=2, every_ms=None, performance="off")
    >>> [st.on_label("m", i, 0.5, 0, 0.69, cfg, mon, shadow=False) for i in range(4)]
    [False, True, False, True]
    >>> st.last["sequence"], st.last["reasons"][0]["reason"]
    (2, 'volume')
    """

    def __init__(self) -> None:
        self.anchor_ts: int | None = None
        self.labels_since = 0
        self.sequence = 0
        self.reference: list[Entry] = []
        self.reference_scores: ScoreCounts | None = None
        self.recent: deque[Entry] = deque()
        self.acked: set[str] = set()
        self.adwin_acked = 0
        self.last: dict[str, Any] | None = None
        #: the latest HISTORY triggers, oldest first: what fired between two publications
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)

    def _performance(self, cfg: TriggerConfig) -> list[dict[str, Any]]:
        reasons: list[dict[str, Any]] = []
        common = {"reason": "performance", "reference_labels": len(self.reference),
                  "recent_labels": len(self.recent), "z": cfg.z}
        if cfg.performance in ("log_loss", "both"):
            fig = log_loss_drop([e[2] for e in self.reference], [e[2] for e in self.recent],
                                cfg.z)
            if fig["ci_low"] > cfg.log_loss_margin:
                reasons.append({**common, "metric": "log_loss", **fig,
                                "margin": cfg.log_loss_margin})
        if cfg.performance in ("auc", "both"):
            if self.reference_scores is None:
                self.reference_scores = _counts(self.reference)
            auc_fig = auc_drop(self.reference_scores, _counts(self.recent), cfg.z)
            if auc_fig is not None and auc_fig["ci_low"] > cfg.auc_margin:
                reasons.append({**common, "metric": "auc", **auc_fig, "margin": cfg.auc_margin})
        return reasons

    def _drift(self, model_id: str, monitor: DriftMonitor,
               cfg: TriggerConfig) -> tuple[list[str], set[str]]:
        now = monitor.drifted_subjects(model_id)
        rearm = cfg.drift_rearm * monitor.config.psi_threshold

        keep = self.acked & now
        for key in self.acked - now:  # under the threshold: re-armed once well under it
            value = monitor.psi_value(key)
            if value is not None and value >= rearm:
                keep.add(key)
        self.acked = keep
        new = sorted(now - self.acked)
        adwin = monitor.adwin.get(model_id)
        if adwin is not None and adwin.detections > self.adwin_acked:
            new.append(f"adwin:{model_id}")
        return new, now

    def on_label(self, model_id: str, prediction_ts: int, score: float, label: int,
                 loss: float, cfg: TriggerConfig, monitor: DriftMonitor, *,
                 shadow: bool) -> bool:
        """Count one matured label and check every enabled reason; True if it fired.

        >>> from evaluation.config import DriftConfig
        >>> st = TriggerState(); cfg = TriggerConfig(every_ms=10, performance="off")
        >>> mon = DriftMonitor(DriftConfig())
        >>> st.on_label("m", 0, 0.5, 0, 0.7, cfg, mon, shadow=False)
        False
        >>> st.on_label("m", 10, 0.5, 0, 0.7, cfg, mon, shadow=False)
        True
        """
        if self.anchor_ts is None:
            self.anchor_ts = prediction_ts
        self.labels_since += 1
        entry = (score, label, loss)
        if len(self.reference) < cfg.reference_labels:
            self.reference.append(entry)
        else:
            self.recent.append(entry)
            if len(self.recent) > cfg.recent_labels:
                self.recent.popleft()
        reasons: list[dict[str, Any]] = []
        elapsed = prediction_ts - self.anchor_ts
        if cfg.every_ms is not None and elapsed >= cfg.every_ms:
            reasons.append({"reason": "time", "elapsed_ms": elapsed,
                            "threshold_ms": cfg.every_ms})
        if cfg.every_labels is not None and self.labels_since >= cfg.every_labels:
            reasons.append({"reason": "volume", "labels": self.labels_since,
                            "threshold": cfg.every_labels})
        full = cfg.reference_labels + cfg.recent_labels
        if (cfg.performance != "off" and self.labels_since >= full
                and (self.labels_since - full) % cfg.check_every == 0):
            reasons.extend(self._performance(cfg))
        drifted_now: set[str] = set()
        if cfg.drift:
            new, drifted_now = self._drift(model_id, monitor, cfg)
            if new:
                subjects = []
                for key in new:
                    if key.startswith("adwin:"):
                        a = monitor.adwin[model_id]
                        subjects.append({"subject": key, "value": a.detections - self.adwin_acked,
                                         "threshold": monitor.config.adwin_delta,
                                         "last_detection_ts": a.last_detection_ts})
                    else:
                        subjects.append({"subject": key, "value": monitor.psi_value(key),
                                         "threshold": monitor.config.psi_threshold})
                reasons.append({"reason": "drift", "subjects": subjects})
        if not reasons:
            return False
        self.sequence += 1
        self.last = {"model_id": model_id, "shadow": shadow, "sequence": self.sequence,
                     "prediction_ts": prediction_ts, "since_ts": self.anchor_ts,
                     "labels_since": self.labels_since, "reasons": reasons,
                     "schema_version": SCHEMA_VERSION}
        self.history.append({"sequence": self.sequence, "prediction_ts": prediction_ts,
                             "reasons": reasons})
        self.anchor_ts = prediction_ts
        self.labels_since = 0
        self.reference = []
        self.reference_scores = None
        self.recent.clear()
        self.acked = drifted_now
        adwin = monitor.adwin.get(model_id)
        self.adwin_acked = 0 if adwin is None else adwin.detections
        return True
