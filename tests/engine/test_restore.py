"""A partition restored from its compacted changelog goes on exactly as the original.

The changelog deltas a partition emits batch by batch, compacted to the latest value
per key (tombstones delete), are all a restarted worker has (from the changelog
topics or the local store); restored from them at any point, a partition must
produce the same outputs and deltas as the one that never stopped.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine import InputBatch, ItemPartition, Result, UserPartition
from engine.users import Counters
from freshet.generator import GeneratorConfig, generate
from freshet.settings import Settings
from labels.config import LabelConfig

LABELS = LabelConfig(window_ms=60_000, observe_ms=30_000)


def _records(seed: int, predictions: int, shadow_models: tuple[str, ...] = (),
             ) -> list[tuple[int, bytes | None, bytes]]:
    config = GeneratorConfig(seed=seed, users=40, items=15, predictions=predictions,
                             malformed_fraction=0.02, max_disorder_ms=2_000,
                             shadow_models=shadow_models)
    return [(1 if r.topic == "predictions" else 0, r.key, r.value) for r in generate(config)]


class Pipeline:
    """One user partition and one item partition wired as the worker wires them."""

    def __init__(self, catalog: object) -> None:
        self.counters = Counters()
        self.user = UserPartition(0, catalog.user, LABELS, 5_000,  # type: ignore[attr-defined]
                                  lambda item_id: 0, self.counters, check_keys=True)
        self.item = ItemPartition(0, catalog.item, 1, snapshots=True,  # type: ignore[attr-defined]
                                  counters=self.counters)
        self.offsets = {"in": 0, "fwd": 0, "snap": 0}
        self.changelog: dict[str, dict[bytes, bytes]] = {"user": {}, "label": {}, "item": {}}

    def _internal(self, result: Result, topic: str, counter: str) -> list[tuple[int, bytes | None]]:
        out = []
        for o in result.outputs:
            if o.topic == topic:
                out.append((self.offsets[counter], o.value))
                self.offsets[counter] += 1
        return out

    def _apply(self, result: Result) -> list[tuple[str, bytes | None, bytes | None]]:
        for d in result.deltas:
            log = self.changelog[d.state]
            if d.value is None:
                log.pop(d.key, None)
            else:
                log[d.key] = d.value
        return [(o.topic, o.key, o.value) for o in result.outputs]

    def run(self, records: list[tuple[int, bytes | None, bytes]], now_ms: int
            ) -> list[tuple[str, bytes | None, bytes | None]]:
        n = len(records)
        offsets = np.arange(self.offsets["in"], self.offsets["in"] + n, dtype=np.int64)
        self.offsets["in"] += n
        batch = InputBatch(np.array([r[0] for r in records], dtype=np.int8), offsets,
                           [r[1] for r in records], [r[2] for r in records])
        user = self.user.process(batch, now_ms)
        outs = self._apply(user)
        item = self.item.process(self._internal(user, "items_repartition", "fwd"))
        outs += self._apply(item)
        snaps = self._internal(item, "item_snapshots", "snap")
        if snaps:
            outs += self._apply(self.user.process_snapshots(snaps))
        return outs

    def restored(self, catalog: object) -> Pipeline:
        """A new pipeline restored from this one's compacted changelogs."""
        other = Pipeline(catalog)
        log = self.changelog
        other.user.restore(list(log["user"].items()), list(log["label"].items()))
        other.item.restore(list(log["item"].items()))
        other.offsets = dict(self.offsets)
        other.changelog = {k: dict(v) for k, v in self.changelog.items()}
        return other


@pytest.mark.parametrize(("seed", "shadows"), [(3, ()), (11, ()), (29, ()),
                                              (7, ("shadow-a", "shadow-b"))])
def test_restored_from_the_compacted_changelog_it_goes_on_the_same(
        seed: int, shadows: tuple[str, ...]) -> None:
    catalog = Settings().load_catalog()
    records = _records(seed, predictions=1_500, shadow_models=shadows)
    prng = random.Random(seed)
    pipe = Pipeline(catalog)
    start, now_ms = 0, 1_000
    checked = 0
    while start < len(records):
        size = prng.randint(1, 120)
        pipe.run(records[start:start + size], now_ms)
        start += size
        now_ms += 500
        if prng.random() < 0.4 and start < len(records):
            twin = pipe.restored(catalog)
            ahead = records[start:start + 200]
            assert twin.run(ahead, now_ms) == pipe.run(ahead, now_ms)
            assert twin.changelog == pipe.changelog
            start += len(ahead)
            checked += 1
    assert checked > 3


def test_a_restored_partition_with_quiet_inputs_still_closes_its_labels() -> None:
    # after a restart with nothing new to read, the idle clock starts at the restore:
    # the same wall time later, the restored partition closes what the original does
    catalog = Settings().load_catalog()
    records = _records(5, predictions=400)
    pipe = Pipeline(catalog)
    now_ms, idle_ms = 1_000, 10_000
    for start in range(0, len(records), 100):
        pipe.run(records[start:start + 100], now_ms)
    twin = pipe.restored(catalog)
    wait_ms = idle_ms + 120_000  # past every pending prediction's window

    def caught_up(source: str) -> bool:
        return True

    original = pipe.user.advance_idle(now_ms + wait_ms, idle_ms, caught_up)
    later = 50_000  # the restart happens later in wall time
    assert twin.user.advance_idle(now_ms + later, idle_ms, caught_up).outputs == []
    restored = twin.user.advance_idle(now_ms + later + wait_ms, idle_ms, caught_up)
    closed = [o for o in original.outputs if o.topic == "labels"]
    assert closed, "the test needs labels still pending at the restart"
    assert [(o.topic, o.key, o.value) for o in restored.outputs] == [
        (o.topic, o.key, o.value) for o in original.outputs]
