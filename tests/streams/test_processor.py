"""The batch processors without a broker: restarts, redelivery, batched messages."""

from __future__ import annotations

from typing import Any

import orjson

from features.catalog import default_catalog
from freshet.generator import GeneratorConfig, generate
from labels import LabelConfig
from streams.labelstage import LabelStage
from streams.processor import META_KEY, ItemProcessor, UserProcessor
from streams.records import Counters, InputRecord

LATENESS_MS = 5_000


class Tables:
    """Stored raw values per table, as the worker's changelog-backed tables hold them."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, bytes]] = {"user": {}, "label": {}}

    def reader(self, table: str) -> Any:
        return lambda partition, key: self.data[table].get(key)

    def keys(self, partition: int) -> list[str]:
        return list(self.data["label"])

    def apply(self, result: Any) -> None:
        for (_, key), value in result.writes.items():
            self.data["user"][key] = orjson.dumps(value)
        for (_, key), value in result.label_writes.items():
            if value is None:
                self.data["label"].pop(key, None)
            else:
                self.data["label"][key] = orjson.dumps(value)


def worker(tables: Tables) -> UserProcessor:
    """A fresh user processor (as after a restart) over the stored tables."""
    catalog = default_catalog(1.0, 19.0)
    counters = Counters()
    labels = LabelStage(LabelConfig(window_ms=60_000, skew_ms=1_000), tables.reader("label"),
                        tables.keys, counters)
    return UserProcessor(catalog.user, tables.reader("user"), LATENESS_MS, lambda item: 0,
                         counters, labels)


def one_partition_log() -> list[InputRecord]:
    records = [r for r in generate(GeneratorConfig(seed=3, users=5, items=8, predictions=300,
                                                   malformed_fraction=0.0)) if r.valid]
    offsets = {"predictions": 0, "clicks": 0}
    out = []
    for r in records:
        out.append(InputRecord(r.topic, r.topic, 0, offsets[r.topic], r.key, r.value))
        offsets[r.topic] += 1
    return out


def test_a_restarted_worker_takes_redelivered_records_as_duplicates_not_late() -> None:
    log = one_partition_log()
    tables = Tables()
    first = worker(tables)
    cut = len(log) // 2
    tables.apply(first.process(log[:cut], now_wall_ms=1))
    meta = orjson.loads(tables.data["user"][META_KEY])
    assert meta["wm"] == first.watermarks[0].value_ms is not None
    assert meta["pos"] == {s: first.positions[(s, 0)] for s in ("clicks", "predictions")}

    # The committed offsets lagged: the restarted worker gets the second quarter again.
    second = worker(tables)
    redo = second.process(log[cut // 2:], now_wall_ms=2)
    assert second.counters.dead_letters == 0  # behind the restored watermark, yet not late
    assert second.counters.duplicates == 2 * (cut - cut // 2)  # feature and label state
    assert second.watermarks[0].value_ms >= meta["wm"]

    # ... and ends where a worker that never stopped ends.
    tables.apply(redo)
    straight = Tables()
    straight.apply(worker(straight).process(log, now_wall_ms=1))
    for key, raw in straight.data["user"].items():
        if key != META_KEY:
            assert orjson.loads(tables.data["user"][key])["f"] == orjson.loads(raw)["f"], key


def test_stored_positions_never_go_back_below_the_restored_ones() -> None:
    # The restored max event times come from the records up to the restored position:
    # a restarted worker that re-read only a few records must not store less.
    log = one_partition_log()
    tables = Tables()
    tables.apply(worker(tables).process(log[:200], now_wall_ms=1))
    before = orjson.loads(tables.data["user"][META_KEY])
    tables.apply(worker(tables).process(log[10:20], now_wall_ms=2))
    after = orjson.loads(tables.data["user"][META_KEY])
    assert after["pos"] == before["pos"] and after["max"] == before["max"]


def test_restore_loads_an_idle_partition_before_any_input() -> None:
    log = one_partition_log()
    tables = Tables()
    tables.apply(worker(tables).process(log, now_wall_ms=1))
    again = worker(tables)
    assert again.watermarks == {}
    again.restore(0, now_wall_ms=50)
    assert again.watermarks[0].value_ms == orjson.loads(tables.data["user"][META_KEY])["wm"]
    assert again.last_progress_wall_ms[0] == 50
    again.forget({0})
    assert again.watermarks == {} and again.positions == {}


def test_item_snapshots_go_back_batched_per_user_partition() -> None:
    log = one_partition_log()
    catalog = default_catalog(1.0, 19.0)
    users = UserProcessor(catalog.user, lambda p, k: None, LATENESS_MS, lambda item: 0)
    forwards = [o for o in users.process(log).outputs if o.topic == "items_repartition"]
    items = ItemProcessor(catalog.item, lambda p, k: None, Counters(), 1,
                          user_partition=lambda user_id: int(user_id[-1]) % 3)
    batch = [InputRecord("items_repartition", "r", 0, i, None, o.value)
             for i, o in enumerate(forwards)]
    snaps = [o for o in items.process(batch).outputs if o.topic == "item_snapshots"]
    assert sorted(o.partition for o in snaps) == sorted({o.partition for o in snaps})
    got = [(o.partition, s["prediction_id"]) for o in snaps
           for s in orjson.loads(o.value)["snapshots"]]
    preds = [orjson.loads(r.value) for r in log if r.source == "predictions"]
    assert sorted(got) == sorted((int(p["user_id"][-1]) % 3, p["prediction_id"]) for p in preds)


def test_item_side_keeps_its_repartition_position() -> None:
    log = one_partition_log()
    catalog = default_catalog(1.0, 19.0)
    users = UserProcessor(catalog.user, lambda p, k: None, LATENESS_MS, lambda item: 0)
    forwards = [o for o in users.process(log).outputs if o.topic == "items_repartition"]
    batch = [InputRecord("items_repartition", "r", 0, i + 40, None, o.value)
             for i, o in enumerate(forwards)]
    stored: dict[str, bytes] = {}
    items = ItemProcessor(catalog.item, lambda p, k: stored.get(k), Counters(), 1)
    for (_, key), value in items.process(batch).writes.items():
        stored[key] = orjson.dumps(value)
    assert orjson.loads(stored[META_KEY]) == {"pos": {"items_repartition": 40 + len(forwards) - 1}}
    again = ItemProcessor(catalog.item, lambda p, k: stored.get(k), Counters(), 1)
    assert again.resume_position(0) == 40 + len(forwards) - 1
    again.forget({0})
    assert again.positions == {} and again.restored == {}


def pred_rec(offset: int, ts: int) -> InputRecord:
    body = {"prediction_id": f"p{offset}", "request_id": f"r{offset}", "user_id": "u1",
            "item_id": "i1", "model_id": "m", "score": 0.5, "ts": ts}
    return InputRecord("predictions", "predictions", 0, offset, b"u1", orjson.dumps(body))


def click_rec(offset: int, ts: int) -> InputRecord:
    body = {"user_id": "u1", "item_id": "i1", "ts": ts}
    return InputRecord("clicks", "clicks", 0, offset, b"u1", orjson.dumps(body))


T0 = 1_767_225_600_000


def test_idle_advance_moves_a_quiet_input_on_while_the_other_goes_on() -> None:
    tables = Tables()
    users = worker(tables)
    users.process([pred_rec(0, T0), click_rec(0, T0 + 100)], now_wall_ms=1_000)
    assert users.watermarks[0].value_ms == T0 - LATENESS_MS
    # clicks keep coming (their max grows), predictions stopped at T0
    users.process([click_rec(1, T0 + 20_000)], now_wall_ms=21_000)
    assert users.watermarks[0].value_ms == T0 - LATENESS_MS
    from streams.processor import advance_idle
    # not quiet long enough yet / predictions not caught up: nothing moves
    advance_idle(users, 5_000, idle_ms=10_000)
    advance_idle(users, 40_000, idle_ms=10_000, caught_up=lambda p, s: s != "predictions")
    assert users.watermarks[0].value_ms == T0 - LATENESS_MS
    # predictions caught up and quiet for idle_ms: they hold nothing back, and the
    # clicks, still coming, alone set the watermark
    advance_idle(users, 45_000, idle_ms=10_000)
    assert users.watermarks[0].value_ms == T0 - LATENESS_MS
    users.process([click_rec(2, T0 + 30_000)], now_wall_ms=48_000)
    advance_idle(users, 52_000, idle_ms=10_000)
    assert users.watermarks[0].value_ms == T0 + 30_000 - LATENESS_MS
    # both quiet: the watermark follows the wall clock from the last progress (48 s)
    result = advance_idle(users, 90_000, idle_ms=10_000)
    assert users.watermarks[0].value_ms == T0 + 30_000 - LATENESS_MS + 42_000
    assert (0, META_KEY) in result.writes  # the advanced watermark is kept
