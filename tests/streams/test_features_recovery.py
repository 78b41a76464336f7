"""A worker stopped mid-stream (SIGKILL or SIGTERM), restarted: no loss, no double count."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.topics import create_topics
from tests.streams import oracle
from tests.streams.support import Worker, consume, produce_log, produce_then_kill, stats
from tests.streams.test_features_stream import (
    all_features_done,
    check_feature_records,
    make_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.restart]


@pytest.mark.parametrize(("sig", "store"), [(signal.SIGKILL, "memory"),
                                            (signal.SIGKILL, "rocksdb"),
                                            (signal.SIGTERM, "rocksdb")],
                         ids=["sigkill-memory", "sigkill-rocksdb", "sigterm-rocksdb"])
def test_stopped_mid_stream_then_restarted(kafka_bootstrap: str, unique_prefix: str,
                                          tmp_path: Path, sig: int, store: str) -> None:
    # SIGKILL: the open transaction is aborted by the restart, which restores from the
    # whole changelog (memory) or from the local store and the changelog after its
    # last mark (rocksdb, marks every second). SIGTERM: a graceful stop marks every
    # partition, so the restart reads no changelog record at all.
    # Small, slowed batches: the signal lands after several committed transactions.
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             FRESHET_COMMIT_INTERVAL_MS="300", FRESHET_STORE=store,
                             FRESHET_CHECKPOINT_INTERVAL_MS="1000",
                             FRESHET_BATCH_MAX_EVENTS="300",
                             FRESHET_DEBUG_COMMIT_DELAY_MS="100")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=23, users=50, items=30, predictions=3_000)))
    half = len(records) // 2

    log = produce_then_kill(settings, tmp_path / "worker-1.log", records[:half],
                            lambda s: s["transactions"] >= 5
                            and sum(s["events"].values()) >= half // 2, sig=sig)

    second = Worker(settings, tmp_path / "worker-2.log")
    second.start()
    try:
        log += produce_log(settings, records[half:])
        events = oracle.valid_events(log)
        keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
        got = consume(settings, ["features_user", "features_item"],
                      all_features_done(keyed, 0), worker=second)
        restart = stats(settings)
    finally:
        second.stop()

    # Records from before the kill, repeats after it and new ones: each one equals the
    # oracle for the events it says it includes, so nothing was counted twice.
    assert check_feature_records("user", got["features_user"], keyed["user"]) == set(keyed["user"])
    assert check_feature_records("item", got["features_item"], keyed["item"]) == set(keyed["item"])
    # how the restart got its state
    assert restart is not None
    if store == "memory":
        assert restart["restored_from_local_store"] == 0
        assert restart["changelog_records_restored"] > 0
    else:
        # every changelog partition (user, label and item states) came from the local store
        assert restart["restored_from_local_store"] >= restart["restored_partitions"] > 0
    if sig == signal.SIGTERM:
        assert restart["changelog_records_restored"] == 0
