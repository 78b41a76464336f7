"""Splitting frames to fit a size limit: the same parts as encoding and halving.

The oracle is the plain recursion (encode the whole frame; over the limit and more
than one row: split the rows in two halves and recurse), which encodes every level;
``frames.encode_split`` computes the sizes instead. Non-ASCII and byte columns, empty
frames and limits below one row are included.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import frames


def halved(frame: frames.Frame, limit: int) -> list[bytes]:
    value = frames.encode(frame)
    n = len(frame)
    if len(value) <= limit or n <= 1:
        return [value]
    half, rest = np.arange(n // 2), np.arange(n // 2, n)
    return (halved(frames.take(frame, half), limit)
            + halved(frames.take(frame, rest), limit))


@st.composite
def frames_and_limits(draw: st.DrawFn) -> tuple[frames.Frame, int]:
    n = draw(st.integers(0, 60))
    text = st.text(alphabet=st.sampled_from("ab,é\"\\😀"), max_size=12)
    cols: dict[str, Any] = {
        "ts": np.array(draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)),
                       dtype=np.int64),
        "id": draw(st.lists(text, min_size=n, max_size=n)),
    }
    if draw(st.booleans()):
        cols["raw"] = draw(st.lists(st.binary(max_size=20), min_size=n, max_size=n))
    meta = {"origin": draw(st.integers(0, 10**6)), "wm": draw(st.none() | st.integers())}
    return frames.Frame(cols, meta), draw(st.integers(1, 3_000))


@settings(derandomize=True, max_examples=400, deadline=None, database=None)
@given(frames_and_limits())
def test_encode_split_gives_the_halving_parts(case: tuple[frames.Frame, int]) -> None:
    frame, limit = case
    parts = frames.encode_split(frame, limit)
    assert parts == halved(frame, limit)
    assert sum(len(frames.decode(p)) for p in parts) == len(frame)


def test_a_large_frame_is_cut_in_parts_that_fit() -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    frame = frames.Frame({"ts": rng.integers(0, 2**40, n),
                          "user_id": [f"user-{i:06d}" for i in rng.integers(0, 10**6, n)]},
                         {"origin": 1, "wm": None})
    parts = frames.encode_split(frame, 64 * 1024)
    assert parts == halved(frame, 64 * 1024)
    assert all(len(p) <= 64 * 1024 for p in parts) and len(parts) > 1
