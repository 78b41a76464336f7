"""Independent recomputation of final labels (``wait`` mode) from the input log.

Restates the documented rules (README, labels/): attribution by prediction_id, then
request_id + item_id, then the latest prediction of the item with ts <= click ts;
explicit ids may precede their prediction by up to the skew; a click is in the
window when it is before prediction ts + window; of several in-window clicks the
first is the one the watermark reaches first (an attributed click at
max(click ts + 1, prediction ts), a held one at click ts + skew + 1).

Shadow predictions (``served: false``) are no candidate of any tier; a click naming
one by ``prediction_id`` is taken at its release, first by the shadow's request_id +
item_id. A shadow's twin is the latest served prediction of its user, request and
item with ``twin.ts - skew <= shadow.ts < twin.ts + window + horizon``; the shadow's
final label is its twin's (``label_ts`` raised to its own ts, the twin's
``delay_ms``), with ``served: false`` and ``served_prediction_id``; a shadow without
a twin is negative at its own window close.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tests.streams.oracle import Event


def final_labels(events: list[Event], window_ms: int, skew_ms: int,
                 horizon_ms: int) -> dict[str, dict[str, Any]]:
    """prediction_id -> the expected final label fields, for every valid prediction."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        by_user[ev.body["user_id"]].append(ev)
    out: dict[str, dict[str, Any]] = {}
    for evs in by_user.values():
        out.update(_user_labels(evs, window_ms, skew_ms, horizon_ms))
    return out


def _user_labels(events: list[Event], window: int, skew: int,
                 horizon: int) -> dict[str, dict[str, Any]]:
    preds = [e.body for e in events if e.source == "predictions"]
    served = [p for p in preds if p.get("served") is not False]
    clicks = [e.body for e in events if e.source == "clicks"]

    def latest(cands: list[dict[str, Any]]) -> dict[str, Any] | None:
        return max(cands, key=lambda p: (p["ts"], p["prediction_id"]), default=None)

    def explicit_ok(p: dict[str, Any], c: dict[str, Any]) -> bool:
        return p["ts"] - skew <= c["ts"] < p["ts"] + window + horizon

    def by_pid(c: dict[str, Any]) -> dict[str, Any] | None:
        return latest([p for p in preds if p["prediction_id"] == c.get("prediction_id")
                       and explicit_ok(p, c)])

    def by_rid(c: dict[str, Any], request: Any = None, item: Any = None,
               ) -> dict[str, Any] | None:
        request, item = request or c.get("request_id"), item or c["item_id"]
        return latest([p for p in served if p["request_id"] == request
                       and p["item_id"] == item and explicit_ok(p, c)])

    def by_item(c: dict[str, Any]) -> dict[str, Any] | None:
        return latest([p for p in served if p["item_id"] == c["item_id"]
                       and p["ts"] <= c["ts"] < p["ts"] + window + horizon])

    hits: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for c in clicks:
        shadow = None
        if c.get("prediction_id") is not None:
            direct = by_pid(c)
            if direct is not None and direct.get("served") is False:
                shadow, direct = direct, None
        elif c.get("request_id") is not None:
            direct = by_rid(c)
        else:
            direct = by_item(c)
        if direct is not None:
            target, order = direct, max(c["ts"] + 1, direct["ts"])
        else:
            target = ((by_rid(c, shadow["request_id"], shadow["item_id"]) if shadow else None)
                      or (by_rid(c) if c.get("request_id") is not None else None)
                      or by_item(c))
            order = c["ts"] + skew + 1
        if target is not None and c["ts"] < target["ts"] + window:
            hits[target["prediction_id"]].append((order, c["ts"]))
    def twin_of(h: dict[str, Any]) -> dict[str, Any] | None:
        return latest([p for p in served if p["request_id"] == h["request_id"]
                       and p["item_id"] == h["item_id"]
                       and p["ts"] - skew <= h["ts"] < p["ts"] + window + horizon])

    labels = {}
    for p in preds:
        core = {k: p[k] for k in ("prediction_id", "request_id", "user_id", "item_id",
                                   "model_id", "score")}
        if p.get("served") is False:
            continue
        found = hits.get(p["prediction_id"])
        if found:
            at = max(min(found)[1], p["ts"])
            labels[p["prediction_id"]] = {**core, "label": 1, "kind": "positive",
                                          "label_ts": at, "delay_ms": at - p["ts"]}
        else:
            labels[p["prediction_id"]] = {**core, "label": 0, "kind": "negative",
                                          "label_ts": p["ts"] + window, "delay_ms": None}
        labels[p["prediction_id"]].update(prediction_ts=p["ts"], window_ms=window,
                                          label_version=1, final=True)
    for h in preds:
        if h.get("served") is not False:
            continue
        core = {k: h[k] for k in ("prediction_id", "request_id", "user_id", "item_id",
                                   "model_id", "score")}
        twin = twin_of(h)
        if twin is None:
            outcome = {"label": 0, "kind": "negative", "label_ts": h["ts"] + window,
                       "delay_ms": None}
        else:
            of_twin = labels[twin["prediction_id"]]
            outcome = {"label": of_twin["label"], "kind": of_twin["kind"],
                       "label_ts": max(of_twin["label_ts"], h["ts"]),
                       "delay_ms": of_twin["delay_ms"]}
        labels[h["prediction_id"]] = {
            **core, **outcome, "prediction_ts": h["ts"], "window_ms": window,
            "label_version": 1, "final": True, "served": False,
            "served_prediction_id": None if twin is None else twin["prediction_id"]}
    return labels
