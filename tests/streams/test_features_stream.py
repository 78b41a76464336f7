"""End to end on the real broker: every feature record and dead letter vs the oracle."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate
from freshet.settings import Settings
from freshet.topics import create_topics
from tests.conftest import free_port
from tests.streams import oracle
from tests.streams.support import Produced, consume, produce_log, running_worker

pytestmark = pytest.mark.integration


def make_settings(bootstrap: str, prefix: str, data_dir: Path, **extra: str) -> Settings:
    env = {"FRESHET_KAFKA_BOOTSTRAP": bootstrap, "FRESHET_TOPIC_PREFIX": prefix,
           "FRESHET_APP_ID": prefix + "app", "FRESHET_DATA_DIR": str(data_dir),
           "FRESHET_WEB_PORT": str(free_port()), "FRESHET_PARTITIONS": "4",
           "FRESHET_COMMIT_INTERVAL_MS": "500", **extra}
    return Settings.from_env(env)


def all_features_done(by_entity: dict[str, dict[str, list[oracle.Event]]],
                      min_dead_letters: int):  # type: ignore[no-untyped-def]
    """A ``consume`` predicate: every key's last record covers all its events."""
    want = {entity: {key: oracle.final_sources(entity, evs) for key, evs in keyed.items()}
            for entity, keyed in by_entity.items()}

    def missing(got: dict[str, list[Any]]) -> list[tuple[str, str, Any, Any]]:
        out = []
        for entity, keyed in want.items():
            latest = {}
            for msg in got[f"features_{entity}"]:
                rec = orjson.loads(msg.value())
                latest[rec["id"]] = rec["source"]
            for key, sources in keyed.items():
                have = latest.get(key)
                if have is None or any(have.get(k) != v for k, v in sources.items()):
                    out.append((entity, key, have, sources))
        return out

    def done(got: dict[str, list[Any]]) -> bool:
        if len(got.get("dead_letters", [])) < min_dead_letters:
            return False
        return not missing(got)

    done.explain = lambda got: f"missing {len(missing(got))}: {missing(got)[:3]}"  # type: ignore[attr-defined]
    return done


def check_feature_records(entity: str, msgs: list[Any],
                          keyed: dict[str, list[oracle.Event]]) -> set[str]:
    """Every record equals the oracle for exactly the events it says it includes.

    Returns the ids that got a record (callers compare them with the oracle's ids).
    """
    compute = oracle.user_features if entity == "user" else oracle.item_features
    for msg in msgs:
        rec = orjson.loads(msg.value())
        key = rec["id"]
        assert msg.key() == key.encode()
        assert rec["entity"] == entity and rec["schema_version"] == 1
        inc = oracle.included(entity, keyed[key], rec["source"])
        assert inc, rec
        as_of, expected = compute(inc)
        assert rec["as_of_ts"] == as_of, rec
        assert oracle.same_features(rec["features"], expected), (
            key, rec["source"],
            {k: (rec["features"].get(k), v) for k, v in expected.items()
             if rec["features"].get(k) != v})
    return {orjson.loads(msg.value())["id"] for msg in msgs}


def check_dead_letters(settings: Settings, msgs: list[Any], log: list[Produced]) -> None:
    """Dead letters are exactly the malformed records, each once, raw bytes intact."""
    expected = {(p.record.topic, p.partition, p.offset): p for p in log
                if p.record.malformed is not None}
    seen = {}
    for msg in msgs:
        dl = orjson.loads(msg.value())
        src = dl["source"]
        key = (src["logical"], src["partition"], src["offset"])
        assert key in expected, dl
        assert key not in seen, f"dead letter twice: {key}"
        seen[key] = dl
        assert base64.b64decode(dl["value_b64"]) == expected[key].record.value
        assert dl["reason"] and dl["schema_version"] == 1, dl
        assert src["topic"] == settings.topic(src["logical"])
    assert set(seen) == set(expected)


def http_get(settings: Settings, path: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def check_read_path(settings: Settings, got: dict[str, list[Any]],
                    keyed: dict[str, dict[str, list[oracle.Event]]]) -> None:
    """GET /features/{entity}/{id} answers the key's latest record, 404/400 otherwise."""
    for entity in ("user", "item"):
        latest = {}
        for msg in got[f"features_{entity}"]:
            rec = orjson.loads(msg.value())
            latest[rec["id"]] = rec
        for key in sorted(keyed[entity])[:10]:
            status, body = http_get(settings, f"/features/{entity}/{key}")
            assert status == 200, body
            expected = {k: v for k, v in latest[key].items() if k != "source"}
            assert body == expected
        status, _ = http_get(settings, f"/features/{entity}/no-such-{entity}")
        assert status == 404
        status, _ = http_get(settings, f"/features/{entity}/" + "x" * 300)
        assert status == 400


def test_features_and_dead_letters_match_the_oracle(kafka_bootstrap: str, unique_prefix: str,
                                                   tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path)
    create_topics(settings)
    config = GeneratorConfig(seed=11, users=60, items=40, predictions=1_500,
                             malformed_fraction=0.03)
    records = list(generate(config))
    n_malformed = sum(1 for r in records if r.malformed is not None)
    assert n_malformed > 10, "the seeded log must contain malformed records"

    with running_worker(settings, tmp_path / "worker.log") as worker:
        log = produce_log(settings, records)
        events = oracle.valid_events(log)
        assert oracle.late_events(events, settings.allowed_lateness_ms) == []
        keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
        got = consume(settings, ["features_user", "features_item", "dead_letters"],
                      all_features_done(keyed, n_malformed), worker=worker)
        check_read_path(settings, got, keyed)

    assert check_feature_records("user", got["features_user"], keyed["user"]) == set(keyed["user"])
    assert check_feature_records("item", got["features_item"], keyed["item"]) == set(keyed["item"])
    check_dead_letters(settings, got["dead_letters"], log)
