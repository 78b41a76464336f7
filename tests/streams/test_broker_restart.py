"""A broker restart mid-stream: the worker stays up, and every output equals the oracle.

The test runs a broker of its own (the launcher, on free loopback ports, folder under
``var/``) so it can stop and start it; the shared broker of the session is never
touched. Before the fixes this guards, a restart ended workers with a fatal
producer error, a watermark lookup escaping a rebalance callback, offsets a
transaction still held, or the evaluation stage's producer timing out.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.kafka_local import LocalKafka
from freshet.topics import create_topics
from tests.conftest import ROOT, _free_port_pair
from tests.streams import oracle
from tests.streams.expected import TOPICS, Expected
from tests.streams.support import (
    Produced,
    consume,
    processed,
    produce_log,
    running_worker,
    stats,
)
from tests.streams.test_features_stream import make_settings
from tests.streams.test_labels_stream import LABEL_ENV

pytestmark = [pytest.mark.integration, pytest.mark.restart]


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    port = _free_port_pair()
    kafka = LocalKafka(home=ROOT / "var" / f"kafka-restart-{port}", port=port)
    shutil.rmtree(kafka.home, ignore_errors=True)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(kafka.home, ignore_errors=True)


def test_the_worker_survives_a_broker_restart(own_broker: LocalKafka, unique_prefix: str,
                                              tmp_path: Path) -> None:
    # the idle advance moves a quiet input's watermark by wall-clock time: 30 s keeps
    # the outage (~15 s) from making the second half's events late
    env = {**LABEL_ENV, "FRESHET_IDLE_ADVANCE_MS": "30000", "FRESHET_BROKER_WAIT_MS": "180000"}
    settings = make_settings(own_broker.bootstrap, unique_prefix, tmp_path / "data", **env,
                             FRESHET_COMMIT_INTERVAL_MS="200", FRESHET_STORE="rocksdb",
                             FRESHET_CHECKPOINT_INTERVAL_MS="1000")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=23, users=50, items=20, predictions=1_600,
                                            malformed_fraction=0.01)))
    half = len(records) // 2
    with running_worker(settings, tmp_path / "worker.log") as worker:
        log: list[Produced] = produce_log(settings, records[:half])
        first = len(oracle.valid_events(log))
        deadline = time.monotonic() + 120
        while processed(settings) < first:  # the first half is in (and committing)
            assert time.monotonic() < deadline, worker.log_tail()
            time.sleep(0.3)
        own_broker.stop()
        time.sleep(2.0)
        own_broker.start()
        log += produce_log(settings, records[half:])

        expected = Expected(log)

        try:
            got = consume(settings, TOPICS, expected.done, timeout_s=240, worker=worker)
        except AssertionError as exc:  # with what the worker says it is waiting for
            raise AssertionError(f"{exc}\nworker /stats: {stats(settings)}") from None
        assert worker.proc is not None and worker.proc.poll() is None, (
            f"the worker exited at the broker restart:\n{worker.log_tail()}")

    expected.check(got)
