"""Which prediction a click belongs to: the attribution rules, as pure lookups.

The lookups read the ``predictions`` mapping of one user's label state
(``prediction_id -> record``; each record has the prediction dict under ``"pred"``)
and a click dict (``Click.to_dict()``). Tiers, in order:

1. ``prediction_id``: the click names it exactly.
2. ``request_id`` + ``item_id``: the prediction served for that item in that request.
   (A request is assumed to serve an item once; if several predictions share both ids,
   the latest by ``(ts, prediction_id)`` wins.)
3. Fallback: the latest prediction (by ``(ts, prediction_id)``) of the click's item with
   ``pred.ts <= click.ts``.

A prediction is *eligible* for a click when:

- explicit tiers (1, 2): ``pred.ts - skew_ms <= click.ts`` -- a click may precede its
  prediction by up to ``skew_ms`` (clock skew between services);
- fallback tier (3): ``pred.ts <= click.ts``;
- every tier: the prediction is still remembered for that click,
  ``click.ts < pred.ts + window_ms + late_horizon_ms``.

An eligible prediction is *matched* whether the click is inside its window
(``click.ts < pred.ts + window_ms``: a positive or an extra click) or after it (a late
click). Before a click's explicit ids can be given up on, every prediction with
``ts <= click.ts + skew_ms`` must have been seen; until then :func:`resolve` answers
"wait" (``final=False``). With ``final=True`` it walks all tiers and names the reason
when nothing matches: ``unknown_prediction_id``, ``unknown_request_id`` (the click
carried that id) or ``no_prediction``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REASON_UNKNOWN_PREDICTION_ID = "unknown_prediction_id"
REASON_UNKNOWN_REQUEST_ID = "unknown_request_id"
REASON_NO_PREDICTION = "no_prediction"


@dataclass(frozen=True, slots=True)
class Rules:
    """The three durations attribution depends on (taken from a ``LabelConfig``).

    >>> Rules(window_ms=10, skew_ms=2, late_horizon_ms=5).window_ms
    10
    """

    window_ms: int
    skew_ms: int
    late_horizon_ms: int


@dataclass(frozen=True, slots=True)
class Resolution:
    """A click's attribution: a ``prediction_id``, a ``reason`` for none, or "wait" (both None).

    >>> Resolution("p1", None).waiting, Resolution(None, None).waiting
    (False, True)
    """

    prediction_id: str | None
    reason: str | None

    @property
    def waiting(self) -> bool:
        """True when the click must stay held: its explicit prediction may still arrive."""
        return self.prediction_id is None and self.reason is None


def _remembered(pred: dict[str, Any], click_ts: int, rules: Rules) -> bool:
    forget_at: int = pred["ts"] + rules.window_ms + rules.late_horizon_ms
    return click_ts < forget_at


def eligible(pred: dict[str, Any], click: dict[str, Any], rules: Rules, *, explicit: bool) -> bool:
    """True when ``pred`` may be matched by ``click`` (see the module rules).

    >>> rules = Rules(window_ms=100, skew_ms=5, late_horizon_ms=50)
    >>> pred = {"ts": 1_000}
    >>> [eligible(pred, {"ts": t}, rules, explicit=True) for t in (994, 995, 1_149, 1_150)]
    [False, True, True, False]
    >>> eligible(pred, {"ts": 999}, rules, explicit=False)
    False
    """
    lead = rules.skew_ms if explicit else 0
    start: int = pred["ts"]
    return start - lead <= click["ts"] and _remembered(pred, click["ts"], rules)


def _latest(candidates: list[tuple[int, str]]) -> str | None:
    return max(candidates)[1] if candidates else None


def _by_request(
    predictions: dict[str, dict[str, Any]], click: dict[str, Any], rules: Rules
) -> str | None:
    return _latest([
        (rec["pred"]["ts"], pid)
        for pid, rec in predictions.items()
        if rec["pred"]["request_id"] == click.get("request_id")
        and rec["pred"]["item_id"] == click["item_id"]
        and eligible(rec["pred"], click, rules, explicit=True)
    ])


def _by_item(
    predictions: dict[str, dict[str, Any]], click: dict[str, Any], rules: Rules
) -> str | None:
    return _latest([
        (rec["pred"]["ts"], pid)
        for pid, rec in predictions.items()
        if rec["pred"]["item_id"] == click["item_id"]
        and eligible(rec["pred"], click, rules, explicit=False)
    ])


def names(click: dict[str, Any], pred: dict[str, Any], rules: Rules) -> bool:
    """True when ``pred`` is what the click's first explicit id points at, and eligible.

    A held click that ``names`` a newly arrived prediction can be attributed at once.

    >>> rules = Rules(window_ms=100, skew_ms=5, late_horizon_ms=50)
    >>> pred = {"prediction_id": "p", "request_id": "r", "item_id": "i", "ts": 1_000}
    >>> names({"item_id": "i", "ts": 997, "prediction_id": "p"}, pred, rules)
    True
    >>> names({"item_id": "i", "ts": 997, "request_id": "r"}, pred, rules)
    True
    >>> names({"item_id": "i", "ts": 997}, pred, rules)   # no explicit id
    False
    """
    if click.get("prediction_id") is not None:
        hit = click["prediction_id"] == pred["prediction_id"]
    elif click.get("request_id") is not None:
        hit = click["request_id"] == pred["request_id"] and click["item_id"] == pred["item_id"]
    else:
        return False
    return hit and eligible(pred, click, rules, explicit=True)


def resolve(
    predictions: dict[str, dict[str, Any]],
    click: dict[str, Any],
    rules: Rules,
    *,
    final: bool,
) -> Resolution:
    """Attribute ``click`` by the tiers above; ``final=False`` may answer "wait".

    >>> rules = Rules(window_ms=100, skew_ms=5, late_horizon_ms=50)
    >>> preds = {"p1": {"pred": {"prediction_id": "p1", "request_id": "r1",
    ...                          "item_id": "i", "ts": 1_000}}}
    >>> resolve(preds, {"item_id": "i", "ts": 1_010}, rules, final=False)
    Resolution(prediction_id='p1', reason=None)
    >>> resolve(preds, {"item_id": "i", "ts": 1_010, "prediction_id": "p9"}, rules,
    ...         final=False).waiting
    True
    >>> resolve(preds, {"item_id": "i", "ts": 1_010, "prediction_id": "p9"}, rules, final=True)
    Resolution(prediction_id='p1', reason=None)
    >>> resolve(preds, {"item_id": "j", "ts": 1_010, "request_id": "r1"}, rules, final=True)
    Resolution(prediction_id=None, reason='unknown_request_id')
    """
    pid = click.get("prediction_id")
    if pid is not None:
        rec = predictions.get(pid)
        if rec is not None and eligible(rec["pred"], click, rules, explicit=True):
            return Resolution(pid, None)
        if not final:
            return Resolution(None, None)
    if click.get("request_id") is not None:
        found = _by_request(predictions, click, rules)
        if found is not None:
            return Resolution(found, None)
        if not final:
            return Resolution(None, None)
    found = _by_item(predictions, click, rules)
    if found is not None:
        return Resolution(found, None)
    if pid is not None:
        return Resolution(None, REASON_UNKNOWN_PREDICTION_ID)
    if click.get("request_id") is not None:
        return Resolution(None, REASON_UNKNOWN_REQUEST_ID)
    return Resolution(None, REASON_NO_PREDICTION)
