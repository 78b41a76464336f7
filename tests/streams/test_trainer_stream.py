"""``freshet train`` on the real broker: label order, SIGKILL + restart, files = topic.

The oracle is recomputed here, independently of ``training``/``streams``: the matured
examples are the final ones with ``prediction_ts`` below the last global label
watermark, in ``(prediction_ts, prediction_id, label_version)`` order; a River
pipeline built in this file scores each (served) one before learning it; progressive
log-loss is the mean of those per-example losses and AUC is counted pairwise over the
last ``AUC_WINDOW`` of them.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from river import compose, linear_model, optim, preprocessing

from freshet.settings import Settings
from freshet.topics import create_topics
from tests.streams.support import ROOT, settings_env
from tests.streams.test_features_stream import make_settings

broker = pytest.mark.integration

T0 = 1_767_225_600_000
END_OF_TIME = 2**62
LABEL_PARTITIONS = 3
EVERY, RECENT_K, AUC_WINDOW, LR = 250, 200, 1_000, 0.05
TRAIN_FLAGS = ["--checkpoint-every", str(EVERY), "--recent-k", str(RECENT_K),
               "--auc-window", str(AUC_WINDOW), "--learning-rate", str(LR)]


def synthetic(seed: int, n: int) -> list[dict[str, Any]]:
    """Seeded training examples in publish order (label time): some shadow, some provisional."""
    rng = np.random.default_rng(seed)
    out: list[tuple[int, dict[str, Any]]] = []
    for i in range(n):
        ts = T0 + int(rng.integers(0, 600_000))
        x1, x2, clicks = float(rng.normal()), float(rng.normal()), int(rng.poisson(2))
        y = int(rng.random() < 1 / (1 + math.exp(-(2.0 * x1 - x2 + 0.3 * clicks - 1.5))))
        delay = int(rng.integers(500, 60_000)) if y else 60_000
        pid = f"pred-{i:05d}"
        base = {"prediction_id": pid, "request_id": f"req-{i}", "user_id": f"u{i % 37}",
                "item_id": f"i{i % 11}", "model_id": "m-a" if i % 2 else "m-b",
                "score": float(rng.random()), "ts": ts, "features": {"x1": x1, "x2": x2},
                "prediction_ts": ts, "window_ms": 60_000, "schema_version": 1,
                "freshet_features": {"user": {"as_of_ts": ts, "features": {"clicks_1h": clicks,
                                                                           "gone": None},
                                              "source": {}}, "item": None}}
        final = {**base, "label": y, "kind": "positive" if y else "negative",
                 "label_version": 1, "final": True, "label_ts": ts + delay,
                 "delay_ms": delay if y else None}
        roll = rng.random()
        if roll < 0.05:  # a shadow score of the same request: not trained on
            final["served"] = False
        elif roll < 0.10:  # early_negative: a provisional example first, the final later
            out.append((ts, {**base, "label": 0, "kind": "early_negative", "label_version": 1,
                             "final": False, "label_ts": ts, "delay_ms": None}))
            final["label_version"] = 2
        out.append((ts + delay, final))
    out.sort(key=lambda r: (r[0], r[1]["prediction_id"], r[1]["label_version"]))
    return [r for _, r in out]


def schedule(records: list[dict[str, Any]], final_t: int, every: int = 150,
             seed: int = 0) -> list[tuple[list[dict[str, Any]], dict[int, int]]]:
    """Chunks of examples, each followed by label watermarks that never pass an unpublished one."""
    rng = np.random.default_rng(seed)
    current = dict.fromkeys(range(LABEL_PARTITIONS), T0 - 1)
    out = []
    for start in range(0, len(records), every):
        chunk = records[start:start + every]
        rest = [r["prediction_ts"] for r in records[start + every:] if r["final"]]
        bound = min([*rest, final_t])
        for p in current:  # some partitions lag behind: the global one is their minimum
            current[p] = max(current[p], bound - int(rng.choice([0, 0, 5_000])))
        out.append((chunk, dict(current)))
    out.append(([], dict.fromkeys(current, final_t)))
    return out


def produce(settings: Settings, plan: list[tuple[list[dict[str, Any]], dict[int, int]]],
            junk: list[bytes | None]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers,
                         "partitioner": "murmur2_random", "enable.idempotence": True})
    examples, marks = settings.topic("training_examples"), settings.topic("label_watermarks")
    for raw in junk:
        producer.produce(examples, key=b"junk", value=raw)
    for chunk, values in plan:
        for rec in chunk:
            producer.produce(examples, key=rec["prediction_id"].encode(), value=orjson.dumps(rec))
        assert producer.flush(30) == 0  # the examples are on the broker before their watermark
        for part, value in values.items():
            producer.produce(marks, key=str(part).encode(), value=orjson.dumps(
                {"partition": part, "label_watermark_ms": value, "watermark_ms": value,
                 "schema_version": 1}))
        assert producer.flush(30) == 0


def flat(rec: dict[str, Any]) -> dict[str, float]:
    """The features, flattened by hand in the trainer's documented order."""
    return {"logged.x1": rec["features"]["x1"], "logged.x2": rec["features"]["x2"],
            "user.clicks_1h": float(rec["freshet_features"]["user"]["features"]["clicks_1h"])}


def oracle(records: list[dict[str, Any]], final_t: int) -> dict[str, Any]:
    """Matured examples in label order, progressive scores and metrics, recomputed here."""
    matured = sorted((r for r in records if r["final"] and r["prediction_ts"] < final_t),
                     key=lambda r: (r["prediction_ts"], r["prediction_id"], r["label_version"]))
    model: compose.Pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(LR), l2=0.0, intercept_lr=0.01)
    ids, scores, labels, losses = [], [], [], []
    for rec in matured:
        if rec.get("served", True) is False:
            continue
        x = flat(rec)
        p = float(model.predict_proba_one(x)[True])
        q = min(max(p, 1e-15), 1 - 1e-15)
        losses.append(-math.log(q) if rec["label"] else -math.log(1 - q))
        ids.append(rec["prediction_id"])
        scores.append(p)
        labels.append(rec["label"])
        model.learn_one(x, bool(rec["label"]))
    last = list(zip(scores[-AUC_WINDOW:], labels[-AUC_WINDOW:], strict=True))
    pos = [s for s, y in last if y]
    neg = [s for s, y in last if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return {"ids": ids, "scores": scores, "log_loss": math.fsum(losses) / len(losses),
            "auc": wins / (len(pos) * len(neg)),
            "held": sum(1 for r in records if r["final"] and r["prediction_ts"] >= final_t)}


def trainer_cmd(extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "freshet.cli", "train", *TRAIN_FLAGS, *extra]


def start(settings: Settings, tmp: Path, name: str, extra: list[str],
          versions_topic: str) -> subprocess.Popen[bytes]:
    env = {**settings_env(settings), "FRESHET_TRAIN_CHECKPOINT_DIR": str(tmp / f"ckpt-{name}"),
           "FRESHET_TOPIC_MODEL_VERSIONS": versions_topic}
    out = open(tmp / f"{name}.out", "ab")  # noqa: SIM115 (closed with the process)
    err = open(tmp / f"{name}.err", "ab")  # noqa: SIM115
    return subprocess.Popen(trainer_cmd(extra), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err)


def finish(proc: subprocess.Popen[bytes], tmp: Path, name: str) -> dict[str, Any]:
    """Wait for a trainer run to end by itself; its final summary line."""
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError((tmp / f"{name}.err").read_text()[-3000:]) from None
    assert code == 0, (tmp / f"{name}.err").read_text()[-3000:]
    summary: dict[str, Any] = json.loads((tmp / f"{name}.out").read_text().splitlines()[-1])
    return summary


def learned(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.exists():  # not opened yet by the trainer
        return out
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a killed run's last line may be cut
            out.append(json.loads(line))
    return out


def read_topic(settings: Settings, topic: str) -> list[tuple[bytes, dict[str, Any]]]:
    """Every record of a topic, read_committed, up to its end now."""
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": topic,
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in parts}
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + 30
    while any(consumer.position([TopicPartition(topic, p)])[0].offset < e
              for p, e in ends.items() if e > 0) and time.monotonic() < deadline:
        out.extend((m.key() or b"", orjson.loads(m.value() or b"null"))
                   for m in consumer.consume(500, timeout=0.5) if m.error() is None)
    consumer.close()
    return sorted(out, key=lambda kv: kv[1]["version"])  # one partition or several


def without_position(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k != "position"}


def wait_for(what: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while not what():
        assert proc.poll() is None, "the trainer ended before the kill"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@broker
@pytest.mark.restart
def test_sigkill_and_restart_learn_exactly_the_matured_examples_in_label_order(
        kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             FRESHET_PARTITIONS=str(LABEL_PARTITIONS))
    create_topics(settings)
    records = synthetic(seed=11, n=2_600)
    final_t = T0 + 540_000  # examples of the last minute stay held: not matured
    produce(settings, schedule(records, final_t, seed=11), junk=[b"not json", None])
    want = oracle(records, final_t)
    assert len(want["ids"]) > 1_800 and want["held"] > 100

    interrupted, straight = "mv-restarted", "mv-straight"  # FRESHET_TOPIC_PREFIX applies
    log1 = tmp_path / "learned-restarted.jsonl"
    first = start(settings, tmp_path, "run1", ["--until-end", "--learned-log", str(log1),
                                               "--debug-delay-ms", "4"], interrupted)
    v3 = tmp_path / "ckpt-run1" / "versions" / "v000003.json"
    wait_for(lambda: v3.exists() and len(learned(log1)) > 3 * EVERY + 40, 45, first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    before = learned(log1)
    assert len(before) < len(want["ids"])  # killed mid-way
    second = start(settings, tmp_path, "run1", ["--until-end", "--learned-log", str(log1)],
                   interrupted)
    restarted = finish(second, tmp_path, "run1")
    log3 = tmp_path / "learned-straight.jsonl"
    straight_summary = finish(start(settings, tmp_path, "run3",
                                    ["--until-end", "--learned-log", str(log3)], straight),
                              tmp_path, "run3")

    # exactly the matured, served examples, in label order, across the kill: none lost,
    # none repeated (what the first run learned after its last checkpoint was redone)
    after = learned(log1)[len(before):]
    resumed_at = after[0]["examples_seen"] - 1
    assert resumed_at % EVERY == 0 and resumed_at >= 3 * EVERY
    lost = [e for e in before if e["examples_seen"] > resumed_at]
    assert lost, "the kill should land after some work past the checkpoint"
    assert after[:len(lost)] == lost  # redone identically (River is deterministic)
    combined = [e for e in before if e["examples_seen"] <= resumed_at] + after
    assert [e["prediction_id"] for e in combined] == want["ids"]
    assert [e["examples_seen"] for e in combined] == list(range(1, len(want["ids"]) + 1))
    assert [e["score"] for e in combined] == pytest.approx(want["scores"], rel=1e-12, abs=0)
    assert combined == learned(log3)  # equal to one uninterrupted run, value for value

    # final progressive metrics: the restarted run's == the uninterrupted run's == oracle
    for key in ("examples_seen", "progressive_log_loss", "progressive_auc", "version",
                "champion_version", "held"):
        assert restarted[key] == straight_summary[key], key
    assert restarted["examples_seen"] == len(want["ids"])
    assert restarted["progressive_log_loss"] == pytest.approx(want["log_loss"], rel=1e-12)
    assert restarted["progressive_auc"] == pytest.approx(want["auc"], rel=1e-12)
    assert restarted["held"] == want["held"]
    assert straight_summary["feed"]["invalid"] == 2  # the junk values: skipped, counted
    assert restarted["feed"]["skipped_on_resume"] > 0  # the restart re-read a recovery range

    # model-versions: one record per version, with lineage, equal to the uninterrupted
    # run's (positions aside: offsets read when a version was cut may differ)
    got = read_topic(settings, settings.topic_prefix + interrupted)
    ref = read_topic(settings, settings.topic_prefix + straight)
    assert [k for k, _ in got] == [str(r["version"]).encode() for _, r in got]
    versions = [r["version"] for _, r in got]
    assert versions == list(range(1, restarted["version"] + 1))
    assert [without_position(r) for _, r in got] == [without_position(r) for _, r in ref]
    assert [r["parent"] for _, r in got] == [None, *versions[:-1]]
    assert [r["examples_seen"] for _, r in got[:-1]] == [EVERY * v for v in versions[:-1]]
    assert got[-1][1]["examples_seen"] == len(want["ids"])
    assert got[-1][1]["metrics"]["progressive_log_loss"] == pytest.approx(want["log_loss"],
                                                                         rel=1e-12)
    champion = restarted["champion_version"]
    assert got[champion - 1][1]["promoted"] and all(
        r["champion_version"] == max(v for v in versions[:i + 1] if got[v - 1][1]["promoted"])
        for i, (_, r) in enumerate(got))
    folder = tmp_path / "ckpt-run1"
    assert json.loads((folder / "champion.json").read_text()) == got[champion - 1][1]
    assert sorted(p.name for p in (folder / "versions").glob("*.json")) == \
        [f"v{v:06d}.json" for v in versions]


@broker
def test_file_mode_equals_topic_mode(kafka_bootstrap: str, unique_prefix: str,
                                     tmp_path: Path) -> None:
    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path,
                             FRESHET_PARTITIONS=str(LABEL_PARTITIONS))
    create_topics(settings)
    records = synthetic(seed=23, n=1_500)
    produce(settings, schedule(records, END_OF_TIME, seed=23), junk=[])  # replay's last mark
    want = oracle(records, END_OF_TIME)
    topic = "mv-topic"
    topic_log, file_log = tmp_path / "learned-topic.jsonl", tmp_path / "learned-file.jsonl"
    by_topic = finish(start(settings, tmp_path, "topic",
                            ["--until-end", "--learned-log", str(topic_log)], topic),
                      tmp_path, "topic")
    examples = tmp_path / "training-examples.jsonl"
    examples.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))  # publish order
    by_file = finish(start(settings, tmp_path, "file",
                           ["--examples", str(examples), "--learned-log", str(file_log)],
                           "mv-unused"), tmp_path, "file")

    assert learned(file_log) == learned(topic_log)
    assert [e["prediction_id"] for e in learned(file_log)] == want["ids"]
    for key in ("examples_seen", "progressive_log_loss", "progressive_auc", "version",
                "champion_version", "held"):
        assert by_file[key] == by_topic[key], key
    assert by_file["held"] == 0 and by_file["progressive_auc"] == pytest.approx(want["auc"],
                                                                             rel=1e-12)
    files = sorted((tmp_path / "ckpt-file" / "versions").glob("*.json"))
    from_files = [json.loads(p.read_text()) for p in files]
    from_topic = [r for _, r in read_topic(settings, settings.topic_prefix + topic)]
    assert [without_position(r) for r in from_files] == [without_position(r) for r in from_topic]
    assert from_files[-1]["position"]["consumed"] == {"0": len(records) + 1}  # lines, + the end


def write_examples(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_sigterm_checkpoints_what_was_learned_and_a_restart_continues(tmp_path: Path) -> None:
    records = synthetic(seed=31, n=1_200)
    want = oracle(records, END_OF_TIME)
    examples = write_examples(tmp_path / "examples.jsonl", records)
    settings = Settings.from_env({"FRESHET_DATA_DIR": str(tmp_path)})
    log = tmp_path / "learned.jsonl"
    args = ["--examples", str(examples), "--learned-log", str(log)]
    first = start(settings, tmp_path, "a", [*args, "--debug-delay-ms", "4"], "unused")
    wait_for(lambda: len(learned(log)) > EVERY + 30, 45, first)
    first.send_signal(signal.SIGTERM)
    stopped = finish(first, tmp_path, "a")
    before = learned(log)
    assert stopped["stopped"] == "signal" and 0 < len(before) < len(want["ids"])
    # the stop checkpoint holds everything learned: nothing will be redone
    assert stopped["examples_seen"] == len(before)
    record = json.loads((tmp_path / "ckpt-a" / "versions" /
                         f"v{stopped['version']:06d}.json").read_text())
    assert record["examples_seen"] == len(before) and record["examples_since_parent"] < EVERY
    done = finish(start(settings, tmp_path, "a", args, "unused"), tmp_path, "a")
    after = learned(log)[len(before):]
    assert after[0]["examples_seen"] == len(before) + 1  # no example redone or skipped
    assert [e["prediction_id"] for e in before + after] == want["ids"]
    assert done["progressive_log_loss"] == pytest.approx(want["log_loss"], rel=1e-12)
    assert done["progressive_auc"] == pytest.approx(want["auc"], rel=1e-12)


def test_a_restart_refuses_other_settings_other_input_and_a_second_trainer(
        tmp_path: Path) -> None:
    records = synthetic(seed=41, n=300)
    examples = write_examples(tmp_path / "examples.jsonl", records)
    settings = Settings.from_env({"FRESHET_DATA_DIR": str(tmp_path)})
    finish(start(settings, tmp_path, "a", ["--examples", str(examples)], "unused"), tmp_path, "a")
    cases = [
        (["--examples", str(examples), "--l2", "0.5"], "was made with TrainerConfig("),
        (["--examples", str(write_examples(tmp_path / "other.jsonl", records[:200]))],
         "was made from {'files': [{'bytes': "),
    ]
    for extra, message in cases:
        proc = start(settings, tmp_path, "a", extra, "unused")
        assert proc.wait(timeout=60) == 1
        assert message in (tmp_path / "a.err").read_text()
    from streams.trainer_io import CheckpointStore, TrainIOError

    held = CheckpointStore(tmp_path / "ckpt-a")
    held.acquire()
    try:
        with pytest.raises(TrainIOError, match="is in use by trainer pid"):
            CheckpointStore(tmp_path / "ckpt-a").acquire()
    finally:
        held.release()


SETTINGS_TABLE: list[tuple[dict[str, str], dict[str, str], dict[str, Any] | list[str]]] = [
    # flags, env, the TrainerConfig fields expected, or the problems reported (in order)
    ({}, {"FRESHET_TRAIN_CHECKPOINT_EVERY": "5_000", "FRESHET_TRAIN_OPTIMIZER": "adam"},
     {"checkpoint_every": 5_000, "optimizer": "adam"}),
    ({"optimizer": "adagrad"}, {"FRESHET_TRAIN_OPTIMIZER": "lbfgs", "FRESHET_TRAIN_L2": "0.1"},
     {"optimizer": "adagrad", "l2": 0.1}),  # the flag wins over the variable
    ({"checkpoint_every": "0"}, {}, ["--checkpoint-every: checkpoint_every must be >= 1, got 0"]),
    ({}, {"FRESHET_TRAIN_ALPHA": "0.9", "FRESHET_TRAIN_LEARNING_RATE": "fast"},
     ["FRESHET_TRAIN_LEARNING_RATE: 'fast' is not a valid number",
      "FRESHET_TRAIN_ALPHA: alpha must be in (0.0, 0.5], got 0.9"]),
    ({}, {"FRESHET_TRAIN_RECENT_K": "10", "FRESHET_TRAIN_LABEL_PARTITIONS": "two"},
     ["FRESHET_TRAIN_RECENT_K: recent_k must be >= 30, got 10",
      "FRESHET_TRAIN_LABEL_PARTITIONS: 'two' is not a valid integer"]),
    ({}, {"FRESHET_TRAIN_LABEL_PARTITIONS": "2000", "FRESHET_TOPIC_MODEL_VERSIONS": "a b"},
     ["FRESHET_TOPIC_MODEL_VERSIONS: 'p.a b' is not a valid Kafka topic name",
      "FRESHET_TRAIN_LABEL_PARTITIONS: must be 0"]),
]


@pytest.mark.parametrize(("flags", "env", "expected"), SETTINGS_TABLE)
def test_train_settings_report_every_problem(flags: dict[str, str], env: dict[str, str],
                                             expected: dict[str, Any] | list[str]) -> None:
    import argparse

    from freshet.train_cli import train_settings
    from training import TrainerConfig

    args = argparse.Namespace(checkpoint_dir=None, **flags)
    if isinstance(expected, dict):
        ts = train_settings(args, env, Path("data"), "p.")
        assert (ts.checkpoint_dir, ts.model_versions_topic) == (Path("data/trainer"),
                                                                "p.model-versions")
        assert ts.trainer == TrainerConfig(**expected)
        return
    with pytest.raises(ValueError) as info:
        train_settings(args, env, Path("data"), "p.")
    lines = str(info.value).splitlines()
    assert lines[0] == f"invalid freshet train settings ({len(expected)} to fix):"
    assert all(want in got for want, got in zip(expected, lines[1:], strict=True)), lines


@broker
def test_versions_kept_off_the_topic_by_a_crash_are_republished_once(
        kafka_bootstrap: str, unique_prefix: str, tmp_path: Path) -> None:
    from streams.trainer_io import CheckpointStore, VersionPublisher
    from training import ContinualTrainer, TrainerConfig

    settings = make_settings(kafka_bootstrap, unique_prefix, tmp_path)
    store = CheckpointStore(tmp_path / "ckpt")
    store.acquire()
    trainer = ContinualTrainer(TrainerConfig(checkpoint_every=50, recent_k=30))
    cps = [res.checkpoint for i, rec in enumerate(synthetic(seed=5, n=200))
           if (res := trainer.process(rec, {"line": i})) is not None and res.checkpoint]
    publisher = VersionPublisher(settings, settings.topic_prefix + "mv")
    publisher.ensure_topic()
    for cp in cps:
        assert cp is not None
        store.save(cp, {"kind": "files"})
    publisher.publish(cps[0].record)  # then "crashed" before publishing the others
    assert publisher.reconcile(store, len(cps)) == len(cps) - 1
    assert publisher.reconcile(store, len(cps)) == 0
    got = read_topic(settings, settings.topic_prefix + "mv")
    assert [r for _, r in got] == [cp.record for cp in cps]
    store.release()
