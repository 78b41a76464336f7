"""What the label machine hands back: typed outputs wrapping plain JSON-ready records.

Each :class:`Output` has a ``kind`` (which topic or counter it is for), a ``key`` (the
record key to publish it under) and a ``record`` dict. Kinds:

- ``label``: a label record for the ``labels`` topic, key ``prediction_id``;
  ``(prediction_id, label_version)`` is unique.
- ``training_example``: prediction fields (including the logged ``features``), the
  point-in-time ``freshet_features`` snapshot and the label fields; key ``prediction_id``.
- ``late_click``: a click attributed to a prediction whose window had closed.
- ``extra_click``: a further in-window click on a prediction that already had its
  first click (the label does not change; the click is counted).
- ``unattributed``: a click that matches no prediction: the click dict plus ``reason``;
  key ``user_id``.
- ``duplicate_prediction``: a prediction whose ``prediction_id`` is already in the state
  (a redelivery); nothing else happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from events.contracts import SCHEMA_VERSION

OUTPUT_KINDS = (
    "label",
    "training_example",
    "late_click",
    "extra_click",
    "unattributed",
    "duplicate_prediction",
)

#: Prediction fields kept in every label record (and after a prediction is final).
CORE_FIELDS = ("prediction_id", "request_id", "user_id", "item_id", "model_id", "score", "ts")


@dataclass(frozen=True, slots=True)
class Output:
    """One record for the stream layer to publish, routed by ``kind``.

    >>> out = Output("unattributed", "u1", {"user_id": "u1", "reason": "no_prediction"})
    >>> (out.kind, out.key)
    ('unattributed', 'u1')
    >>> Output("gossip", "u1", {})
    Traceback (most recent call last):
    ...
    ValueError: unknown output kind 'gossip'
    """

    kind: str
    key: str
    record: dict[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"unknown output kind {self.kind!r}")


def core(pred: dict[str, Any]) -> dict[str, Any]:
    """The core fields of a prediction dict (drops logged features, position...).

    >>> core({"prediction_id": "p", "request_id": "r", "user_id": "u", "item_id": "i",
    ...       "model_id": "m", "score": 0.5, "ts": 7, "features": {"f": 1}})["ts"]
    7
    """
    return {name: pred[name] for name in CORE_FIELDS}


def label_record(
    pred: dict[str, Any],
    *,
    label: int,
    kind: str,
    version: int,
    final: bool,
    label_ts: int,
    delay_ms: int | None,
    window_ms: int,
) -> dict[str, Any]:
    """A record of the ``labels`` topic for ``pred``.

    >>> pred = {"prediction_id": "p", "request_id": "r", "user_id": "u", "item_id": "i",
    ...         "model_id": "m", "score": 0.5, "ts": 1_000}
    >>> rec = label_record(pred, label=1, kind="positive", version=1, final=True,
    ...                    label_ts=1_500, delay_ms=500, window_ms=60_000)
    >>> (rec["label"], rec["prediction_ts"], rec["delay_ms"], rec["schema_version"])
    (1, 1000, 500, 1)
    """
    return {
        "prediction_id": pred["prediction_id"],
        "request_id": pred["request_id"],
        "user_id": pred["user_id"],
        "item_id": pred["item_id"],
        "model_id": pred["model_id"],
        "score": pred["score"],
        "label": label,
        "kind": kind,
        "label_version": version,
        "final": final,
        "prediction_ts": pred["ts"],
        "label_ts": label_ts,
        "delay_ms": delay_ms,
        "window_ms": window_ms,
        "schema_version": SCHEMA_VERSION,
    }


def training_example(
    pred: dict[str, Any], snapshot: dict[str, Any] | None, label: dict[str, Any]
) -> dict[str, Any]:
    """Prediction fields (with logged ``features``) + ``freshet_features`` + label fields.

    >>> pred = {"prediction_id": "p", "ts": 1, "features": {"f": 1.0}}
    >>> ex = training_example(pred, {"u.clicks_1h": 3}, {"prediction_id": "p", "label": 0})
    >>> (ex["features"], ex["freshet_features"], ex["label"])
    ({'f': 1.0}, {'u.clicks_1h': 3}, 0)
    """
    out = dict(pred)
    out.update(label)
    out["freshet_features"] = snapshot
    return out


def click_record(
    kind: str,
    pred: dict[str, Any],
    click: dict[str, Any],
    *,
    window_ms: int,
    label: int | None,
) -> dict[str, Any]:
    """A ``late_click`` / ``extra_click`` record: the prediction it belongs to + the click.

    ``label`` is the prediction's final label value, or None while it is not final.

    >>> pred = {"prediction_id": "p", "request_id": "r", "user_id": "u", "item_id": "i",
    ...         "model_id": "m", "score": 0.5, "ts": 1_000}
    >>> rec = click_record("late_click", pred, {"user_id": "u", "item_id": "i", "ts": 9_000},
    ...                    window_ms=5_000, label=0)
    >>> (rec["kind"], rec["delay_ms"], rec["click_ts"], rec["label"])
    ('late_click', 8000, 9000, 0)
    """
    return {
        "kind": kind,
        "prediction_id": pred["prediction_id"],
        "request_id": pred["request_id"],
        "user_id": pred["user_id"],
        "item_id": pred["item_id"],
        "model_id": pred["model_id"],
        "prediction_ts": pred["ts"],
        "click_ts": click["ts"],
        "delay_ms": click["ts"] - pred["ts"],
        "window_ms": window_ms,
        "label": label,
        "click": click,
        "schema_version": SCHEMA_VERSION,
    }


def unattributed_record(click: dict[str, Any], reason: str) -> dict[str, Any]:
    """The click dict plus the ``reason`` it matched no prediction.

    >>> unattributed_record({"user_id": "u", "item_id": "i", "ts": 5}, "no_prediction")
    {'user_id': 'u', 'item_id': 'i', 'ts': 5, 'reason': 'no_prediction', 'schema_version': 1}
    """
    out = dict(click)
    out["reason"] = reason
    out["schema_version"] = SCHEMA_VERSION
    return out
