"""Labels across a worker killed mid-stream (SIGKILL) and restarted: exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.topics import create_topics
from tests.streams import oracle
from tests.streams.expected import Expected
from tests.streams.label_oracle import final_labels
from tests.streams.support import (
    Worker,
    consume,
    http_get,
    processed,
    produce_log,
    produce_then_kill,
    running_worker,
)
from tests.streams.test_features_stream import make_settings
from tests.streams.test_labels_stream import HORIZON, LABEL_ENV, SKEW, WINDOW, finals

pytestmark = [pytest.mark.integration, pytest.mark.restart]


@pytest.mark.parametrize("store", ["memory", "rocksdb"])
def test_labels_survive_sigkill_and_restart(kafka_bootstrap: str, unique_prefix: str,
                                            tmp_path: Path, store: str) -> None:
    # memory: the restart rebuilds from the whole changelog; rocksdb: from the local
    # store (marked every second) and the changelog after its mark
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             FRESHET_COMMIT_INTERVAL_MS="300", **LABEL_ENV,
                             FRESHET_STORE=store, FRESHET_CHECKPOINT_INTERVAL_MS="1000",
                             FRESHET_BATCH_MAX_EVENTS="300")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=31, users=40, items=30, predictions=1_500)))
    half = len(records) // 2

    log = produce_then_kill(settings, tmp_path / "worker-1.log", records[:half],
                            lambda s: s["transactions"] >= 5 and s["labels"].get("label", 0) >= 50)

    second = Worker(settings, tmp_path / "worker-2.log")
    second.start()
    try:
        log += produce_log(settings, records[half:])
        events = oracle.valid_events(log)
        expected = final_labels(events, WINDOW, SKEW, HORIZON)

        def done(got: dict[str, list[Any]]) -> bool:
            # an example may come a batch after its label (its item's snapshot comes
            # back from the item side), so wait for both
            return (len(finals(got["labels"])) >= len(expected)
                    and len({orjson.loads(m.value())["prediction_id"]
                             for m in got["training_examples"]}) >= len(expected))

        got = consume(settings, ["labels", "training_examples"], done, timeout_s=240,
                      worker=second)
    finally:
        second.stop()

    # finals() fails on two different final labels for one prediction, and on a
    # repeated (prediction_id, label_version) whose content differs.
    labels = finals(got["labels"])
    assert set(labels) == set(expected)
    for pid, want in expected.items():
        assert {k: labels[pid][k] for k in want} == want, pid
    examples = {orjson.loads(m.value())["prediction_id"] for m in got["training_examples"]}
    assert examples == set(expected)


def test_a_restart_with_nothing_new_to_read_still_closes_the_labels(
        kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    # the first worker reads everything and stops before its idle advance (20 s) closes
    # the last labels; the second is assigned every partition at its end and nothing
    # new arrives: its idle advance must close them (it once waited for a record that
    # never came: librdkafka knows no position there, and a restore set no idle clock)
    idle_ms = 20_000
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             **{**LABEL_ENV, "FRESHET_IDLE_ADVANCE_MS": str(idle_ms)},
                             FRESHET_COMMIT_INTERVAL_MS="300")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=37, users=30, items=20, predictions=600)))
    with running_worker(settings, tmp_path / "worker-1.log") as first:
        log = produce_log(settings, records)
        produced_at = time.monotonic()
        events = oracle.valid_events(log)
        deadline = produced_at + idle_ms / 2000
        while processed(settings) < len(events):
            assert time.monotonic() < deadline, first.log_tail()
            time.sleep(0.1)
    expected = Expected(log, features=False)
    read_until = time.monotonic() + 3

    def read_for_a_while(got: dict[str, list[Any]]) -> bool:
        return time.monotonic() > read_until

    before = finals(consume(settings, ["labels"], read_for_a_while)["labels"])
    assert time.monotonic() - produced_at < idle_ms / 1000, "the first worker ran too long"
    assert len(before) < len(expected.labels), "the test needs labels still open at the restart"

    with running_worker(settings, tmp_path / "worker-2.log") as second:
        got = consume(settings, ["labels", "training_examples"], expected.done,
                      timeout_s=idle_ms / 1000 + 60, worker=second)
        ready = http_get(settings.web_port, "/ready")[2]
    expected.check(got)
    # everything was read before the restart: nothing is behind (it once said `high`)
    assert ready == {"ready": True, "reason": "0 records behind"}
