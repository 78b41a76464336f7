"""How long a caught-up worker gathers input before a batch (no broker: fake consumers
and a fake transaction in flight), with ``FRESHET_BATCH_JUST_IN_TIME``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from freshet.settings import Settings
from streams.worker import Worker

MIN_INTERVAL_MS = 100
MAX_EVENTS = 50


class FakeCommits:
    """A transaction in flight that should end at ``end_at`` (monotonic s) and does end
    at ``ends_at`` (None: it has ended already, or none is in flight)."""

    def __init__(self, end_in_s: float | None, ends_in_s: float | None) -> None:
        now = time.monotonic()
        self.end_at = None if end_in_s is None else now + end_in_s
        self.ends_at = None if ends_in_s is None else now + ends_in_s
        self.busy = end_in_s is not None

    def expected_end(self) -> float | None:
        if self.end_at is None or (self.ends_at is not None
                                   and time.monotonic() >= self.ends_at):
            return None
        return self.end_at


def a_worker(tmp_path: Path, commits: FakeCommits, process_s: float | None,
             per_poll: int) -> Worker:
    settings = Settings.from_env({"FRESHET_DATA_DIR": str(tmp_path),
                                  "FRESHET_BATCH_MIN_INTERVAL_MS": str(MIN_INTERVAL_MS),
                                  "FRESHET_BATCH_MAX_EVENTS": str(MAX_EVENTS),
                                  "FRESHET_BATCH_JUST_IN_TIME": "true"})
    worker = Worker(settings)
    worker.commits = commits  # type: ignore[assignment]
    worker._process_s = process_s

    def consume(timeout_s: float) -> list[Any]:
        time.sleep(timeout_s)  # a poll that waits its whole timeout, then has records
        return [object()] * per_poll

    worker._consume = consume  # type: ignore[method-assign]
    return worker


# (transaction should end in, does end in, processing time, records per poll,
#  earliest return, latest return): seconds after the last batch began (now)
CASES = [
    # nothing in flight: the minimum interval only
    (None, None, 0.05, 0, 0.100, 0.35),
    # in flight, ends in 0.4 s, a batch takes 0.1 s: gathered until 0.3 s
    (0.4, None, 0.05 * 2, 0, 0.300, 0.60),
    # no processing time measured yet: the minimum interval only
    (0.4, None, None, 0, 0.100, 0.35),
    # the transaction ends early (0.15 s): processed at once, past the minimum interval
    (0.6, 0.15, 0.1, 0, 0.150, 0.40),
    # expected to end before the minimum interval: the minimum interval wins
    (0.05, None, 0.01, 0, 0.100, 0.35),
    # a full batch gathered: at once
    (0.6, None, 0.1, MAX_EVENTS, 0.000, 0.20),
]


@pytest.mark.parametrize(("end_in", "ends_in", "process_s", "per_poll", "earliest", "latest"),
                         CASES)
def test_gathering_lasts_until_the_transaction_in_flight_ends_less_a_batch(
        tmp_path: Path, end_in: float | None, ends_in: float | None,
        process_s: float | None, per_poll: int, earliest: float, latest: float) -> None:
    worker = a_worker(tmp_path, FakeCommits(end_in, ends_in), process_s, per_poll)
    began = time.monotonic()
    msgs = worker._gather([], began + MIN_INTERVAL_MS / 1000)
    took = time.monotonic() - began
    assert earliest - 0.01 <= took <= latest, took
    if per_poll:
        assert MAX_EVENTS <= len(msgs) < 2 * MAX_EVENTS
