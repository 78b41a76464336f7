"""Tests of the synthetic stream generator (freshet.generator) and the producer's
broker-free behaviour (freshet.producer)."""

from __future__ import annotations

import math
import re
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from events.contracts import Click, ContractError, Prediction, decode_click, decode_prediction
from freshet.generator import (
    LOGGED_FEATURES,
    MALFORMED_KINDS,
    GeneratedRecord,
    GeneratorConfig,
    Simulation,
    generate,
    read_jsonl,
    stream,
    write_jsonl,
)
from freshet.producer import ProduceError, produce, produce_stream, producer_config

if TYPE_CHECKING:
    from confluent_kafka import Message

MINUTE_MS = 60_000
START_MS = GeneratorConfig().start_ts_ms


@pytest.fixture(scope="module")
def records() -> list[GeneratedRecord]:
    return list(generate(GeneratorConfig(predictions=30_000)))


@pytest.fixture(scope="module")
def decoded(records: list[GeneratedRecord]) -> tuple[list[Prediction], list[Click]]:
    preds = [decode_prediction(r.value) for r in records if r.topic == "predictions"]
    clicks = [decode_click(r.value) for r in records if r.topic == "clicks"]
    return preds, clicks


@pytest.fixture(scope="module")
def dirty() -> list[GeneratedRecord]:
    return list(generate(GeneratorConfig(predictions=20_000, malformed_fraction=0.05, seed=3)))


def _decode(record: GeneratedRecord) -> Prediction | Click:
    if record.topic == "predictions":
        return decode_prediction(record.value)
    return decode_click(record.value)


# --- determinism -----------------------------------------------------------------


def test_same_config_gives_byte_identical_output() -> None:
    config = GeneratorConfig(predictions=3_000, malformed_fraction=0.05)
    first = list(generate(config))
    second = list(generate(GeneratorConfig(predictions=3_000, malformed_fraction=0.05)))
    assert first == second
    assert b"".join(r.value for r in first) == b"".join(r.value for r in second)


def test_another_seed_gives_other_output() -> None:
    first = [r.value for r in generate(GeneratorConfig(predictions=1_000, seed=1))]
    second = [r.value for r in generate(GeneratorConfig(predictions=1_000, seed=2))]
    assert first != second
    assert not set(first) & set(second)  # ids embed the seed


# --- shape of the valid stream ---------------------------------------------------


def test_exact_prediction_count_and_unique_ids(
    records: list[GeneratedRecord], decoded: tuple[list[Prediction], list[Click]]
) -> None:
    preds, clicks = decoded
    assert len(preds) == 30_000
    assert len({p.prediction_id for p in preds}) == len(preds)
    assert len({c.click_id for c in clicks}) == len(clicks)
    assert all(r.malformed is None for r in records)


def test_valid_records_decode_with_matching_key_and_ts(records: list[GeneratedRecord]) -> None:
    for record in records:
        event = _decode(record)
        assert record.key == event.user_id.encode()
        assert record.ts == event.ts
        assert b"\n" not in record.value


def test_requests_serve_ranked_slates(decoded: tuple[list[Prediction], list[Click]]) -> None:
    preds, _ = decoded
    config = GeneratorConfig()
    by_request: dict[str, list[Prediction]] = defaultdict(list)
    for p in preds:
        by_request[p.request_id].append(p)
    sizes: Counter[int] = Counter()
    for slate in by_request.values():
        slate.sort(key=lambda p: p.position or 0)
        assert [p.position for p in slate] == list(range(len(slate)))
        assert len({(p.user_id, p.ts, p.model_id) for p in slate}) == 1
        assert len({p.item_id for p in slate}) == len(slate)
        scores = [p.score for p in slate]
        assert scores == sorted(scores, reverse=True)  # served in score order
        sizes[len(slate)] += 1
    assert len(by_request) > 1_000
    # every size in range (the very last request may be cut short)
    assert sum(n for size, n in sizes.items()
               if not config.slate_min <= size <= config.slate_max) <= 1
    assert {p.model_id for p in preds} == {"model-a", "model-b"}


def test_users_come_in_sessions(decoded: tuple[list[Prediction], list[Click]]) -> None:
    preds, _ = decoded
    request_ts: dict[str, set[int]] = defaultdict(set)
    for p in preds:
        request_ts[p.user_id].add(p.ts)
    gaps = np.array([b - a for ts in request_ts.values()
                     for a, b in zip(sorted(ts), sorted(ts)[1:], strict=False)])
    short, long = (gaps < 2 * MINUTE_MS).mean(), (gaps > 10 * MINUTE_MS).mean()
    assert short > 0.5, "most gaps are within a session"
    assert long > 0.1, "sessions are separated by idle gaps"
    assert gaps.min() >= 1_000


def test_item_popularity_is_skewed(decoded: tuple[list[Prediction], list[Click]]) -> None:
    preds, _ = decoded
    counts = sorted(Counter(p.item_id for p in preds).values(), reverse=True)
    assert counts[0] > 5 * counts[len(counts) // 2]


def test_propensity_and_features_are_sometimes_logged(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, _ = decoded
    with_propensity = np.mean([p.propensity is not None for p in preds])
    with_features = np.mean([p.features is not None for p in preds])
    assert 0.2 < with_propensity < 0.4
    assert 0.45 < with_features < 0.55
    features = next(p.features for p in preds if p.features is not None)
    assert 0 < features["user_ctr_prior"] < 1


# --- delivery order --------------------------------------------------------------


@pytest.mark.parametrize("max_disorder_ms", [0, 500, 2_000, 30_000])
def test_delivery_disorder_is_bounded(max_disorder_ms: int) -> None:
    config = GeneratorConfig(predictions=10_000, max_disorder_ms=max_disorder_ms,
                             malformed_fraction=0.02)
    ts = [r.ts for r in generate(config) if r.ts is not None]
    running_max = np.maximum.accumulate(np.asarray(ts))
    lateness = running_max - np.asarray(ts)  # how far behind the latest delivered
    assert lateness.max() < max_disorder_ms or lateness.max() == 0
    if max_disorder_ms:
        assert (lateness > 0).mean() > 0.01, "delivery really is out of order"
        assert lateness.max() > max_disorder_ms / 4


# --- clicks ----------------------------------------------------------------------


def test_click_attribution_ids_refer_to_real_predictions_of_the_user(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    by_id = {p.prediction_id: p for p in preds}
    by_request_item = {(p.request_id, p.item_id): p for p in preds}
    user_items = {(p.user_id, p.item_id) for p in preds}
    kinds: Counter[str] = Counter()
    for click in clicks:
        assert (click.user_id, click.item_id) in user_items
        if click.prediction_id is not None:
            pred = by_id[click.prediction_id]
            assert (pred.user_id, pred.item_id) == (click.user_id, click.item_id)
            assert click.request_id == pred.request_id
            kinds["prediction_id"] += 1
        elif click.request_id is not None:
            pred = by_request_item[(click.request_id, click.item_id)]
            assert pred.user_id == click.user_id
            kinds["request_id"] += 1
        else:
            kinds["neither"] += 1
    total = sum(kinds.values())
    assert total > 1_000
    for kind, share in (("prediction_id", 0.5), ("request_id", 0.3), ("neither", 0.2)):
        assert abs(kinds[kind] / total - share) < 0.04, kinds


def test_click_delays_are_mostly_fast_with_a_long_tail_and_some_skew(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    by_id = {p.prediction_id: p for p in preds}
    delays = np.array([c.ts - by_id[c.prediction_id].ts for c in clicks if c.prediction_id])
    assert np.median(delays) < MINUTE_MS
    assert 0.01 < (delays > 30 * MINUTE_MS).mean() < 0.08
    early = delays[delays < 0]
    assert 0 < len(early) < 0.05 * len(delays)
    assert early.min() >= -2_000


def test_clicks_follow_the_true_click_probability(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    ctr = len(clicks) / len(preds)
    assert 0.03 < ctr < 0.3
    clicked = {(c.request_id, c.item_id) for c in clicks if c.request_id}
    by_position = Counter(p.position for p in preds if (p.request_id, p.item_id) in clicked)
    assert by_position[0] > by_position[4], "top positions are clicked more"


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse = np.unique(scores, return_inverse=True)  # average the ranks of ties
    ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    pos = labels.sum()
    neg = len(labels) - pos
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def test_auc_helper() -> None:
    assert _auc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([False, False, True, True])) == 1.0
    assert _auc(np.array([0.5, 0.5]), np.array([False, True])) == 0.5


def test_model_a_ranks_clicks_better_than_model_b(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    clicked = {(c.request_id, c.item_id) for c in clicks if c.request_id}
    auc = {}
    for model in ("model-a", "model-b"):
        mine = [p for p in preds if p.model_id == model]
        scores = np.array([p.score for p in mine])
        labels = np.array([(p.request_id, p.item_id) in clicked for p in mine])
        auc[model] = _auc(scores, labels)
    assert auc["model-a"] > 0.65, auc
    assert auc["model-a"] > auc["model-b"] + 0.03, auc


# --- malformed records -----------------------------------------------------------


def test_malformed_fraction_and_tags(dirty: list[GeneratedRecord]) -> None:
    bad = [r for r in dirty if r.malformed is not None]
    assert abs(len(bad) / len(dirty) - 0.05) < 0.005
    topics = Counter(r.topic for r in bad)
    assert topics["predictions"] > 0 and topics["clicks"] > 0
    for topic, kinds in MALFORMED_KINDS.items():
        seen = {r.malformed for r in bad if r.topic == topic}
        if topic == "predictions":
            assert seen == set(kinds)
        assert seen <= set(kinds)
    assert {r.key is None for r in bad} == {True, False}
    assert all(r.ts is None for r in bad)


def test_every_malformed_record_fails_to_decode_and_every_valid_one_decodes(
    dirty: list[GeneratedRecord],
) -> None:
    for record in dirty:
        if record.malformed is None:
            _decode(record)
        else:
            with pytest.raises(ContractError):
                _decode(record)
        assert b"\n" not in record.value


def test_no_malformed_records_by_default(records: list[GeneratedRecord]) -> None:
    assert not any(r.malformed for r in records)


# --- files -----------------------------------------------------------------------


def test_write_and_read_jsonl_round_trip(dirty: list[GeneratedRecord], tmp_path: Path) -> None:
    counts = write_jsonl(dirty, tmp_path / "out")
    for topic in ("predictions", "clicks"):
        expected = [r.value for r in dirty if r.topic == topic]
        assert counts[topic] == len(expected)
        assert list(read_jsonl(tmp_path / "out" / f"{topic}.jsonl")) == expected


def test_write_jsonl_rejects_newlines_and_unknown_topics(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="newline"):
        write_jsonl([GeneratedRecord("clicks", None, b"a\nb", None, "not_json")], tmp_path)
    with pytest.raises(ValueError, match="unknown topic"):
        write_jsonl([GeneratedRecord("labels", None, b"{}", None, None)], tmp_path)


# --- config and speed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "users"),
        ({"items": -1}, "items"),
        ({"predictions": -5}, "predictions"),
        ({"seed": -1}, "seed"),
        ({"models": ()}, "models"),
        ({"models": ("a", "a")}, "distinct"),
        ({"models": ("a", "")}, "model ids"),
        ({"model_noise": (0.1,)}, "one value per model"),
        ({"start_ts_ms": 1_767_225_600}, "start_ts_ms"),
        ({"zipf_s": 0.0}, "zipf_s"),
        ({"max_disorder_ms": -1}, "max_disorder_ms"),
        ({"malformed_fraction": 0.9}, "malformed_fraction"),
        ({"slate_min": 5, "slate_max": 2}, "slate_min"),
        ({"base_ctr": 1.0}, "base_ctr"),
        ({"attribution": (0.5, 0.5, 0.5)}, "attribution"),
        ({"requests_per_session_mean": 0.5}, "requests_per_session_mean"),
    ],
)
def test_config_validation_says_what_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GeneratorConfig(**kwargs)  # type: ignore[arg-type]


def test_small_and_odd_configs() -> None:
    assert list(generate(GeneratorConfig(predictions=0))) == []
    tiny = list(generate(GeneratorConfig(predictions=50, users=1, items=2, models=("only",))))
    assert sum(r.topic == "predictions" for r in tiny) == 50
    assert all(_decode(r).user_id == "user-00000" for r in tiny)


def test_100k_predictions_generate_in_a_few_seconds() -> None:
    started = time.perf_counter()
    n = sum(1 for _ in generate(GeneratorConfig(predictions=100_000)))
    assert n > 100_000
    assert time.perf_counter() - started < 10


# --- routing weights -------------------------------------------------------------


def _predictions(records: list[GeneratedRecord]) -> list[Prediction]:
    return [decode_prediction(r.value) for r in records if r.topic == "predictions"
            and r.malformed is None]


def _request_models(preds: list[Prediction]) -> dict[str, str]:
    """The model that served each request (served predictions only)."""
    out: dict[str, str] = {}
    for p in preds:
        if p.served is None:
            assert out.setdefault(p.request_id, p.model_id) == p.model_id
    return out


def _assert_shares(counts: Counter[str], weights: Mapping[str, float]) -> None:
    """Each model's request count is within 4.5 binomial standard deviations of n * w."""
    n = sum(counts.values())
    assert n > 500
    for model, w in weights.items():
        tolerance = 4.5 * math.sqrt(n * w * (1 - w))
        assert abs(counts[model] - n * w) <= tolerance, (model, counts, weights)
    assert set(counts) <= {m for m, w in weights.items() if w > 0}


def test_default_routing_is_uniform_and_explicit_uniform_weights_change_nothing() -> None:
    default = list(generate(GeneratorConfig(predictions=3_000)))
    uniform = list(generate(GeneratorConfig(predictions=3_000,
                                            weights={"model-a": 2, "model-b": 2})))
    assert default == uniform
    _assert_shares(Counter(_request_models(_predictions(default)).values()),
                   {"model-a": 0.5, "model-b": 0.5})


def test_weights_are_normalized_over_every_model_and_read_only() -> None:
    config = GeneratorConfig(models=("a", "b", "c"), weights={"c": 3, "a": 1},
                             shadow_models=("s",))
    assert dict(config.weights or {}) == {"a": 0.25, "b": 0.0, "c": 0.75}
    assert list(config.weights or {}) == ["a", "b", "c"]
    assert config.routing_weights() == {"a": 0.25, "b": 0.0, "c": 0.75}
    with pytest.raises(TypeError):
        config.weights["a"] = 1.0  # type: ignore[index]
    # a shadow model's weight (a routing record may carry one) is ignored
    assert dict(GeneratorConfig(models=("a", "b", "c"), shadow_models=("s",),
                                weights={"a": 1, "c": 3, "s": 5}).weights or {}) == dict(
        config.weights or {})


@pytest.mark.parametrize(("models", "weights"), [
    (("model-a", "model-b"), {"model-a": 0.8, "model-b": 0.2}),
    (("model-a", "model-b"), {"model-a": 1.0}),
    (("a", "b", "c"), {"a": 1, "b": 0, "c": 3}),
    (("a", "b", "c", "d"), {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.4}),
])
def test_each_request_is_served_by_a_model_drawn_by_the_weights(
    models: tuple[str, ...], weights: dict[str, float],
) -> None:
    config = GeneratorConfig(predictions=20_000, models=models, weights=weights)
    served = _request_models(_predictions(list(generate(config))))
    total = sum(weights.values())
    expected = {m: weights.get(m, 0.0) / total for m in models}
    _assert_shares(Counter(served.values()), expected)


def test_changing_weights_between_steps_changes_the_share_after_the_change() -> None:
    chunk = 8_000
    schedule: list[dict[str, float] | None] = [
        None, {"model-a": 0.9, "model-b": 0.1}, {"model-a": 0.1, "model-b": 0.9}]

    def run(schedule: list[dict[str, float] | None]) -> list[list[GeneratedRecord]]:
        sim = Simulation(GeneratorConfig(malformed_fraction=0.01))
        steps = []
        for weights in schedule:
            if weights is not None:
                sim.set_weights(weights)
            steps.append(sim.step(chunk))
        return [*steps, sim.flush()]

    steps = run(schedule)
    preds = _predictions([r for s in steps for r in s])
    assert len(preds) == 3 * chunk
    assert len({p.prediction_id for p in preds}) == len(preds)
    # the j-th served prediction of the run is pred-<seed>-<j>: step k made j // chunk == k
    by_step: list[dict[str, str]] = [{}, {}, {}]
    for p in preds:
        by_step[int(p.prediction_id.split("-")[2]) // chunk][p.request_id] = p.model_id
    _assert_shares(Counter(by_step[0].values()), {"model-a": 0.5, "model-b": 0.5})
    _assert_shares(Counter(by_step[1].values()), {"model-a": 0.9, "model-b": 0.1})
    _assert_shares(Counter(by_step[2].values()), {"model-a": 0.1, "model-b": 0.9})
    # deterministic for a seed and a schedule; a later change leaves earlier steps alone
    assert run(schedule) == steps
    other = run([None, {"model-a": 0.1, "model-b": 0.9}, None])
    assert other[0] == steps[0]
    assert other[1] != steps[1]


def test_stream_polls_the_weights_source_before_every_chunk() -> None:
    chunk = 3_000
    answers: list[dict[str, float] | None] = [None, {"model-a": 1.0}, None, {"model-b": 5}]
    polls: list[int] = []

    def source() -> dict[str, float] | None:
        polls.append(len(polls))
        return answers[len(polls) - 1]

    config = GeneratorConfig(predictions=4 * chunk)
    records = list(stream(config, source, chunk_predictions=chunk))
    assert polls == [0, 1, 2, 3]
    preds = _predictions(records)
    assert len(preds) == 4 * chunk
    # a request's first prediction pred-<seed>-<j> was made by chunk j // chunk
    by_chunk: list[Counter[str]] = [Counter() for _ in range(4)]
    seen: set[str] = set()
    for p in preds:
        if p.request_id not in seen:
            seen.add(p.request_id)
            by_chunk[int(p.prediction_id.split("-")[2]) // chunk][p.model_id] += 1
    _assert_shares(by_chunk[0], {"model-a": 0.5, "model-b": 0.5})
    assert set(by_chunk[1]) == set(by_chunk[2]) == {"model-a"}  # None keeps the weights
    assert set(by_chunk[3]) == {"model-b"}
    replayed = list(stream(config, iter(answers).__next__, chunk_predictions=chunk))
    assert replayed == records


def test_stream_in_one_chunk_equals_generate() -> None:
    config = GeneratorConfig(predictions=4_000, malformed_fraction=0.02,
                             shadow_models=("shadow",))
    assert list(stream(config, chunk_predictions=4_000)) == list(generate(config))
    assert list(stream(config, chunk_predictions=10_000)) == list(generate(config))


@pytest.mark.parametrize(("chunk", "max_disorder_ms"), [(250, 0), (1_000, 2_000), (7_000, 500)])
def test_chunks_keep_delivery_order_ids_and_clicks_across_their_boundaries(
    chunk: int, max_disorder_ms: int,
) -> None:
    config = GeneratorConfig(predictions=20_000, max_disorder_ms=max_disorder_ms,
                             malformed_fraction=0.01)
    records = list(stream(config, chunk_predictions=chunk))
    ts = np.asarray([r.ts for r in records if r.ts is not None])
    lateness = np.maximum.accumulate(ts) - ts
    assert lateness.max() < max(max_disorder_ms, 1)
    preds = _predictions(records)
    clicks = [decode_click(r.value) for r in records if r.topic == "clicks" and r.valid]
    assert len(preds) == 20_000 == len({p.prediction_id for p in preds})
    assert len({c.click_id for c in clicks}) == len(clicks) > 1_000
    by_id = {p.prediction_id: p for p in preds}
    for c in clicks:
        if c.prediction_id is not None:
            assert by_id[c.prediction_id].item_id == c.item_id
    bad = sum(not r.valid for r in records)
    assert abs(bad / len(records) - 0.01) < 0.003


def test_forever_stream_keeps_going() -> None:
    records = stream(GeneratorConfig(predictions=10), chunk_predictions=100, forever=True)
    first = [next(records) for _ in range(5_000)]
    assert sum(r.topic == "predictions" for r in first) > 10


# --- shadow models ---------------------------------------------------------------


@pytest.mark.parametrize("shadow_models", [("shadow",), ("s1", "s2", "s3")])
def test_shadow_predictions_mirror_every_served_one(shadow_models: tuple[str, ...]) -> None:
    config = GeneratorConfig(predictions=5_000, shadow_models=shadow_models)
    records = list(generate(config))
    preds = _predictions(records)
    served = [p for p in preds if p.served is None]
    shadows = [p for p in preds if p.served is not None]
    assert len(served) == 5_000
    assert len(shadows) == len(shadow_models) * len(served)
    assert {p.served for p in shadows} == {False}
    assert {p.model_id for p in served} == {"model-a", "model-b"}
    assert len({p.prediction_id for p in preds}) == len(preds)
    by_served: dict[tuple[str, str], list[Prediction]] = defaultdict(list)
    for p in shadows:
        assert p.propensity is None
        assert 0 <= p.score <= 1
        by_served[(p.request_id, p.item_id)].append(p)
    for p in served:
        mine = by_served.pop((p.request_id, p.item_id))
        assert [s.model_id for s in mine] == list(shadow_models)
        for s in mine:
            assert (s.user_id, s.ts, s.position, s.features) == (
                p.user_id, p.ts, p.position, p.features)
    assert not by_served
    # delivered right after their served prediction, with its key and event time
    for i, record in enumerate(records):
        if record.topic == "predictions" and b'"served":false' not in record.value:
            following = records[i + 1:i + 1 + len(shadow_models)]
            assert all(b'"served":false' in r.value and r.key == record.key
                       and r.ts == record.ts for r in following)


@pytest.mark.parametrize("malformed_fraction", [0.0, 0.02])
def test_shadows_never_change_served_predictions_or_clicks(malformed_fraction: float) -> None:
    plain = list(generate(GeneratorConfig(predictions=8_000,
                                          malformed_fraction=malformed_fraction)))
    with_shadows = list(generate(GeneratorConfig(
        predictions=8_000, malformed_fraction=malformed_fraction,
        shadow_models=("s1", "s2"), shadow_noise=(0.0, 3.0))))
    assert [r for r in with_shadows if b'"served":false' not in r.value] == plain


def test_shadow_noise_sets_the_quality_of_shadow_scores() -> None:
    # without position decay and without noise, a shadow's score is the true click
    # probability of the shown item: the expected number of clicks
    config = GeneratorConfig(predictions=30_000, position_decay=0.0,
                             shadow_models=("oracle", "noisy"), shadow_noise=(0.0, 6.0))
    records = list(generate(config))
    preds = _predictions(records)
    n_clicks = sum(r.topic == "clicks" for r in records)
    oracle = np.asarray([p.score for p in preds if p.model_id == "oracle"])
    expected, sd = oracle.sum(), math.sqrt(float((oracle * (1 - oracle)).sum()))
    assert abs(n_clicks - expected) < 4 * sd, (n_clicks, expected, sd)
    clicked = {(c.request_id, c.item_id) for c in (decode_click(r.value) for r in records
                                                   if r.topic == "clicks") if c.request_id}
    auc = {}
    for model in ("oracle", "model-a", "model-b", "noisy"):
        mine = [p for p in preds if p.model_id == model]
        auc[model] = _auc(np.asarray([p.score for p in mine]),
                          np.asarray([(p.request_id, p.item_id) in clicked for p in mine]))
    assert auc["oracle"] > auc["model-a"] > auc["model-b"] > auc["noisy"], auc
    assert auc["noisy"] < 0.62, auc


# --- drift -----------------------------------------------------------------------


def _median_ts(config: GeneratorConfig) -> int:
    ts = sorted(p.ts for p in _predictions(list(generate(config))))
    return ts[len(ts) // 2]


@pytest.mark.parametrize(("features", "k"), [
    (("user_ctr_prior",), 2.0),
    (("item_popularity",), -1.0),
    (("user_ctr_prior", "item_popularity"), 0.5),
])
def test_drift_shifts_logged_features_by_k_standard_deviations_from_drift_at(
    features: tuple[str, ...], k: float,
) -> None:
    base = GeneratorConfig(predictions=20_000, users=50, items=40)
    drift_at = _median_ts(base)
    config = GeneratorConfig(predictions=20_000, users=50, items=40, drift_at_ms=drift_at,
                             drift_feature_shift=k, drift_features=features)
    preds = [p for p in _predictions(list(generate(config))) if p.features is not None]
    entity = {"user_ctr_prior": "user_id", "item_popularity": "item_id"}
    decimals = {"user_ctr_prior": 4, "item_popularity": 6}
    sd = Simulation(config).feature_sd
    for name in LOGGED_FEATURES:
        before: dict[str, set[float]] = defaultdict(set)
        after: dict[str, set[float]] = defaultdict(set)
        for p in preds:
            assert p.features is not None
            (after if p.ts >= drift_at else before)[getattr(p, entity[name])].add(
                p.features[name])
        # before drift_at one value per entity; every entity seen, so the population sd
        assert all(len(v) == 1 for v in [*before.values(), *after.values()])
        population = [next(iter(v)) for v in before.values()]
        assert len(population) == {"user_id": 50, "item_id": 40}[entity[name]]
        assert sd[name] == pytest.approx(statistics.pstdev(population),
                                         abs=10 ** -decimals[name])
        shift = k * statistics.pstdev(population) if name in features else 0.0
        tolerance = 1.01 * 10 ** -decimals[name] + abs(k) * 10 ** -decimals[name]
        common = before.keys() & after.keys()
        assert len(common) > 0.8 * len(population)
        for key in common:
            assert next(iter(after[key])) - next(iter(before[key])) == pytest.approx(
                shift, abs=tolerance), (name, key)
        mean_before = statistics.fmean(next(iter(before[key])) for key in common)
        mean_after = statistics.fmean(next(iter(after[key])) for key in common)
        assert mean_after - mean_before == pytest.approx(shift, abs=tolerance)


def _outcomes(records: list[GeneratedRecord]) -> dict[str, tuple[Prediction, bool]]:
    """Every valid prediction and whether its impression was clicked (a shadow takes its
    served prediction's outcome; needs attribution (1, 0, 0))."""
    clicked = {decode_click(r.value).prediction_id for r in records if r.topic == "clicks"}
    assert None not in clicked
    preds = _predictions(records)
    served = {(p.request_id, p.item_id): p.prediction_id in clicked for p in preds
              if p.served is None}
    return {p.prediction_id: (p, served[(p.request_id, p.item_id)]) for p in preds}


def _log_loss(scores: np.ndarray, labels: np.ndarray) -> float:
    s = np.clip(scores, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(labels, np.log(s), np.log(1 - s))))


def test_drift_noise_worsens_every_model_after_drift_at_and_nothing_before() -> None:
    common = {"predictions": 30_000, "attribution": (1.0, 0.0, 0.0),
              "shadow_models": ("shadow",), "shadow_noise": (0.5,)}
    drift_at = _median_ts(GeneratorConfig(**common))  # type: ignore[arg-type]
    control = _outcomes(list(generate(GeneratorConfig(**common))))  # type: ignore[arg-type]
    drifted = _outcomes(list(generate(GeneratorConfig(
        **common, drift_at_ms=drift_at, drift_noise=2.0))))  # type: ignore[arg-type]
    before = {i for i, (p, _) in control.items() if p.ts < drift_at}
    assert before == {i for i, (p, _) in drifted.items() if p.ts < drift_at}
    assert all(control[i] == drifted[i] for i in before), "nothing changes before drift_at"
    for model in ("model-a", "model-b", "shadow"):
        metrics = {}
        for name, run in (("control", control), ("drifted", drifted)):
            after = [(p.score, y) for p, y in run.values() if p.model_id == model
                     and p.ts >= drift_at]
            scores, labels = np.asarray([s for s, _ in after]), np.asarray([y for _, y in after])
            metrics[name] = (_log_loss(scores, labels), _auc(scores, labels))
        assert metrics["drifted"][0] > metrics["control"][0] + 0.15, (model, metrics)
        assert metrics["drifted"][1] < metrics["control"][1] - 0.03, (model, metrics)


def test_drift_needs_nothing_but_its_config_and_is_deterministic() -> None:
    config = GeneratorConfig(predictions=5_000, drift_at_ms=START_MS + 30 * MINUTE_MS,
                             drift_feature_shift=1.5, drift_noise=1.0,
                             shadow_models=("s",))
    assert list(generate(config)) == list(generate(config))
    assert list(generate(config)) != list(generate(GeneratorConfig(predictions=5_000,
                                                                   shadow_models=("s",))))


# --- the better model ------------------------------------------------------------


def test_model_a_serves_a_clearly_higher_ctr_and_wins_thompson_routing_quickly(
    decoded: tuple[list[Prediction], list[Click]],
) -> None:
    preds, clicks = decoded
    clicked = {(c.request_id, c.item_id) for c in clicks if c.request_id}
    impressions: Counter[str] = Counter()
    positives: Counter[str] = Counter()
    for p in preds:
        impressions[p.model_id] += 1
        positives[p.model_id] += (p.request_id, p.item_id) in clicked
    ctr = {m: positives[m] / impressions[m] for m in impressions}
    assert ctr["model-a"] > 1.2 * ctr["model-b"], ctr
    # Thompson sampling over the first 3,000 labels (in event time): Beta(1 + clicks,
    # 1 + non-clicks) posteriors, P(model-a has the higher CTR) by 20,000 seeded draws
    first = sorted(preds, key=lambda p: p.ts)[:3_000]
    rng = np.random.default_rng(0)
    draws = {}
    for model in ("model-a", "model-b"):
        mine = [(p.request_id, p.item_id) in clicked for p in first if p.model_id == model]
        draws[model] = rng.beta(1 + sum(mine), 1 + len(mine) - sum(mine), 20_000)
    assert float(np.mean(draws["model-a"] > draws["model-b"])) > 0.95


# --- validation of the new config ------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": {"model-c": 1}}, "weights: unknown model 'model-c'"),
        ({"weights": {"model-a": -1, "model-b": 2}}, "weights: the weight of 'model-a'"),
        ({"weights": {"model-a": math.nan}}, "weights: the weight of 'model-a'"),
        ({"weights": {"model-a": True}}, "weights: the weight of 'model-a'"),
        ({"weights": {"model-a": "1"}}, "weights: the weight of 'model-a'"),
        ({"weights": {"model-a": 0, "model-b": 0}}, "weights must give the served models"),
        ({"weights": {}}, "weights must give the served models"),
        ({"weights": {"s": 1}, "shadow_models": ("s",)}, "weights must give the served models"),
        ({"weights": [0.5, 0.5]}, "weights must be a mapping"),
        ({"shadow_models": ("model-a",)}, "shadow_models must not be served models"),
        ({"shadow_models": ("s", "s")}, "shadow_models must be distinct"),
        ({"shadow_models": ("s", "")}, "shadow_models: model ids"),
        ({"shadow_models": ["s"]}, "shadow_models must be a tuple"),
        ({"shadow_models": ("s",), "shadow_noise": (0.1, 0.2)}, "shadow_noise needs one value"),
        ({"shadow_models": ("s",), "shadow_noise": (-1.0,)}, "shadow_noise values"),
        ({"shadow_models": ("s",), "shadow_noise": (math.inf,)}, "shadow_noise values"),
        ({"drift_at_ms": START_MS - 1}, "drift_at_ms"),
        ({"drift_at_ms": float(START_MS)}, "drift_at_ms"),
        ({"drift_feature_shift": 1.0}, "need drift_at_ms"),
        ({"drift_noise": 1.0}, "need drift_at_ms"),
        ({"drift_at_ms": START_MS, "drift_noise": -1.0}, "drift_noise"),
        ({"drift_at_ms": START_MS, "drift_feature_shift": math.inf}, "drift_feature_shift"),
        ({"drift_features": ("clicks_1h",)}, "drift_features"),
        ({"drift_features": ("user_ctr_prior", "user_ctr_prior")}, "drift_features"),
        ({"drift_features": "user_ctr_prior"}, "drift_features"),
    ],
)
def test_new_config_fields_are_validated_by_name(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        GeneratorConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("weights", "message"), [
    ({"model-x": 1.0}, "weights: unknown model 'model-x'"),
    ({"model-a": -0.5}, "weights: the weight of 'model-a'"),
    ({"model-a": 0.0}, "weights must give the served models"),
])
def test_set_weights_is_validated_and_keeps_the_old_weights(
    weights: dict[str, float], message: str,
) -> None:
    sim = Simulation(GeneratorConfig(weights={"model-a": 3, "model-b": 1}))
    with pytest.raises(ValueError, match=re.escape(message)):
        sim.set_weights(weights)
    assert sim.weights == {"model-a": 0.75, "model-b": 0.25}


def test_stream_and_step_validate_their_sizes() -> None:
    with pytest.raises(ValueError, match="chunk_predictions"):
        stream(GeneratorConfig(), chunk_predictions=0)
    with pytest.raises(ValueError, match="predictions must be an integer >= 0"):
        Simulation(GeneratorConfig()).step(-1)
    bad = iter([{"nobody": 1.0}])
    with pytest.raises(ValueError, match="unknown model 'nobody'"):
        list(stream(GeneratorConfig(predictions=10), bad.__next__))


# --- producer (no broker needed) -------------------------------------------------


def test_producer_config_is_idempotent_and_overridable() -> None:
    config = producer_config("kafka:9092", {"linger.ms": "50"})
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["linger.ms"] == "50"


def test_produce_nothing_needs_no_broker() -> None:
    assert produce([], "127.0.0.1:1") == 0


def test_produce_fails_clearly_without_a_broker() -> None:
    records = generate(GeneratorConfig(predictions=5))
    with pytest.raises(ProduceError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        produce(records, "127.0.0.1:1", connect_timeout_s=0.5)


def test_produce_rejects_a_bad_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        produce([], "127.0.0.1:1", rate=0)


def test_produce_stream_stops_before_generating_when_told() -> None:
    polls: list[int] = []

    def source() -> None:
        polls.append(1)

    assert produce_stream(GeneratorConfig(), "127.0.0.1:1", weights_source=source,
                          stop=lambda: True) == 0
    assert polls == []


def test_produce_stream_checks_its_arguments_before_connecting() -> None:
    with pytest.raises(ValueError, match="chunk_predictions"):
        produce_stream(GeneratorConfig(), "127.0.0.1:1", chunk_predictions=0)
    with pytest.raises(ValueError, match="rate"):
        produce_stream(GeneratorConfig(), "127.0.0.1:1", rate=-1)


def test_produce_stream_fails_clearly_without_a_broker() -> None:
    polls: list[int] = []

    def source() -> dict[str, float]:
        polls.append(1)
        return {"model-a": 1.0}

    with pytest.raises(ProduceError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        produce_stream(GeneratorConfig(predictions=5), "127.0.0.1:1", weights_source=source,
                       connect_timeout_s=0.5)
    assert polls == [1]  # the first chunk was generated (and routed) before connecting


def test_traffic_past_the_valid_time_range_is_refused() -> None:
    config = GeneratorConfig(users=1, predictions=1_000, session_gap_ms_mean=10**12)
    with pytest.raises(ValueError, match="past the year 2100"):
        list(generate(config))


@pytest.mark.integration
def test_produce_delivers_keys_values_and_event_times(kafka_bootstrap: str,
                                                      unique_prefix: str) -> None:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topics = {"predictions": unique_prefix + "predictions", "clicks": unique_prefix + "clicks"}
    records = list(generate(GeneratorConfig(predictions=2_000, malformed_fraction=0.05)))
    with pytest.raises(ProduceError, match="does not exist"):
        produce(records, kafka_bootstrap, topics=topics)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, 3, 1) for t in topics.values()]).values():
        future.result(timeout=30)
    progress: list[int] = []
    assert produce(records, kafka_bootstrap, topics=topics, on_progress=progress.append) == len(
        records)
    assert progress[-1] == len(records) and progress == sorted(progress)

    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": unique_prefix + "g",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(list(topics.values()))
    got: list[Message] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < len(records) and time.monotonic() < deadline:
            got += [m for m in consumer.consume(1_000, 1.0) if m.error() is None]
    finally:
        consumer.close()
    logical = {real: name for name, real in topics.items()}
    received = Counter((logical[str(m.topic())], m.key(), m.value()) for m in got)
    assert received == Counter((r.topic, r.key, r.value) for r in records)
    event_ts = {r.value: r.ts for r in records if r.ts is not None}
    stamped = [(m.timestamp()[1], event_ts[m.value() or b""]) for m in got
               if m.value() in event_ts]
    assert len(stamped) == len(event_ts)
    assert all(kafka_ts == ts for kafka_ts, ts in stamped)
    # per key and topic, the delivery order is kept
    first = [r.value for r in records if r.topic == "predictions" and r.key == records[0].key]
    assert [m.value() for m in got if str(m.topic()) == topics["predictions"]
            and m.key() == records[0].key] == first
