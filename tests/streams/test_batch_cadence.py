"""A caught-up worker's batch cadence (``FRESHET_BATCH_MIN_INTERVAL_MS``), on the broker.

A trickle of records used to make one batch, and one transaction, per commit round
trip (~80 a second at 1,000 records/s in a soak); with a minimum interval the worker
gathers for it, and every feature record is still the oracle's.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.topics import create_topics
from tests.streams import oracle
from tests.streams.support import Produced, consume, produce_log, running_worker, stats
from tests.streams.test_features_stream import (
    all_features_done,
    check_feature_records,
    make_settings,
)

pytestmark = pytest.mark.integration

INTERVAL_MS = 400
CHUNK = 10  # records per produce call
PAUSE_S = 0.05  # between produce calls (each flushes: a trickle of ~20 records/s)


def test_a_trickle_is_gathered_into_batches_of_the_minimum_interval(
        kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             FRESHET_BATCH_MIN_INTERVAL_MS=str(INTERVAL_MS),
                             FRESHET_COMMIT_INTERVAL_MS="20")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=23, users=30, items=20, predictions=250)))
    with running_worker(settings, tmp_path / "worker.log") as worker:
        log: list[Produced] = []
        began = time.monotonic()
        for i in range(0, len(records), CHUNK):
            log += produce_log(settings, records[i:i + CHUNK])
            time.sleep(PAUSE_S)
        produced_s = time.monotonic() - began
        events = oracle.valid_events(log)
        keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
        got = consume(settings, ["features_user", "features_item"],
                      all_features_done(keyed, 0), worker=worker)
        doc = stats(settings)
    assert doc is not None
    batches = doc["batches"]
    # batches with input: at most one per interval while records came, plus the last
    # ones draining after production ended (the worker gathers; it never splits)
    allowed = produced_s / (INTERVAL_MS / 1000) + 4
    assert 2 <= batches["batches"] <= allowed, (batches, produced_s)
    assert batches["mean"] >= CHUNK, batches  # more than one produce call per batch
    assert check_feature_records("user", got["features_user"], keyed["user"]) == set(keyed["user"])
    assert check_feature_records("item", got["features_item"], keyed["item"]) == set(keyed["item"])
