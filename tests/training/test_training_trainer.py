"""The continual trainer: score-before-learn, restart equivalence, promotion, determinism."""

from __future__ import annotations

import math
import pickle
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import Checkpoint, ContinualTrainer, ExampleResult, TrainerConfig
from training.champion import paired_test
from training.config import Optimizer
from training.trainer import build_pipeline

T0 = 1_700_000_000_000


def stream(seed: int, n: int, start: int = 0) -> list[dict[str, Any]]:
    """A seeded, learnable stream of training-example records."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(start, start + n):
        x1, x2 = float(rng.normal()), float(rng.normal())
        clicks = int(rng.poisson(2))
        logit = 2.0 * x1 - 1.0 * x2 + 0.3 * clicks - 1.5
        y = int(rng.random() < 1 / (1 + math.exp(-logit)))
        user: dict[str, Any] = {"clicks_1h": clicks, "last": None}
        out.append({
            "prediction_id": f"p{i:06d}", "request_id": f"r{i}", "user_id": "u",
            "item_id": "i", "model_id": "logged", "score": 0.5, "label": y,
            "kind": "positive" if y else "negative", "label_version": 1, "final": True,
            "prediction_ts": T0 + 10 * i, "label_ts": T0 + 10 * i + 500 - (i % 7),
            "delay_ms": None, "window_ms": 1_000, "schema_version": 1,
            "features": {"x1": x1, "x2": x2, "note": "text"},
            "freshet_features": {"user": {"as_of_ts": T0 + 10 * i, "features": user,
                                          "source": {}}, "item": None},
        })
    return out


def features(rec: dict[str, Any]) -> dict[str, float]:
    """The features the trainer should use, written out again by hand."""
    return {"logged.x1": rec["features"]["x1"], "logged.x2": rec["features"]["x2"],
            "user.clicks_1h": float(rec["freshet_features"]["user"]["features"]["clicks_1h"])}


def step(tr: ContinualTrainer, rec: dict[str, Any], pos: int) -> ExampleResult:
    res = tr.process(rec, pos)
    assert res is not None
    return res


def run(cfg: TrainerConfig, records: list[dict[str, Any]]) -> tuple[ContinualTrainer,
                                                                     list[ExampleResult]]:
    tr = ContinualTrainer(cfg)
    results = []
    for pos, rec in enumerate(records):
        res = tr.process(rec, pos)
        assert res is not None
        results.append(res)
    return tr, results


def test_every_example_is_scored_before_the_model_learns_it() -> None:
    records = stream(1, 200)
    cfg = TrainerConfig(learning_rate=0.05, checkpoint_every=10_000)
    _, results = run(cfg, records)
    before, after = build_pipeline(cfg), build_pipeline(cfg)
    expected_before, expected_after = [], []
    for rec in records:
        x, y = features(rec), bool(rec["label"])
        expected_before.append(before.predict_proba_one(x)[True])
        before.learn_one(x, y)
        after.learn_one(x, y)  # the wrong order: learn, then score
        expected_after.append(after.predict_proba_one(x)[True])
    got = [r.score for r in results]
    assert got[0] == 0.5  # an untrained logistic regression
    assert got == expected_before
    assert got != expected_after  # the test tells the two orders apart
    # and learning first would have made every score better on average on its own label
    ll = [r.log_loss for r in results]
    ll_after = [-math.log(p) if r["label"] else -math.log(1 - p)
                for p, r in zip(expected_after, records, strict=True)]
    assert sum(ll_after) < sum(ll)


def test_progressive_metrics_match_the_per_example_results() -> None:
    cfg = TrainerConfig(auc_window=150, checkpoint_every=10_000)
    tr, results = run(cfg, stream(2, 400))
    m = tr.metrics()
    assert m["progressive_log_loss"] == pytest.approx(
        math.fsum(r.log_loss for r in results) / len(results), rel=1e-12)
    last = results[-150:]
    pos = [r.score for r in last if r.label]
    neg = [r.score for r in last if not r.label]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert m["progressive_auc"] == pytest.approx(wins / (len(pos) * len(neg)), rel=1e-12)
    assert m["progressive_auc"] > 0.75  # the stream is learnable


def _replay_with_restarts(cfg: TrainerConfig, records: list[dict[str, Any]], rnd: random.Random,
                          crash_lag: int) -> tuple[ContinualTrainer, list[ExampleResult],
                                                   list[Checkpoint], int]:
    """Run, crash after some checkpoints (losing ``crash_lag`` examples), resume from it."""
    tr = ContinualTrainer(cfg)
    kept: list[ExampleResult] = []
    checkpoints: list[Checkpoint] = []
    restarts = 0
    pos = 0
    latest: Checkpoint | None = None
    while pos < len(records):
        res = tr.process(records[pos], pos)
        assert res is not None
        kept.append(res)
        if res.checkpoint is not None:
            latest = res.checkpoint
            checkpoints.append(latest)
            if rnd.random() < 0.5:
                # keep going a little, then "crash": everything after the checkpoint is lost
                for extra in range(pos + 1, min(pos + 1 + crash_lag, len(records))):
                    tr.process(records[extra], extra)
                tr = ContinualTrainer.restore(pickle.loads(pickle.dumps(latest)))
                restarts += 1
                assert latest.record["position"] == pos
                pos = latest.record["position"] + 1  # resume right after the position
                continue
        pos += 1
    return tr, kept, checkpoints, restarts


@settings(derandomize=True, max_examples=12, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 7), st.sampled_from(["sgd", "adam", "adagrad"]))
def test_restart_from_checkpoint_loses_no_example_and_repeats_none(seed: int, lag: int,
                                                                   optimizer: Optimizer) -> None:
    cfg = TrainerConfig(optimizer=optimizer, checkpoint_every=37, recent_k=30, auc_window=50)
    records = stream(seed % 1000, 300)
    straight, results = run(cfg, records)
    restarted, kept, checkpoints, _ = _replay_with_restarts(cfg, records, random.Random(seed),
                                                            lag)
    assert restarted.examples_seen == straight.examples_seen == len(records)
    assert [r.prediction_id for r in kept] == [r["prediction_id"] for r in records]
    strip = [(r.prediction_id, r.score, r.log_loss, r.champion_score, r.examples_seen)
             for r in results]
    assert [(r.prediction_id, r.score, r.log_loss, r.champion_score, r.examples_seen)
            for r in kept] == strip
    assert restarted.weights() == straight.weights()
    straight_cps = [r.checkpoint for r in results if r.checkpoint is not None]
    assert [c.record for c in checkpoints] == [c.record for c in straight_cps]
    probe = features(records[0])
    assert [pickle.loads(c.model).predict_proba_one(probe) for c in checkpoints] == \
        [pickle.loads(c.model).predict_proba_one(probe) for c in straight_cps]
    assert restarted.checkpoint().record == straight.checkpoint().record


def test_restart_really_restarts() -> None:
    cfg = TrainerConfig(checkpoint_every=25, recent_k=30)
    records = stream(5, 200)

    class Always(random.Random):
        def random(self) -> float:
            return 0.0

    _, kept, _, restarts = _replay_with_restarts(cfg, records, Always(), 5)
    assert restarts == 8
    assert len(kept) == 200


def _negate(tr: ContinualTrainer) -> None:
    lr = tr.model["LogisticRegression"]
    for k in list(lr._weights):
        lr._weights[k] = -3.0 * lr._weights[k]
    lr.intercept = -lr.intercept


def _independent_paired(results: list[ExampleResult], k: int, margin: float) -> tuple[float, float]:
    d = np.array([(r.champion_log_loss or 0.0) - r.log_loss for r in results[-k:]])
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    t = (mean - margin) / (sd / math.sqrt(k))
    return mean, 0.5 * math.erfc(t / math.sqrt(2))


def test_a_clearly_better_challenger_is_promoted() -> None:
    cfg = TrainerConfig(learning_rate=0.05, checkpoint_every=600, recent_k=300)
    records = stream(3, 605)
    tr = ContinualTrainer(cfg)
    results = [step(tr, r, i) for i, r in enumerate(records[:5])]
    first = tr.checkpoint()  # an almost untrained first version: promoted by default
    assert (first.record["version"], first.record["promoted"], first.record["parent"]) == \
        (1, True, None)
    assert "promoted by default" in first.record["reason"]
    results += [step(tr, r, i + 5) for i, r in enumerate(records[5:])]
    cp = results[-1].checkpoint
    assert cp is not None
    rec = cp.record
    assert (rec["version"], rec["parent"], rec["promoted"], rec["champion_version"]) == \
        (2, 1, True, 2)
    mean, p = _independent_paired(results, 300, 0.0)
    assert rec["metrics"]["paired_mean_improvement"] == pytest.approx(mean, rel=1e-9)
    assert rec["metrics"]["paired_p_value"] == pytest.approx(p, rel=1e-6, abs=1e-300)
    assert p < 1e-6 and mean > 0.05
    # the new champion is a frozen copy of version 2: it scores like the live model did then
    nxt = stream(3, 1, start=605)[0]
    after = tr.process(nxt, 605)
    assert after is not None and after.champion_score == pytest.approx(after.score, abs=0)


def test_a_clearly_worse_challenger_is_not_promoted() -> None:
    cfg = TrainerConfig(learning_rate=0.01, checkpoint_every=400, recent_k=200)
    records = stream(4, 800)
    tr = ContinualTrainer(cfg)
    results = [step(tr, r, i) for i, r in enumerate(records[:400])]
    assert results[-1] is not None and results[-1].checkpoint is not None
    assert results[-1].checkpoint.record["promoted"]  # version 1, a good model
    _negate(tr)  # the challenger now ranks backwards
    results = [step(tr, r, i + 400) for i, r in enumerate(records[400:])]
    cp = results[-1].checkpoint
    assert cp is not None
    rec = cp.record
    assert (rec["version"], rec["promoted"], rec["champion_version"]) == (2, False, 1)
    assert rec["reason"].startswith("not promoted")
    mean, p = _independent_paired(results, 200, 0.0)
    assert mean < 0 and p > 0.99
    assert rec["metrics"]["paired_p_value"] == pytest.approx(p, rel=1e-6)


def test_not_promoted_without_enough_paired_examples_or_margin() -> None:
    cfg = TrainerConfig(checkpoint_every=100, recent_k=150, learning_rate=0.05)
    _, results = run(cfg, stream(6, 200))
    cps = [r.checkpoint.record for r in results if r.checkpoint is not None]
    assert [c["promoted"] for c in cps] == [True, False]
    assert "100 paired examples with champion 1, need 150" in cps[1]["reason"]
    big_margin = TrainerConfig(checkpoint_every=100, recent_k=100, learning_rate=0.05,
                               min_margin=5.0)
    _, results = run(big_margin, stream(6, 200))
    second = [r.checkpoint.record for r in results if r.checkpoint is not None][1]
    assert second["promoted"] is False and second["metrics"]["paired_p_value"] > 0.5


PAIRED_TABLE = [
    # champion losses, challenger losses, margin, alpha, promote
    ([0.7] * 20 + [0.8] * 20, [0.5] * 20 + [0.6] * 20, 0.1, 0.05, True),
    ([0.7] * 20 + [0.8] * 20, [0.5] * 20 + [0.6] * 20, 0.2, 0.05, False),  # d == margin
    ([0.7] * 40, [0.7] * 40, 0.0, 0.05, False),
    ([0.6, 0.8] * 20, [0.7] * 40, 0.0, 0.05, False),
]


@pytest.mark.parametrize(("champ", "chall", "margin", "alpha", "promote"), PAIRED_TABLE)
def test_paired_test_table(champ: list[float], chall: list[float], margin: float, alpha: float,
                           promote: bool) -> None:
    assert paired_test(champ, chall, margin, alpha).promote is promote


def test_versions_have_lineage_and_ranges() -> None:
    cfg = TrainerConfig(checkpoint_every=50, recent_k=30)
    records = stream(7, 170)
    _, results = run(cfg, records)
    cps = [r.checkpoint.record for r in results if r.checkpoint is not None]
    assert [c["version"] for c in cps] == [1, 2, 3]
    assert [c["parent"] for c in cps] == [None, 1, 2]
    assert [c["examples_seen"] for c in cps] == [50, 100, 150]
    assert [c["examples_since_parent"] for c in cps] == [50, 50, 50]
    assert [c["position"] for c in cps] == [49, 99, 149]
    assert cps[2]["prediction_ts_range"] == [T0, T0 + 10 * 149]
    label_ts = [r["label_ts"] for r in records[:150]]
    assert cps[2]["label_ts_range"] == [min(label_ts), max(label_ts)]
    assert all(c["schema_version"] == 1 and len(c["model_sha256"]) == 64 for c in cps)


def test_seeded_stream_gives_identical_results() -> None:
    cfg = TrainerConfig(checkpoint_every=100, recent_k=50)
    a_tr, a = run(cfg, stream(11, 300))
    b_tr, b = run(cfg, stream(11, 300))
    assert [(r.score, r.champion_score) for r in a] == [(r.score, r.champion_score) for r in b]
    assert [r.checkpoint.record for r in a if r.checkpoint] == \
        [r.checkpoint.record for r in b if r.checkpoint]
    assert a_tr.weights() == b_tr.weights()
    assert set(a_tr.weights()) == {"intercept", "logged.x1", "logged.x2", "user.clicks_1h"}


def test_non_final_and_shadow_examples_are_skipped_but_move_the_position() -> None:
    tr = ContinualTrainer(TrainerConfig())
    rec = {**stream(8, 1)[0], "final": False}
    assert tr.process(rec, {"offset": 9}) is None
    assert tr.examples_seen == 0 and tr.position == {"offset": 9}
    assert tr.process({**stream(8, 1)[0], "served": False}, {"offset": 10}) is None
    assert tr.examples_seen == 0 and tr.position == {"offset": 10}
    assert tr.weights() == {"intercept": 0.0}
