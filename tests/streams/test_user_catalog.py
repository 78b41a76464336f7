"""A user's own catalog (FRESHET_CATALOG) in the worker, the read path and replay.

The catalog module lives outside freshet's source (copied to a folder of this
test's own, on PYTHONPATH), declares a store and two aggregations of its own, and
every feature record is checked against a plain-Python oracle of those features.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshet.generator import GeneratorConfig, generate, write_jsonl
from freshet.settings import Settings
from freshet.topics import create_topics
from streams.replay import read_jsonl, replay_files
from tests.features.contracts import check_aggregation
from tests.streams import oracle
from tests.streams.support import ROOT, consume, produce_log, running_worker, settings_env
from tests.streams.test_features_stream import all_features_done, http_get, make_settings

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
MIN = 60_000


def window(ts: list[int], as_of: int, window_ms: int) -> list[int]:
    tile = window_ms // 12
    low = as_of - as_of % tile - (window_ms - tile)
    return [t for t in ts if low <= t <= as_of]


def user_oracle(events: list[oracle.Event]) -> tuple[int, dict[str, Any]]:
    as_of = max(e.ts for e in events)
    clicks = [e.ts for e in events if e.source == "clicks"]
    preds = [e.ts for e in events if e.source == "predictions"]
    c1h, p1h = len(window(clicks, as_of, 60 * MIN)), len(window(preds, as_of, 60 * MIN))
    return as_of, {"clicks_10m": len(window(clicks, as_of, 10 * MIN)),
                   "click_share_1h": c1h / (c1h + p1h) if c1h + p1h else 0.0,
                   "age_ms": as_of - min(e.ts for e in events)}


def item_oracle(events: list[oracle.Event]) -> tuple[int, dict[str, Any]]:
    as_of = max(e.ts for e in events)
    preds = [e.ts for e in events if e.source == "predictions"]
    return as_of, {"impressions_10m": len(window(preds, as_of, 10 * MIN))}


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's catalog module in a folder of its own, importable as acme_features."""
    folder = tmp_path / "user-repo"
    folder.mkdir()
    shutil.copy(HERE / "user_catalog.py", folder / "acme_features.py")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", f"{folder}:{ROOT}")
    return folder


def test_user_catalog_in_worker_read_path_and_replay(kafka_bootstrap: str, unique_prefix: str,
                                                     tmp_path: Path,
                                                     user_package: Path) -> None:
    import acme_features  # the user's own module: the contracts hold for it too

    for cls in (acme_features.AgeMs, acme_features.ClickShare):
        for spec in cls.examples():
            check_aggregation(spec)

    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             FRESHET_CATALOG="acme_features:catalog")
    assert settings.load_catalog().user.names == ("clicks_10m", "click_share_1h", "age_ms")
    create_topics(settings)
    records = list(generate(GeneratorConfig(seed=13, users=30, items=20, predictions=900,
                                            malformed_fraction=0.01)))
    with running_worker(settings, tmp_path / "worker.log") as worker:
        log = produce_log(settings, records)
        events = oracle.valid_events(log)
        keyed = {"user": oracle.events_by_user(events), "item": oracle.events_by_item(events)}
        got = consume(settings, ["features_user", "features_item"],
                      all_features_done(keyed, 0), worker=worker)
        latest = {(m.topic(), orjson.loads(m.value())["id"]): orjson.loads(m.value())
                  for m in got["features_user"] + got["features_item"]}
        for key in sorted(keyed["user"])[:5]:
            status, body = http_get(settings, f"/features/user/{key}")
            assert status == 200, body
            want = latest[(settings.topic("features_user"), key)]
            assert body == {k: v for k, v in want.items() if k != "source"}

    for entity, compute in (("user", user_oracle), ("item", item_oracle)):
        for msg in got[f"features_{entity}"]:
            rec = orjson.loads(msg.value())
            included = oracle.included(entity, keyed[entity][rec["id"]], rec["source"])
            as_of, expected = compute(included)
            assert rec["as_of_ts"] == as_of and oracle.same_features(rec["features"], expected), (
                rec, expected)

    # replay runs the same user catalog: the latest record per key agrees
    write_jsonl(records, tmp_path / "in")
    replay_files(tmp_path / "in" / "predictions.jsonl", tmp_path / "in" / "clicks.jsonl",
                 tmp_path / "out", settings, progress=False)
    replayed = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "features.user.jsonl")}
    for (topic, key), rec in latest.items():
        if topic == settings.topic("features_user"):
            assert oracle.same_features(replayed[key]["features"], rec["features"]), key


def test_a_bad_user_catalog_stops_the_worker_at_start_naming_the_feature(
        unique_prefix: str, tmp_path: Path, user_package: Path) -> None:
    settings = Settings.from_env({"FRESHET_DATA_DIR": str(tmp_path)})
    env = {**settings_env(settings), "FRESHET_CATALOG": "acme_features:broken"}
    proc = subprocess.run([sys.executable, "-m", "freshet.cli", "worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "FRESHET_CATALOG" in proc.stderr and "'clicks_7ms'" in proc.stderr, proc.stderr
