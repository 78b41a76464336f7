"""When each part of a user's label state is due: the machine's event-time timeline.

An item is due once the watermark reaches its due value; due items are acted on in the
order of :data:`Item` lists: by due watermark, then clicks before open predictions
before final ones, then by event time and a content tie-break (never arrival order).

- a click: first at ``click.ts + 1`` (every prediction with ``ts <= click.ts`` seen),
  if still unattributable by explicit ids, again at ``click.ts + skew_ms + 1``;
- an open prediction: observation end ``ts + observe_ms + skew_ms`` (mode
  ``observe_then_correct``, until observed), then window end ``ts + window_ms + skew_ms``;
- a final prediction: forgotten at ``ts + window_ms + late_horizon_ms + skew_ms``.

The items live in the state itself as a binary heap of JSON lists (``state["due"]``),
with lazy deletion: an entry is stale once its click or prediction has moved on, and is
dropped when it reaches the top. A second heap (``state["open"]``, ``[ts, prediction_id]``)
gives the earliest open prediction. So a watermark with nothing due costs O(1) and each
change O(log n), however many predictions a user has.
"""

from __future__ import annotations

import heapq
from typing import Any

from labels.config import MODE_OBSERVE_THEN_CORRECT, LabelConfig

#: Ranks at equal due watermark: clicks first, then open predictions, then final ones.
CLICK, OPEN, FINAL = 0, 1, 2

#: [due watermark, rank, event ts, tie-break, reference: held-click key or prediction_id].
Item = list[Any]


def tiebreak(click: dict[str, Any]) -> str:
    """A content key ordering clicks with the same due watermark and ts.

    >>> tiebreak({"item_id": "i", "ts": 1, "click_id": "c7"})
    'c7\\x1f\\x1f\\x1fi'
    """
    fields = ("click_id", "prediction_id", "request_id", "item_id")
    return "\x1f".join(str(click.get(name) or "") for name in fields)


def lower(state: dict[str, Any], name: str, value: int) -> None:
    """Lower the cached ``state[name]`` (``next_ms`` / ``open_ms``) to ``value``.

    >>> s = {"next_ms": None}; lower(s, "next_ms", 9); lower(s, "next_ms", 12); s
    {'next_ms': 9}
    """
    if state[name] is None or value < state[name]:
        state[name] = value


class Schedule:
    """Due watermarks of held clicks and predictions under one ``LabelConfig``.

    >>> sched = Schedule(LabelConfig(window_ms=1_000, skew_ms=5, late_horizon_ms=100))
    >>> rec = {"pred": {"ts": 10_000}, "final": False, "observed": False}
    >>> sched.prediction_due(rec), sched.release_ms({"ts": 10_000})
    (11005, 10006)
    """

    __slots__ = ("_cfg",)

    def __init__(self, config: LabelConfig) -> None:
        self._cfg = config

    def release_ms(self, click: dict[str, Any]) -> int:
        """When a click held for its explicit ids is released to the other tiers.

        >>> Schedule(LabelConfig(skew_ms=0)).release_ms({"ts": 7})
        8
        """
        ts: int = click["ts"]
        return ts + self._cfg.skew_ms + 1

    def prediction_due(self, rec: dict[str, Any]) -> int:
        """The next due watermark of a prediction record (observe, close or forget).

        >>> sched = Schedule(LabelConfig(window_ms=1_000, skew_ms=0, late_horizon_ms=100))
        >>> sched.prediction_due({"pred": {"ts": 0}, "final": True, "observed": False})
        1100
        """
        cfg = self._cfg
        ts: int = rec["pred"]["ts"]
        if rec["final"]:
            return ts + cfg.window_ms + cfg.late_horizon_ms + cfg.skew_ms
        if cfg.mode == MODE_OBSERVE_THEN_CORRECT and not rec["observed"]:
            return ts + cfg.observe_ms + cfg.skew_ms
        return ts + cfg.window_ms + cfg.skew_ms

    def item(self, state: dict[str, Any], rank: int, ref: str) -> Item:
        """The timeline item of held click ``ref`` (rank CLICK) or of prediction ``ref``.

        >>> sched = Schedule(LabelConfig(skew_ms=0))
        >>> state = {"held": {"0": {"click": {"item_id": "i", "ts": 5}, "due_ms": 6}}}
        >>> sched.item(state, CLICK, "0")
        [6, 0, 5, '\\x1f\\x1f\\x1fi', '0']
        """
        if rank == CLICK:
            held = state["held"][ref]
            return [held["due_ms"], CLICK, held["click"]["ts"], tiebreak(held["click"]), ref]
        rec = state["predictions"][ref]
        return [self.prediction_due(rec), FINAL if rec["final"] else OPEN, rec["pred"]["ts"],
                ref, ref]

    def current(self, state: dict[str, Any], rank: int, ref: str) -> Item | None:
        """Like :meth:`item`, or None when ``ref`` is no longer in the state.

        >>> Schedule(LabelConfig()).current({"held": {}, "predictions": {}}, CLICK, "0") is None
        True
        """
        table = state["held"] if rank == CLICK else state["predictions"]
        return self.item(state, rank, ref) if ref in table else None

    def push(self, state: dict[str, Any], rank: int, ref: str) -> None:
        """Schedule the current item of ``ref`` (after it was added or changed).

        >>> sched = Schedule(LabelConfig(skew_ms=0))
        >>> s = {"held": {"0": {"click": {"item_id": "i", "ts": 5}, "due_ms": 6}},
        ...      "due": [], "next_ms": None}
        >>> sched.push(s, CLICK, "0"); s["next_ms"]
        6
        """
        item = self.current(state, rank, ref)
        if item is not None:
            heapq.heappush(state["due"], item)
            lower(state, "next_ms", item[0])

    def push_open(self, state: dict[str, Any], ts: int, pid: str) -> None:
        """Record that prediction ``pid`` (at ``ts``) is open, i.e. has no final label.

        >>> s = {"open": [], "open_ms": None}
        >>> Schedule(LabelConfig()).push_open(s, 40, "p"); s["open_ms"]
        40
        """
        heapq.heappush(state["open"], [ts, pid])
        lower(state, "open_ms", ts)

    def pop_due(self, state: dict[str, Any], watermark_ms: int) -> Item | None:
        """Remove and return the first live item due at ``watermark_ms``, or None.

        >>> Schedule(LabelConfig()).pop_due({"due": [], "held": {}, "predictions": {}}, 5)
        """
        heap = state["due"]
        while heap and heap[0][0] <= watermark_ms:
            item: Item = heapq.heappop(heap)
            if self.current(state, item[1], item[4]) == item:
                return item
        return None

    def settle(self, state: dict[str, Any]) -> None:
        """Drop stale heap tops; set the cached ``next_ms`` and ``open_ms``.

        >>> s = {"held": {}, "predictions": {}, "due": [[9, 0, 8, "", "0"]],
        ...      "open": [[3, "p"]], "next_ms": 9, "open_ms": 3}
        >>> Schedule(LabelConfig()).settle(s); (s["next_ms"], s["open_ms"], s["due"])
        (None, None, [])
        """
        due = state["due"]
        while due and self.current(state, due[0][1], due[0][4]) != due[0]:
            heapq.heappop(due)
        state["next_ms"] = due[0][0] if due else None
        opened, preds = state["open"], state["predictions"]
        while opened:
            rec = preds.get(opened[0][1])
            if rec is not None and not rec["final"] and rec["pred"]["ts"] == opened[0][0]:
                break
            heapq.heappop(opened)
        state["open_ms"] = opened[0][0] if opened else None
