"""Stream/replay parity: one seeded log through Kafka workers and through replay."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate, write_jsonl
from freshet.topics import create_topics
from streams.replay import read_jsonl, replay_files
from tests.streams import oracle
from tests.streams.support import consume, produce_log, running_worker
from tests.streams.test_features_stream import all_features_done, make_settings
from tests.streams.test_labels_stream import LABEL_ENV, finals

pytestmark = pytest.mark.integration


def latest_by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The compacted view of a feature topic, without the input provenance."""
    out = {}
    for rec in records:
        out[rec["id"]] = {k: v for k, v in rec.items() if k != "source"}
    return out


def same_record(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return ({k: v for k, v in a.items() if k != "features"}
            == {k: v for k, v in b.items() if k != "features"}
            and oracle.same_features(a["features"], b["features"]))


def test_replay_reproduces_the_stream(kafka_bootstrap: str, unique_prefix: str,
                                      tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path, **LABEL_ENV)
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=17, users=40, items=25, predictions=900,
                                            malformed_fraction=0.02)))
    write_jsonl(records, tmp_path / "in")
    summary = replay_files(tmp_path / "in" / "predictions.jsonl",
                           tmp_path / "in" / "clicks.jsonl", tmp_path / "out", settings,
                           progress=False)
    replayed = {name: read_jsonl(tmp_path / "out" / f"{name}.jsonl")
                for name in ("features.user", "features.item", "labels", "training-examples",
                             "dead-letters")}
    assert summary.events == len(records)

    n_pred = sum(1 for r in records if r.topic == "predictions" and r.malformed is None)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        log = produce_log(settings, records)
        events = oracle.valid_events(log)
        keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
        n_bad = sum(1 for r in records if r.malformed is not None)
        features_done = all_features_done(keyed, n_bad)

        def done(got: dict[str, list[Any]]) -> bool:
            return features_done(got) and len(finals(got["labels"])) >= n_pred

        got = consume(settings, ["features_user", "features_item", "labels",
                                 "training_examples", "dead_letters"], done, timeout_s=180,
                      worker=worker)

    def values(topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(m.value()) for m in got[topic]]

    # Features: the latest record per key agrees (floats to 1e-9 relative).
    for entity in ("user", "item"):
        stream = latest_by_id(values(f"features_{entity}"))
        replay = latest_by_id(replayed[f"features.{entity}"])
        assert stream.keys() == replay.keys()
        for key in stream:
            assert same_record(stream[key], replay[key]), (key, stream[key], replay[key])

    # Labels: every (prediction_id, label_version) record is identical.
    stream_labels = {(r["prediction_id"], r["label_version"]): r for r in values("labels")}
    replay_labels = {(r["prediction_id"], r["label_version"]): r for r in replayed["labels"]}
    assert stream_labels == replay_labels

    # Training examples: identical but for the freshet feature snapshots, which in
    # the stream reflect what the worker had read when the prediction came (their
    # `source` says what) and in replay everything up to the prediction's time.
    def strip(ex: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in ex.items() if k != "freshet_features"}

    stream_ex = {r["prediction_id"]: strip(r) for r in values("training_examples")}
    replay_ex = {r["prediction_id"]: strip(r) for r in replayed["training-examples"]}
    assert stream_ex == replay_ex

    # Dead letters: the same raw records for the same reasons.
    def letters(recs: list[dict[str, Any]]) -> Counter[tuple[str, str, bytes]]:
        return Counter((r["source"]["logical"], r["reason"], base64.b64decode(r["value_b64"]))
                       for r in recs)

    assert letters(values("dead_letters")) == letters(replayed["dead-letters"])
