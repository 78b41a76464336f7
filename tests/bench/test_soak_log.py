"""The soak's stitched log runs as a live stream's event time does (``bench/soak.py``).

Oracle: a running maximum of event time over the log as sent. A record more than the
allowed lateness behind it would be behind a worker's watermark whenever its topic is
read a moment after the other one, and is dropped as late: the soaks before ``merge``
sent 7.4 % of their input to ``dead-letters`` that way.
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter

import pytest

from bench.soak import chunked_log
from freshet.generator import GeneratedRecord
from freshet.settings import Settings

LATENESS_MS = Settings().allowed_lateness_ms


def log(stitch: str, n: int, seed: int = 3) -> list[GeneratedRecord]:
    args = argparse.Namespace(seed=seed, users=60, items=40, chunk_predictions=1_500,
                              stitch=stitch, malformed_fraction=0.01)
    return list(itertools.islice(chunked_log(args), n))


def most_behind_ms(records: list[GeneratedRecord]) -> int:
    newest, worst = None, 0
    for r in records:
        if r.ts is None:
            continue
        if newest is not None:
            worst = max(worst, newest - r.ts)
        newest = r.ts if newest is None else max(newest, r.ts)
    return worst


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merged_chunks_are_never_behind_event_time_by_more_than_the_lateness(
        seed: int) -> None:
    merged = log("merge", 12_000, seed)
    assert most_behind_ms(merged) < LATENESS_MS
    # what the merge fixes: the previous stitching sends late clicks hours ahead
    assert most_behind_ms(log("prediction", 12_000, seed)) > 3_600_000


def test_merged_chunks_lose_and_repeat_nothing() -> None:
    merged = log("merge", 12_000)
    sent = log("prediction", 20_000)  # the same chunks, each sent whole
    # every merged record is one of the chunks' records, none more often than there
    assert not Counter(merged) - Counter(sent)
    # and every chunk record older than the merged log's newest (less the jitter) is in it
    newest = max(r.ts for r in merged if r.ts is not None)
    due = Counter(r for r in sent if r.ts is not None and r.ts < newest - LATENESS_MS)
    assert not due - Counter(merged)
    assert sum(due.values()) > 10_000
