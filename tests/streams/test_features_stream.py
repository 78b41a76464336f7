"""End to end on the real broker: every feature record and dead letter vs the oracle."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.settings import Settings
from freshet.topics import create_topics
from tests.conftest import free_port
from tests.streams import oracle
from tests.streams.support import consume, produce_log, running_worker

pytestmark = pytest.mark.integration


def make_settings(bootstrap: str, prefix: str, data_dir: Path, **extra: str) -> Settings:
    env = {"FRESHET_KAFKA_BOOTSTRAP": bootstrap, "FRESHET_TOPIC_PREFIX": prefix,
           "FRESHET_APP_ID": prefix + "app", "FRESHET_DATA_DIR": str(data_dir),
           "FRESHET_WEB_PORT": str(free_port()), "FRESHET_PARTITIONS": "4",
           "FRESHET_COMMIT_INTERVAL_MS": "500", **extra}
    return Settings.from_env(env)


def test_user_features_and_dead_letters_match_the_oracle(kafka_bootstrap: str,
                                                        unique_prefix: str,
                                                        tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path)
    create_topics(settings)
    config = GeneratorConfig(seed=11, users=60, items=40, predictions=1_500,
                             malformed_fraction=0.03)
    records = list(generate(config))
    malformed = [r for r in records if r.malformed is not None]
    assert malformed, "the seeded log must contain malformed records"

    with running_worker(settings, tmp_path / "worker.log") as worker:
        log = produce_log(settings, records)
        events = oracle.valid_events(log)
        assert oracle.late_events(events, settings.allowed_lateness_ms) == []
        by_user = oracle.events_by_user(events)
        final_offsets = {
            user: {src: max((e.offset for e in evs if e.source == src), default=None)
                   for src in ("clicks", "predictions")}
            for user, evs in by_user.items()}

        def done(got: dict[str, list]) -> bool:
            if len(got["dead_letters"]) < len(malformed):
                return False
            latest = {}
            for msg in got["features_user"]:
                rec = orjson.loads(msg.value())
                latest[rec["id"]] = rec["source"]
            return all(
                user in latest and all(latest[user].get(src) == off
                                       for src, off in offs.items() if off is not None)
                for user, offs in final_offsets.items())

        got = consume(settings, ["features_user", "dead_letters"], done, worker=worker)

    # Every published feature record equals the oracle for exactly the events it says
    # it includes (its source offsets), and its key is its user.
    for msg in got["features_user"]:
        rec = orjson.loads(msg.value())
        user = rec["id"]
        assert msg.key() == user.encode()
        assert rec["entity"] == "user" and rec["schema_version"] == 1
        mine = by_user[user]
        assert {e.partition for e in mine} == {rec["source"]["partition"]}
        inc = oracle.included(mine, rec["source"])
        as_of, expected = oracle.user_features(inc)
        assert rec["as_of_ts"] == as_of, rec
        assert rec["features"] == expected, (rec, as_of)

    # Dead letters: exactly the malformed records, each once, raw bytes intact.
    expected_dl = {(p.record.topic, p.partition, p.offset): p for p in log
                   if p.record.malformed is not None}
    seen = {}
    for msg in got["dead_letters"]:
        dl = orjson.loads(msg.value())
        src = dl["source"]
        key = (src["logical"], src["partition"], src["offset"])
        assert key in expected_dl, dl
        assert key not in seen, f"dead letter twice: {key}"
        seen[key] = dl
        assert base64.b64decode(dl["value_b64"]) == expected_dl[key].record.value
        assert dl["reason"], dl
        assert src["topic"] == settings.topic(src["logical"])
    assert set(seen) == set(expected_dl)
