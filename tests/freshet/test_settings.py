"""Settings: defaults work locally; every bad value is reported with its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshet.settings import DEFAULT_TOPICS, Settings, SettingsError


def test_defaults_point_at_the_local_broker() -> None:
    s = Settings.from_env({})
    assert s.bootstrap_servers == "127.0.0.1:19092"
    assert s.topic("features_user") == "features.user"
    assert s.store == "rocksdb" or s.store == "memory"


def test_env_overrides_and_prefix() -> None:
    s = Settings.from_env({"FRESHET_KAFKA_BOOTSTRAP": "10.0.0.1:9092,10.0.0.2:9092",
                           "FRESHET_PARTITIONS": "8", "FRESHET_TOPIC_PREFIX": "dev.",
                           "FRESHET_TOPIC_CLICKS": "raw-clicks", "FRESHET_WEB_ENABLED": "no",
                           "FRESHET_DATA_DIR": "/tmp/x", "FRESHET_CTR_PRIOR_CLICKS": "2.5"})
    assert s.partitions == 8
    assert s.topic("clicks") == "dev.raw-clicks"
    assert s.topic("labels") == "dev.labels"
    assert s.web_enabled is False
    assert s.data_dir == Path("/tmp/x")
    assert s.ctr_prior_clicks == 2.5


@pytest.mark.parametrize(("env", "needle"), [
    ({"FRESHET_PARTITIONS": "four"}, "FRESHET_PARTITIONS: 'four' is not a valid integer"),
    ({"FRESHET_PARTITIONS": "0"}, "FRESHET_PARTITIONS: must be between 1 and 1024"),
    ({"FRESHET_KAFKA_BOOTSTRAP": "localhost"}, "FRESHET_KAFKA_BOOTSTRAP:"),
    ({"FRESHET_LABEL_MODE": "later"}, "FRESHET_LABEL_MODE: must be one of"),
    ({"FRESHET_STORE": "redis"}, "FRESHET_STORE: must be one of"),
    ({"FRESHET_TOPIC_LABELS": "bad name!"}, "FRESHET_TOPIC_LABELS:"),
    ({"FRESHET_LABEL_OBSERVE_MS": "999999999", "FRESHET_LABEL_MODE": "observe_then_correct"},
     "FRESHET_LABEL_OBSERVE_MS:"),
    ({"FRESHET_LABEL_WINDOW_MS": "0"}, "FRESHET_LABEL_WINDOW_MS:"),
    ({"FRESHET_LABEL_SKEW_MS": "-1"}, "FRESHET_LABEL_SKEW_MS:"),
    ({"FRESHET_CATALOG": "features.catalog"}, "FRESHET_CATALOG: catalog reference"),
    ({"FRESHET_CATALOG": "no.such.module:catalog"}, "FRESHET_CATALOG: cannot import"),
    ({"FRESHET_BATCH_MAX_EVENTS": "0"}, "FRESHET_BATCH_MAX_EVENTS:"),
    ({"FRESHET_BATCH_MIN_INTERVAL_MS": "-5"}, "FRESHET_BATCH_MIN_INTERVAL_MS: must be 0..10000"),
    ({"FRESHET_BATCH_MIN_INTERVAL_MS": "20000"},
     "FRESHET_BATCH_MIN_INTERVAL_MS: must be 0..10000"),
    ({"FRESHET_GC_YOUNG_THRESHOLD": "0"}, "FRESHET_GC_YOUNG_THRESHOLD: must be in"),
    ({"FRESHET_MALLOC_TRIM_INTERVAL_MS": "500"}, "FRESHET_MALLOC_TRIM_INTERVAL_MS: must be 0"),
    ({"FRESHET_MALLOC_TRIM_INTERVAL_MS": "-1"}, "FRESHET_MALLOC_TRIM_INTERVAL_MS: must be 0"),
    ({"FRESHET_MALLOC_ARENA_MAX": "-1"}, "FRESHET_MALLOC_ARENA_MAX: must be 0..1024"),
    ({"FRESHET_MALLOC_ARENA_MAX": "2000"}, "FRESHET_MALLOC_ARENA_MAX: must be 0..1024"),
    ({"FRESHET_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "FRESHET_KAFKA_SASL_USERNAME:"),
    ({"FRESHET_WEB_ENABLED": "maybe"}, "FRESHET_WEB_ENABLED: 'maybe' is not a valid boolean"),
])
def test_invalid_settings_say_what_to_fix(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert needle in str(err.value)


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"FRESHET_PARTITIONS": "0", "FRESHET_WEB_PORT": "70000"})
    assert "2 to fix" in str(err.value)


def test_every_logical_topic_has_an_env_override() -> None:
    env = {f"FRESHET_TOPIC_{k.upper()}": f"x-{k}" for k in DEFAULT_TOPICS}
    s = Settings.from_env(env)
    assert all(s.topic(k) == f"x-{k}" for k in DEFAULT_TOPICS)


def test_label_settings_are_validated_as_the_label_engine_does() -> None:
    # the observation window only matters in observe_then_correct: a short label
    # window with the default observation window is fine in the other modes
    s = Settings.from_env({"FRESHET_LABEL_WINDOW_MS": "30000"})
    assert s.label_config().window_ms == 30_000
    with pytest.raises(SettingsError, match="FRESHET_LABEL_OBSERVE_MS"):
        Settings.from_env({"FRESHET_LABEL_WINDOW_MS": "30000",
                           "FRESHET_LABEL_MODE": "observe_then_correct"})


def test_a_user_catalog_is_loaded_by_reference() -> None:
    s = Settings.from_env({"FRESHET_CATALOG": "features.catalog:first_feature_catalog"})
    assert s.load_catalog().user.names == ("clicks_5m",)
    assert Settings.from_env({}).load_catalog().user.names[0] == "clicks_1m"


def test_the_gc_setting_reaches_the_collector() -> None:
    import gc

    from freshet.gc_tuning import tune_gc

    s = Settings.from_env({"FRESHET_GC_YOUNG_THRESHOLD": "12_345"})
    old = tune_gc(s.gc_young_threshold)
    try:
        assert gc.get_threshold() == (12_345, 10, 10)
    finally:
        gc.set_threshold(*old)
    assert Settings().gc_young_threshold == 50_000
