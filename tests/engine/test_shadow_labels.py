"""Shadow predictions through the engine's partitions, against the stream label oracle.

The generator's shadow models log a score of every served prediction (same request,
item and ts, ``served: false``); fed through a user and an item partition as the
worker wires them, every prediction gets the oracle's final label: a shadow gets its
served twin's, marked ``served: false`` with the twin's id.
"""

from __future__ import annotations

from typing import Any

import orjson

from freshet.generator import GeneratorConfig, generate
from freshet.settings import Settings
from labels.config import LabelConfig
from tests.engine.test_restore import Pipeline
from tests.streams.label_oracle import final_labels
from tests.streams.oracle import Event


def test_shadow_models_get_their_served_twins_labels() -> None:
    config = GeneratorConfig(seed=13, users=30, items=12, predictions=1_200,
                             malformed_fraction=0.02, max_disorder_ms=2_000,
                             shadow_models=("shadow-a",))
    generated = list(generate(config))
    records = [(1 if r.topic == "predictions" else 0, r.key, r.value) for r in generated]
    pipe = Pipeline(Settings().load_catalog())
    assert pipe.user.labels is not None
    labels_cfg: LabelConfig = pipe.user.labels.config
    outs = []
    for start in range(0, len(records), 97):
        outs += pipe.run(records[start:start + 97], 1_000)
    outs += [(o.topic, o.key, o.value) for o in pipe.user.end_of_input(2**62).outputs]
    got: dict[str, dict[str, Any]] = {}
    for topic, _, value in outs:
        if topic == "labels" and value is not None:
            rec = orjson.loads(value)
            if rec["final"]:
                assert rec["prediction_id"] not in got
                got[rec["prediction_id"]] = rec
    events = [Event(r.topic, 0, n, orjson.loads(r.value)) for n, r in enumerate(generated)
              if r.malformed is None]
    expected = final_labels(events, labels_cfg.window_ms, labels_cfg.skew_ms,
                            labels_cfg.late_horizon_ms)
    shadows = [pid for pid, want in expected.items() if want.get("served") is False]
    assert len(shadows) > 500 and set(got) == set(expected)
    assert sum(1 for pid in shadows if expected[pid]["label"] == 1) > 20
    assert all(expected[pid]["served_prediction_id"] is not None for pid in shadows)
    for pid, want in expected.items():
        assert {k: got[pid][k] for k in want} == want, pid
        assert ("served" in got[pid]) == (pid in shadows)
