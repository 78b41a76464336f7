"""Faults injected into the worker's own clients (in-process worker, real broker)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from freshet.generator import GeneratorConfig, generate
from freshet.topics import create_topics
from streams.worker import Worker
from tests.streams.expected import TOPICS, Expected
from tests.streams.support import consume, produce_log
from tests.streams.test_features_stream import make_settings
from tests.streams.test_labels_stream import LABEL_ENV

pytestmark = pytest.mark.integration


class FencedOnce:
    """The group consumer; the first one made fails for good in its first offsets call
    (as a consumer fenced by its own rejoin does after a broker restart)."""

    made: ClassVar[list[FencedOnce]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self._consumer = Consumer(config)
        self.fail = not FencedOnce.made
        FencedOnce.made.append(self)

    def committed(self, tps: list[Any], timeout: float = -1) -> Any:
        if self.fail:
            self.fail = False
            raise KafkaException(KafkaError(KafkaError._FATAL, "injected: fenced", fatal=True))
        return self._consumer.committed(tps, timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_a_fatal_group_error_inside_a_call_replaces_the_consumer(
        kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    # before, the error escaped the loop and the worker process ended
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path, **LABEL_ENV,
                             FRESHET_COMMIT_INTERVAL_MS="200", FRESHET_WEB_ENABLED="false")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=43, users=30, items=15, predictions=400,
                                            malformed_fraction=0.01)))
    FencedOnce.made = []
    worker = Worker(settings, group_factory=FencedOnce)
    worker.start()
    try:
        expected = Expected(produce_log(settings, records))
        got = consume(settings, TOPICS, expected.done, timeout_s=120)
        deadline = time.monotonic() + 10
        while worker.error is None and len(FencedOnce.made) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert worker.error is None and worker.running
    finally:
        worker.stop()
    assert len(FencedOnce.made) == 2, "the failed group consumer was replaced once"
    expected.check(got)
