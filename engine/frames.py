"""Columnar frames: how batches cross the internal topics (items repartition, snapshots).

A frame is a small header (msgspec JSON: row count, column names and kinds, and a
``meta`` object) followed by each column's raw buffer: int64/float64/int8 arrays as
they are in memory, strings and byte strings as an offsets array plus one blob. A
batch of thousands of events becomes one message that decodes with a few numpy
calls, instead of one JSON document per event.

:func:`decode` checks every length and raises :class:`FrameError` on anything that
is not a frame, so a damaged or foreign record on an internal topic becomes a dead
letter instead of a crash.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
import numpy as np
import numpy.typing as npt

MAGIC: Final = b"FRF1"

Kind = Literal["i64", "f64", "i8", "str", "bytes"]
_DTYPES: Final = {"i64": np.int64, "f64": np.float64, "i8": np.int8}


class FrameError(ValueError):
    """Bytes that are not a valid frame (the reason says what is wrong)."""


class _Header(msgspec.Struct):
    n: int
    cols: list[tuple[str, str]]
    meta: dict[str, Any] = {}


_encode_header = msgspec.json.Encoder().encode
_decode_header = msgspec.json.Decoder(_Header).decode


@dataclass(slots=True)
class Frame:
    """Columns of equal length plus a ``meta`` mapping.

    >>> f = Frame({"ts": np.array([5, 7]), "id": ["a", "b"]}, {"wm": 3})
    >>> g = decode(encode(f))
    >>> g.columns["ts"].tolist(), g.columns["id"], g.meta
    ([5, 7], ['a', 'b'], {'wm': 3})
    """

    columns: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        for values in self.columns.values():
            return len(values)
        return 0


def _kind(values: Any) -> Kind:
    if isinstance(values, np.ndarray):
        if values.dtype == np.int64:
            return "i64"
        if values.dtype == np.float64:
            return "f64"
        if values.dtype == np.int8:
            return "i8"
        raise TypeError(f"unsupported column dtype {values.dtype}")
    if values and isinstance(values[0], bytes | bytearray):
        return "bytes"
    return "str"


def _utf8(values: Sequence[str]) -> tuple[bytes, npt.NDArray[np.int64]]:
    """A string column as one UTF-8 blob and each item's byte length."""
    joined = "".join(values)
    if joined.isascii():  # the usual ids: one encode for the column, lengths from str
        return joined.encode(), np.fromiter(map(len, values), dtype=np.int64,
                                            count=len(values))
    items = [v.encode() for v in values]
    return b"".join(items), np.fromiter(map(len, items), dtype=np.int64, count=len(items))


def _byte_lengths(values: Sequence[str] | Sequence[bytes], kind: Kind) -> npt.NDArray[np.int64]:
    if kind == "bytes":
        return np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    strings: Sequence[str] = values  # type: ignore[assignment]
    if "".join(strings).isascii():
        return np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    return np.fromiter((len(v.encode()) for v in strings), dtype=np.int64, count=len(strings))


def _offsets(lengths: npt.NDArray[np.int64]) -> bytes:
    return np.concatenate(([0], np.cumsum(lengths))).astype(np.int64).tobytes()


def encode(frame: Frame) -> bytes:
    """The frame as bytes (see the module doc)."""
    n = len(frame)
    cols: list[tuple[str, str]] = []
    parts: list[bytes] = []
    for name, values in frame.columns.items():
        if len(values) != n:
            raise ValueError(f"column {name!r} has {len(values)} rows, expected {n}")
        kind = _kind(values)
        cols.append((name, kind))
        if kind in _DTYPES:
            parts.append(np.ascontiguousarray(values, dtype=_DTYPES[kind]).tobytes())
        elif kind == "str":
            blob, lengths = _utf8(values)
            parts += (_offsets(lengths), blob)
        else:
            parts += (_offsets(_byte_lengths(values, kind)), b"".join(values))
    header = _encode_header(_Header(n, cols, frame.meta))
    return MAGIC + len(header).to_bytes(4, "little") + header + b"".join(parts)


def encode_split(frame: Frame, limit: int) -> list[bytes]:
    """``frame`` as few encoded frames as fit ``limit`` bytes each: halved until each
    part fits (or is one row). Usually the whole frame fits; when not, the parts' sizes
    are computed, not encoded, so each row is encoded once more whatever the depth of
    the halving.

    >>> f = Frame({"x": np.arange(100), "s": ["ab"] * 100})
    >>> [len(decode(b)) for b in encode_split(f, limit=600)]
    [25, 25, 25, 25]
    """
    whole = encode(frame)
    n = len(frame)
    if len(whole) <= limit or n <= 1:  # the usual case: one part, encoded once
        return [whole]
    names: list[tuple[str, str]] = []
    fixed = 0
    var: list[npt.NDArray[np.int64]] = []  # per string column: cumulative byte lengths
    for name, values in frame.columns.items():
        kind = _kind(values)
        names.append((name, kind))
        if kind in _DTYPES:
            fixed += np.dtype(_DTYPES[kind]).itemsize
        else:
            var.append(np.concatenate(([0], np.cumsum(_byte_lengths(values, kind)))))
            fixed += 8

    def size(a: int, b: int) -> int:
        header = len(_encode_header(_Header(b - a, names, frame.meta)))
        return (8 + header + fixed * (b - a) + 8 * len(var)
                + sum(int(c[b] - c[a]) for c in var))

    def cuts(a: int, b: int) -> list[tuple[int, int]]:
        if b - a <= 1 or size(a, b) <= limit:
            return [(a, b)]
        mid = a + (b - a) // 2
        return cuts(a, mid) + cuts(mid, b)

    return [encode(_slice(frame, a, b)) for a, b in cuts(0, n)]


def _slice(frame: Frame, a: int, b: int) -> Frame:
    return Frame({name: values[a:b] for name, values in frame.columns.items()}, dict(frame.meta))


def decode(raw: bytes | None, expect: Mapping[str, Kind] | None = None) -> Frame:
    """A frame from :func:`encode` bytes, or :class:`FrameError`.

    ``expect``: columns the frame must have, with their kinds (others are allowed).

    >>> decode(encode(Frame({"x": np.array([1])})), {"x": "str"})
    Traceback (most recent call last):
    ...
    engine.frames.FrameError: column 'x' is i64, expected str
    """
    if raw is None:
        raise FrameError("null value, expected a frame")
    if len(raw) < 8 or raw[:4] != MAGIC:
        raise FrameError("not a freshet frame (bad magic)")
    size = int.from_bytes(raw[4:8], "little")
    if 8 + size > len(raw):
        raise FrameError("frame header runs past the end")
    head = raw[8:8 + size]
    try:
        head.decode("utf-8")  # msgspec skips unknown fields without checking their UTF-8
        header = _decode_header(head)
    except UnicodeDecodeError:
        raise FrameError("frame header is not UTF-8") from None
    except (msgspec.MsgspecError, RecursionError) as exc:  # msgspec recurses into meta
        raise FrameError(f"bad frame header: {exc}") from None
    n, pos, view = header.n, 8 + size, memoryview(raw)
    if n < 0:
        raise FrameError("negative row count")
    if expect:
        kinds: dict[str, str] = dict(header.cols)
        for name, want in expect.items():
            if name not in kinds:
                raise FrameError(f"column {name!r} is missing")
            if kinds[name] != want and n:  # an empty list column encodes as "str"
                raise FrameError(f"column {name!r} is {kinds[name]}, expected {want}")
    columns: dict[str, Any] = {}
    for name, kind in header.cols:
        if kind in _DTYPES:
            dtype = np.dtype(_DTYPES[kind])
            end = pos + n * dtype.itemsize
            if end > len(raw):
                raise FrameError(f"column {name!r} runs past the end")
            columns[name] = np.frombuffer(view[pos:end], dtype=dtype).copy()
            pos = end
        elif kind in ("str", "bytes"):
            end = pos + 8 * (n + 1)
            if end > len(raw):
                raise FrameError(f"column {name!r} offsets run past the end")
            offsets = np.frombuffer(view[pos:end], dtype=np.int64)
            # compared, not subtracted: differences of hostile int64s overflow
            if (offsets[0] != 0 or (offsets[1:] < offsets[:-1]).any()
                    or int(offsets[-1]) > len(raw) - end):
                raise FrameError(f"column {name!r} has bad offsets")
            blob = raw[end:end + int(offsets[-1])]
            cuts = offsets.tolist()
            if kind == "str" and blob.isascii():  # the usual ids: one decode, then cuts
                text = blob.decode("ascii")
                columns[name] = [text[a:b] for a, b in itertools.pairwise(cuts)]
            elif kind == "str":  # each item must be UTF-8 by itself
                try:
                    columns[name] = [blob[a:b].decode() for a, b in itertools.pairwise(cuts)]
                except UnicodeDecodeError:
                    raise FrameError(f"column {name!r} is not UTF-8") from None
            else:
                columns[name] = [blob[a:b] for a, b in itertools.pairwise(cuts)]
            pos = end + int(offsets[-1])
        else:
            raise FrameError(f"column {name!r} has unknown kind {kind!r}")
    if pos != len(raw):
        raise FrameError(f"{len(raw) - pos} trailing bytes after the frame")
    return Frame(columns, dict(header.meta))


def take(frame: Frame, rows: npt.NDArray[np.int64]) -> Frame:
    """The frame's rows ``rows`` (same meta).

    >>> take(Frame({"a": np.array([1, 2, 3]), "s": ["x", "y", "z"]}), np.array([2, 0])).columns
    {'a': array([3, 1]), 's': ['z', 'x']}
    """
    out: dict[str, Any] = {}
    picks = rows.tolist()
    for name, values in frame.columns.items():
        out[name] = values[rows] if isinstance(values, np.ndarray) else [values[i] for i in picks]
    return Frame(out, dict(frame.meta))


def concat(frames: Sequence[Frame], names: Mapping[str, Kind]) -> dict[str, Any]:
    """The columns ``names`` of several frames, one after the other."""
    out: dict[str, Any] = {}
    for name, kind in names.items():
        if kind in _DTYPES:
            parts = [f.columns[name] for f in frames]
            out[name] = (np.concatenate(parts).astype(_DTYPES[kind]) if parts
                         else np.empty(0, dtype=_DTYPES[kind]))
        else:
            out[name] = [x for f in frames for x in f.columns[name]]
    return out
