"""Shadow predictions of the label engine: finding, following and mirroring served twins.

Shadow predictions (``served: false``: another model's score of the same request and
item as a served prediction) are labelled with the served prediction's outcome and
never take a click:

- a shadow's *served twin* is the served prediction a click naming the shadow's
  ``request_id`` + ``item_id`` at the shadow's ts would go to: same user, request and
  item, ``twin.ts - skew <= shadow.ts < twin.ts + window + late_horizon`` (the
  prediction is still remembered), the latest ``(ts, prediction_id)`` if several.
  It is looked for once the watermark reaches ``shadow.ts + skew + 1``, when every
  candidate has arrived, so the answer does not depend on arrival order;
- a shadow with a twin gets, for each of the twin's label records after its
  arrival one (every mode: ``positive``/``negative``, ``late_positive``,
  ``observed_*``, ``real_negative``), the same record: same ``label``, ``kind``,
  ``final``, version sequence, ``delay_ms`` (the impression's click delay), and
  ``label_ts`` = the twin's, raised to the shadow's own ts if that is later; records
  the twin made before the shadow was linked are caught up at once. The shadow's own
  arrival record (``early_negative``) is its own. Shadow records carry
  ``served: false``; a shadow's final label and example carry
  ``served_prediction_id`` (the twin's id, or null);
- a shadow with no twin closes negative on its own deadlines, like a served
  prediction that got no click (its final label has ``served_prediction_id: null``,
  so evaluation can tell it apart);
- attribution sees served predictions only (the request and item indexes hold no
  shadow), so a shadow never takes a click from a served one, even as the only
  candidate. A click whose ``prediction_id`` names a shadow goes, once the watermark
  passes ``click.ts + skew`` (all candidates known), to the served prediction of the
  shadow's ``request_id`` + ``item_id``, else to the click's own request id and the
  fallback; if none takes it, it is unattributed (``shadow_prediction_id``).

Here: a shadow's twin is looked for at its ``RESOLVE`` deadline
(:meth:`ShadowTwins._resolve_twins`, caught up from the twin's state by
:meth:`ShadowTwins._records_of`), then follows it (``_followers``: served row -> its
shadows) and gets each record the twin makes (:meth:`ShadowTwins._mirror`, called by the
engine's emission); :meth:`ShadowTwins._served_of` is also where a click naming a shadow
is redirected (:mod:`labels.clicks`), and :meth:`ShadowTwins._relink` rebuilds the
followers after a restore (:mod:`labels.changelog`).
"""

from __future__ import annotations

import numpy as np

from labels.config import MODE_EARLY_NEGATIVE, MODE_OBSERVE_THEN_CORRECT
from labels.pending import NONE, TWIN_LINKED, TWIN_ORPHAN, TWIN_PENDING
from labels.state import CLOSE_KIND, I64, POSITIVE_KIND, EngineState


class ShadowTwins(EngineState):
    """The shadow-twin part of :class:`~labels.engine.LabelEngine` (see the module doc)."""

    def _served_of(self, shadow: int, at_ms: int) -> int | None:
        """The served row a click naming ``shadow``'s request and item at ``at_ms`` goes
        to (same user; the latest ``(ts, prediction_id)``), or None: at the shadow's own
        ts, its served twin."""
        table = self.table
        return table.latest_by_request(table.user_id[shadow], table.request_id[shadow],
                                       table.item_id[shadow], at_ms, self.config.skew_ms,
                                       self._remember)

    def _mirror(self, rows: I64, label: int, kind: str, final: bool, label_ts: I64,
                delay: I64 | None) -> None:
        """The same record for every shadow following one of ``rows`` (see module doc)."""
        followers = self._followers
        shadows: list[int] = []
        lts: list[int] = []
        delays: list[int] = []
        given = [0] * len(rows) if delay is None else delay.tolist()
        for row, at, d in zip(rows.tolist(), label_ts.tolist(), given, strict=True):
            mine = followers.get(row)
            if mine is None:
                continue
            if final:
                del followers[row]
            if len(mine) > 1:  # id order: the same however the followers were linked
                mine = sorted(mine, key=self.table.pid.__getitem__)
            shadows.extend(mine)
            lts.extend([at] * len(mine))
            delays.extend([d] * len(mine))
        if not shadows:
            return
        table = self.table
        these = np.array(shadows, dtype=np.int64)
        if kind.startswith("observed"):
            table.observed[these] = True
        self._dirty.update(shadows)
        self._emit_bulk(these, label, kind, final=final,
                        label_ts=np.maximum(np.array(lts, dtype=np.int64), table.ts[these]),
                        delay=None if delay is None else np.array(delays, dtype=np.int64))
        if final:
            self._schedule(these)

    def _resolve_twins(self, rows: I64) -> None:
        """Link each shadow to its served twin (caught up with its records), or orphan it."""
        if len(rows) == 0:
            return
        table = self.table
        self._dirty.update(rows.tolist())
        for row in sorted(rows.tolist(), key=table.pid.__getitem__):
            twin = self._served_of(row, int(table.ts[row]))
            if twin is None:
                table.twin_state[row], table.twin[row] = TWIN_ORPHAN, ""
                continue
            table.twin_state[row], table.twin[row] = TWIN_LINKED, table.pid[twin]
            one = np.array([row], dtype=np.int64)
            ts = int(table.ts[row])
            # records it has already (its own arrival one; more only when re-linked)
            done = int(table.version[row]) - (self.config.mode == MODE_EARLY_NEGATIVE)
            for label, kind, final, at, d in self._records_of(twin)[done:]:
                if kind.startswith("observed"):
                    table.observed[row] = True
                self._emit_bulk(one, label, kind, final=final, label_ts=np.array([max(at, ts)]),
                                delay=None if d is None else np.array([d]))
            if not table.final[row]:
                self._followers.setdefault(twin, []).append(row)
        self._schedule(rows)

    def _records_of(self, row: int) -> list[tuple[int, str, bool, int, int | None]]:
        """(label, kind, final, label_ts, delay_ms) of the records a served row made after
        its arrival one, rebuilt from its state."""
        cfg, table = self.config, self.table
        ts, version = int(table.ts[row]), int(table.version[row])
        final, label = bool(table.final[row]), int(table.label[row])
        click = int(table.click_ts[row])
        at, delay = (ts, 0) if click == NONE else (click, click - ts)
        out: list[tuple[int, str, bool, int, int | None]] = []
        if cfg.mode == MODE_OBSERVE_THEN_CORRECT and table.observed[row]:
            if final and version == 1:
                return [(1, "observed_positive", True, ts + cfg.observe_ms, delay)]
            out.append((0, "observed_negative", False, ts + cfg.observe_ms, None))
        if final:
            if label == 1:
                out.append((1, POSITIVE_KIND.get(cfg.mode, "late_positive"), True, at, delay))
            else:
                out.append((0, CLOSE_KIND[cfg.mode], True, ts + cfg.window_ms, None))
        return out

    def _relink(self, rows: I64) -> None:
        """Rebuild the followers of restored linked shadows."""
        table = self.table
        linked = rows[(table.twin_state[rows] == TWIN_LINKED) & ~table.final[rows]]
        for row in linked.tolist():
            twin = table.by_pid.get(table.twin[row] or "")
            if twin is None or table.final[twin]:  # (a changelog cut mid-batch) look again:
                table.twin_state[row], table.twin[row] = TWIN_PENDING, None  # catch up
            else:
                self._followers.setdefault(twin, []).append(row)
