"""The label engine's changelog: its state as keyed records, and back.

One record per remembered prediction (``PREDICTION_KEY`` + its id, a
:class:`~labels.records.StoredPrediction`: its core fields, the bytes it carries to
its training example, its label progress and its served twin), one per held click
(``HELD_KEY`` + its arrival number, a :class:`~labels.records.StoredHeld`), and the
next held click's number (``META_KEY``); a forgotten prediction or a resolved click is
a tombstone. :meth:`Changelog.take_deltas` gives what changed since the last call (rows
encoded as columns gathered at once); :meth:`Changelog.restore` rebuilds the state from
the latest value per key, so a restarted worker resumes exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
import numpy as np

from labels.pending import NONE, TWIN_LINKED, TWIN_ORPHAN
from labels.records import (
    HELD_KEY,
    META_KEY,
    PREDICTION_KEY,
    StoredHeld,
    StoredPrediction,
    decode_held,
    decode_prediction,
    encode,
)
from labels.state import I64, EngineState, HeldClick


class Changelog(EngineState):
    """The changelog part of :class:`~labels.engine.LabelEngine` (see the module doc)."""

    def take_deltas(self) -> list[tuple[bytes, bytes | None]]:
        """Changelog records of what changed since the last call (None: delete the key)."""
        table = self.table
        out: list[tuple[bytes, bytes | None]] = []
        if not self.changelog:
            self._forgotten, self._dirty, self._held_dirty = [], set(), set()
            return out
        for pid in self._forgotten:
            out.append((PREDICTION_KEY + pid.encode(), None))
        if self._dirty:
            rows = np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty))
            rows.sort()
            out.extend(self._encode_rows(rows[table.live[rows]]))
        for seq in sorted(self._held_dirty):
            held = self._held.get(seq)
            out.append(self._encode_held(seq) if held is not None
                       else (HELD_KEY + seq.to_bytes(8, "big"), None))
        if self._meta_dirty:
            out.append((META_KEY, str(self._next_held).encode()))
        self._forgotten, self._dirty, self._held_dirty = [], set(), set()
        self._meta_dirty = False
        return out

    def _encode_rows(self, rows: I64) -> list[tuple[bytes, bytes]]:
        """Changelog records of rows (columns gathered at once, not per row)."""
        t = self.table
        r = rows.tolist()
        clicks: list[int | None] = [None if c == NONE else c for c in t.click_ts[rows].tolist()]
        stored = map(StoredPrediction, [t.pid[i] for i in r], [t.request_id[i] for i in r],
                     [t.user_id[i] for i in r], [t.item_id[i] for i in r],
                     [t.model_id[i] for i in r], t.score[rows].tolist(), t.ts[rows].tolist(),
                     t.served[rows].tolist(),
                     [_raw(b"{" + t.fields_json[i] + b"}") for i in r],
                     [_raw_or_none(t.user_snapshot[i]) for i in r],
                     [_raw_or_none(t.item_snapshot[i]) for i in r],
                     [_raw_or_none(_braced(t.waiting[i])) for i in r],
                     t.final[rows].tolist(), t.label[rows].tolist(), t.version[rows].tolist(),
                     t.observed[rows].tolist(),
                     clicks,
                     t.extra[rows].tolist(), t.late[rows].tolist(),
                     [t.twin[i] for i in r] if t.n_shadows else [None] * len(r))
        return [(PREDICTION_KEY + t.pid[i].encode(), encode(sp))
                for i, sp in zip(r, stored, strict=True)]

    def _encode_held(self, seq: int) -> tuple[bytes, bytes]:
        held = self._held[seq]
        return (HELD_KEY + seq.to_bytes(8, "big"),
                encode(StoredHeld(seq, held.due_ms, _raw(held.json))))

    def restore(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """Rebuild the state from the changelog's latest value per key (no tombstones)."""
        from events.contracts import decode_click

        preds: list[StoredPrediction] = []
        for key, value in records:
            tag = key[:1]
            if tag == PREDICTION_KEY:
                preds.append(decode_prediction(value))
            elif tag == HELD_KEY:
                held = decode_held(value)
                click = decode_click(bytes(held.click))
                self._held[held.seq] = HeldClick(click, bytes(held.click), held.due_ms)
                self._push(held.seq)
                if held.due_ms > click.ts + 1:
                    self._index_held(held.seq, click)
            elif tag == META_KEY:
                self._next_held = max(self._next_held, int(value))
        if not preds:
            return
        table = self.table
        rows = table.add([p.prediction_id for p in preds], [p.request_id for p in preds],
                         [p.user_id for p in preds], [p.item_id for p in preds],
                         [p.model_id for p in preds], np.array([p.score for p in preds]),
                         np.array([p.ts for p in preds], dtype=np.int64),
                         np.array([p.served for p in preds], dtype=np.bool_))
        for row, p in zip(rows.tolist(), preds, strict=True):
            table.fields_json[row] = bytes(p.fields)[1:-1]
            table.user_snapshot[row] = _bytes_or_none(p.user)
            table.item_snapshot[row] = _bytes_or_none(p.item)
            waiting = _bytes_or_none(p.waiting)
            table.waiting[row] = None if waiting is None else waiting[1:-1]
            table.final[row], table.label[row], table.version[row] = p.final, p.label, p.version
            table.observed[row] = p.observed
            table.click_ts[row] = NONE if p.click_ts is None else p.click_ts
            table.extra[row], table.late[row] = p.extra, p.late
            table.seq[row] = -1  # arrived before any record processed from now on
            if not p.served and p.twin is not None:
                table.twin[row] = p.twin
                table.twin_state[row] = TWIN_LINKED if p.twin else TWIN_ORPHAN
        if table.n_shadows:
            self._relink(rows)
        self._schedule(rows)


def _braced(inner: bytes | None) -> bytes | None:
    return None if inner is None else b"{" + inner + b"}"


def _raw(data: bytes) -> msgspec.Raw:
    return msgspec.Raw(data)


def _raw_or_none(data: bytes | None) -> msgspec.Raw:
    return _raw(b"null" if data is None else data)


def _bytes_or_none(raw: msgspec.Raw) -> bytes | None:
    data = bytes(raw)
    return None if data == b"null" else data
