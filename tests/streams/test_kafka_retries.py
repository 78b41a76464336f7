"""committed_offsets and watermarks: which broker answers are waited out, which stop the worker.

A scripted consumer stands in for the client here (the answers of a restarting
broker cannot be produced on demand); the chaos run (bench/chaos.py) exercises the
same path against a real broker restart.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams import changelog, kafka


class Scripted:
    """A consumer whose ``committed`` raises the scripted errors, then answers ``ok``."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)
        self.calls = 0

    def committed(self, tps: list[Any], timeout: float) -> list[Any]:
        self.calls += 1
        if self.errors:
            code = self.errors.pop(0)
            raise KafkaException(KafkaError(code, "scripted",
                                            retriable=code == KafkaError._TIMED_OUT))
        return ["ok"]


@pytest.mark.parametrize(("errors", "wait_s", "outcome"), [
    ([], 1.0, "ok"),
    ([KafkaError.NOT_COORDINATOR, KafkaError._TRANSPORT], 5.0, "ok"),
    ([KafkaError._TIMED_OUT] * 3, 5.0, "ok"),
    # the deadline passes while the coordinator is still away: raised
    ([KafkaError.COORDINATOR_NOT_AVAILABLE] * 50, 0.3, KafkaError.COORDINATOR_NOT_AVAILABLE),
    # an open transaction always ends (its timeout): waited for past the deadline
    ([KafkaError.UNSTABLE_OFFSET_COMMIT] * 6, 0.3, "ok"),
    # not a recovering broker: raised at once
    ([KafkaError.GROUP_AUTHORIZATION_FAILED], 5.0, KafkaError.GROUP_AUTHORIZATION_FAILED),
])
def test_committed_offsets_retries(errors: list[int], wait_s: float, outcome: Any,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    class Clock:  # the module's clock: each sleep moves it on, none really waits
        slept: ClassVar[list[float]] = []

        @staticmethod
        def monotonic() -> float:
            return 1_000.0 + sum(Clock.slept)

        @staticmethod
        def sleep(s: float) -> None:
            Clock.slept.append(s)

    monkeypatch.setattr(kafka, "time", Clock)
    slept = Clock.slept
    consumer = Scripted(errors)
    if outcome == "ok":
        assert kafka.committed_offsets(consumer, [], wait_s) == ["ok"]
        assert consumer.calls == len(errors) + 1
    else:
        with pytest.raises(KafkaException) as info:
            kafka.committed_offsets(consumer, [], wait_s)
        assert info.value.args[0].code() == outcome
    assert all(p <= 5.0 for p in slept)  # backoff is capped


class ScriptedEnds:
    """A consumer whose ``get_watermark_offsets`` raises the scripted errors, then answers."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = list(errors)

    def get_watermark_offsets(self, tp: Any, timeout: float, cached: bool) -> tuple[int, int]:
        if self.errors:
            raise KafkaException(KafkaError(self.errors.pop(0), "scripted"))
        return (3, 17)


@pytest.mark.parametrize(("errors", "ok"), [
    ([], True),
    # a just-created topic, a restarting broker: asked again
    ([KafkaError._UNKNOWN_PARTITION, KafkaError.NOT_LEADER_FOR_PARTITION,
      KafkaError._TIMED_OUT], True),
    # still unanswered when the deadline passes: one clear error
    ([KafkaError._UNKNOWN_PARTITION] * 100, False),
])
def test_watermarks_are_asked_again_until_the_deadline(
        errors: list[int], ok: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000.0]
    monkeypatch.setattr(changelog.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(changelog.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    consumer = ScriptedEnds(errors)
    if ok:
        assert changelog.watermarks(consumer, ("t", 2), deadline=1_010.0) == (3, 17)
    else:
        with pytest.raises(changelog.RestoreError, match=r"no watermarks of t\[2\]"):
            changelog.watermarks(consumer, ("t", 2), deadline=1_010.0)
        assert clock[0] > 1_010.0 and len(consumer.errors) < 100
