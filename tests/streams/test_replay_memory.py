"""A replay (no changelog) keeps no record of what changed: a backfill's memory stays
bounded by its live state.

Before, the label engine noted every forgotten prediction id and every changed row for
the changelog and only a changelog drained them: in a replay they grew with every
prediction (measured on a soak-like log of 30 x 57k events: engine RSS 164 -> 391 MiB
and still growing ~5 MiB a chunk; now flat at ~273 MiB from the 15th chunk).
"""

from __future__ import annotations

import numpy as np

from engine import InputBatch
from freshet.generator import GeneratorConfig, generate
from freshet.settings import Settings
from streams.replay import Replay


def test_a_replay_keeps_no_change_records_across_batches() -> None:
    settings = Settings(evaluation_enabled=False, label_window_ms=60_000,
                        label_observe_ms=30_000)
    rep = Replay(settings)
    records = list(generate(GeneratorConfig(seed=5, users=60, items=20, predictions=3_000,
                                            malformed_fraction=0.01)))
    offsets = {0: 0, 1: 0}
    labels = 0
    for start in range(0, len(records), 250):
        part = records[start:start + 250]
        src = [1 if r.topic == "predictions" else 0 for r in part]
        offs = []
        for s in src:
            offs.append(offsets[s])
            offsets[s] += 1

        def emit(outs: list[object]) -> None:
            nonlocal labels
            labels += sum(1 for o in outs if getattr(o, "topic", None) == "labels")

        rep.run_batch(InputBatch(np.array(src, dtype=np.int8), np.array(offs, dtype=np.int64),
                                 [None] * len(part), [r.value for r in part]), emit)
        engine = rep.users.labels
        assert engine is not None
        assert (engine._forgotten, engine._dirty, engine._held_dirty) == ([], set(), set())
    # predictions were closed and forgotten on the way (the path above was taken): most
    # windows (60 s) closed well before the log's end
    valid = [r for r in records if r.topic == "predictions" and r.malformed is None]
    assert labels > 0.9 * len(valid) > 2_000
