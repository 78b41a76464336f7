"""Synthetic ``predictions`` and ``clicks`` streams for tests, demos and benchmarks.

The generator is pure: it reads no clock and talks to no broker, and all randomness
comes from generators seeded with :attr:`GeneratorConfig.seed`, so one config always
gives byte-identical records. :mod:`freshet.producer` sends them to Kafka;
:func:`write_jsonl` writes them to files.

The simulated world:

* ``users`` users and ``items`` items. Item popularity follows a Zipf law
  (exponent ``zipf_s``); each user also has a taste vector, so the same item is
  more relevant to some users than to others.
* Users come in sessions: bursts of requests a few seconds apart, separated by idle
  gaps of about ``session_gap_ms_mean`` (shorter for more active users). A request
  scores a pool of candidate items with one of ``models`` and serves the top few
  (a slate) as predictions that share a ``request_id`` and carry their ``position``.
* Each item shown has a true click probability (user, item and taste terms, minus
  a position penalty). Model ``i`` scores it as that relevance plus Gaussian noise
  of ``model_noise[i]`` logits, so ``model-a`` ranks better than ``model-b``.
* Clicks are drawn from the true probability. Their delay is lognormal (median
  ``click_delay_median_ms``) with a long tail (``click_tail_fraction`` of clicks
  come about an hour later), and a few clicks are stamped slightly *before* their
  prediction (client clock skew). Clicks carry ``prediction_id`` and
  ``request_id``, only ``request_id``, or neither, in the ``attribution`` shares.
* Some requests log a ``propensity``; some predictions log the ``features`` the
  model saw ("log and wait").
* Optionally, ``malformed_fraction`` of all records are broken on purpose, each
  tagged with the kind of damage (see :data:`MALFORMED_KINDS`).

Records come out in delivery order: event-time order with bounded disorder, where
no record is delivered after one whose event time exceeds its own by
``max_disorder_ms`` or more.

>>> records = list(generate(GeneratorConfig(predictions=20, users=5, items=10)))
>>> sum(r.topic == "predictions" for r in records)
20
>>> records == list(generate(GeneratorConfig(predictions=20, users=5, items=10)))
True
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from events.contracts import MAX_ID_LEN, MAX_RECORD_BYTES, MAX_TS_MS, MIN_TS_MS

__all__ = [
    "MALFORMED_KINDS",
    "TOPICS",
    "GeneratedRecord",
    "GeneratorConfig",
    "generate",
    "read_jsonl",
    "write_jsonl",
]

#: The logical topics the generator writes, in the order :func:`write_jsonl` counts them.
TOPICS: tuple[str, str] = ("predictions", "clicks")

#: Every kind of damage a malformed record can carry, per topic.
MALFORMED_KINDS: dict[str, tuple[str, ...]] = {
    "predictions": (
        "not_json", "not_object", "missing_field", "bad_score", "bad_ts_type",
        "ts_out_of_range", "id_too_long", "empty_id", "bad_id_type", "bad_position",
        "bad_propensity", "bad_features", "too_large",
    ),
    "clicks": (
        "not_json", "not_object", "missing_field", "bad_ts_type", "ts_out_of_range",
        "id_too_long", "empty_id", "bad_id_type", "too_large",
    ),
}

_REQUIRED = {
    "predictions": ("prediction_id", "request_id", "user_id", "item_id", "model_id",
                    "score", "ts"),
    "clicks": ("user_id", "item_id", "ts"),
}
_ID_FIELDS = {
    "predictions": ("prediction_id", "request_id", "user_id", "item_id", "model_id"),
    "clicks": ("user_id", "item_id", "click_id"),
}
_TASTE_DIMS = 4
#: Room kept between the last request and the end of valid event time (late clicks).
_TAIL_ROOM_MS = 30 * 24 * 3_600_000


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to generate; validated on construction (a ``ValueError`` says what to fix).

    Durations are integer milliseconds; fractions are in ``[0, 1]``.

    >>> GeneratorConfig().models
    ('model-a', 'model-b')
    >>> GeneratorConfig(models=("a", "b", "c")).noise_for_models()
    (0.25, 1.5, 2.75)
    >>> GeneratorConfig(users=0)
    Traceback (most recent call last):
    ...
    ValueError: users must be an integer >= 1, got 0
    """

    #: Seed of every random draw (a non-negative integer).
    seed: int = 7
    #: Number of distinct users and items.
    users: int = 200
    items: int = 100
    #: Number of valid prediction records to generate (exact).
    predictions: int = 5_000
    #: Model ids; requests are spread evenly over them (an interleaved experiment).
    models: tuple[str, ...] = ("model-a", "model-b")
    #: Score noise of each model, in logits; ``None`` = 0.25, 1.5, 2.75, ...
    model_noise: tuple[float, ...] | None = None
    #: Event time of the start of the simulation (2026-01-01T00:00:00Z).
    start_ts_ms: int = 1_767_225_600_000
    #: Zipf exponent of item popularity.
    zipf_s: float = 1.1
    #: Strength of per-user taste (standard deviation of the user-item affinity, logits).
    taste_strength: float = 0.8
    #: Delivery disorder bound; 0 delivers in exact event-time order.
    max_disorder_ms: int = 2_000
    #: Share of all delivered records that are malformed on purpose.
    malformed_fraction: float = 0.0
    #: Slate size range (inclusive), capped by ``items``.
    slate_min: int = 3
    slate_max: int = 8
    #: Mean number of requests per session (at least 1).
    requests_per_session_mean: float = 4.0
    #: Mean gap between requests of a session.
    request_gap_ms_mean: int = 20_000
    #: Mean idle gap between a user's sessions (an average user).
    session_gap_ms_mean: int = 30 * 60_000
    #: Click-through rate of an average candidate item (sets the base logit); served
    #: items are the best-scored candidates, so the realised CTR comes out higher.
    base_ctr: float = 0.08
    #: Click-probability penalty per slate position, in logits.
    position_decay: float = 0.25
    #: Click delay: lognormal with this median and log-space sigma ...
    click_delay_median_ms: int = 8_000
    click_delay_sigma: float = 1.2
    #: ... except this share of clicks, which come back much later (median below).
    click_tail_fraction: float = 0.04
    click_tail_median_ms: int = 60 * 60_000
    #: Share of clicks stamped before their prediction, by up to ``max_click_skew_ms``.
    click_skew_fraction: float = 0.02
    max_click_skew_ms: int = 2_000
    #: Shares of clicks with (prediction_id and request_id, request_id only, neither).
    attribution: tuple[float, float, float] = (0.5, 0.3, 0.2)
    #: Share of requests that log a propensity, and of predictions that log features.
    propensity_fraction: float = 0.3
    features_fraction: float = 0.5

    def __post_init__(self) -> None:
        for name in ("seed", "predictions", "max_disorder_ms", "max_click_skew_ms"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 0, f"{name} must be an integer >= 0, got {value!r}")
        for name in ("users", "items", "slate_min", "slate_max", "request_gap_ms_mean",
                     "session_gap_ms_mean", "click_delay_median_ms", "click_tail_median_ms"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, f"{name} must be an integer >= 1, got {value!r}")
        _check(self.slate_min <= self.slate_max,
               f"slate_min ({self.slate_min}) must be <= slate_max ({self.slate_max})")
        lo, hi = MIN_TS_MS + self.max_click_skew_ms, MAX_TS_MS - _TAIL_ROOM_MS
        _check(_is_int(self.start_ts_ms) and lo <= self.start_ts_ms < hi,
               f"start_ts_ms must be epoch milliseconds in [{lo}, {hi}), got {self.start_ts_ms!r}")
        _check(isinstance(self.models, tuple) and len(self.models) >= 1,
               f"models must be a non-empty tuple of model ids, got {self.models!r}")
        for model in self.models:
            _check(isinstance(model, str) and 0 < len(model) <= MAX_ID_LEN,
                   f"model ids must be non-empty strings of at most {MAX_ID_LEN} characters,"
                   f" got {model!r}")
        _check(len(set(self.models)) == len(self.models),
               f"models must be distinct, got {self.models!r}")
        if self.model_noise is not None:
            _check(len(self.model_noise) == len(self.models),
                   f"model_noise needs one value per model ({len(self.models)}),"
                   f" got {len(self.model_noise)}")
            for noise in self.model_noise:
                _check(math.isfinite(noise) and noise >= 0,
                       f"model_noise values must be finite and >= 0, got {noise!r}")
        for name in ("zipf_s", "click_delay_sigma"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, f"{name} must be > 0, got {value!r}")
        for name in ("taste_strength", "position_decay"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, f"{name} must be >= 0, got {value!r}")
        _check(math.isfinite(self.requests_per_session_mean)
               and self.requests_per_session_mean >= 1,
               f"requests_per_session_mean must be >= 1, got {self.requests_per_session_mean!r}")
        _check(0 < self.base_ctr < 1, f"base_ctr must be in (0, 1), got {self.base_ctr!r}")
        _check(0 <= self.malformed_fraction <= 0.5,
               f"malformed_fraction must be in [0, 0.5], got {self.malformed_fraction!r}")
        for name in ("click_tail_fraction", "click_skew_fraction", "propensity_fraction",
                     "features_fraction"):
            value = getattr(self, name)
            _check(0 <= value <= 1, f"{name} must be in [0, 1], got {value!r}")
        _check(self.click_skew_fraction == 0 or self.max_click_skew_ms >= 1,
               "max_click_skew_ms must be >= 1 when click_skew_fraction > 0")
        _check(len(self.attribution) == 3 and all(0 <= a <= 1 for a in self.attribution)
               and abs(sum(self.attribution) - 1) < 1e-9,
               "attribution must be three shares in [0, 1] summing to 1 (prediction_id,"
               f" request_id only, neither), got {self.attribution!r}")

    def noise_for_models(self) -> tuple[float, ...]:
        """Score noise (logits) of each model, defaulting to 0.25, 1.5, 2.75, ...

        >>> GeneratorConfig(model_noise=(0.1, 0.2)).noise_for_models()
        (0.1, 0.2)
        """
        if self.model_noise is not None:
            return tuple(float(n) for n in self.model_noise)
        return tuple(0.25 + 1.25 * i for i in range(len(self.models)))


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One record to deliver: the exact value bytes, its key and its event time.

    >>> r = GeneratedRecord("clicks", b"u1", b'{"user_id":"u1"}', None, "missing_field")
    >>> r.valid
    False
    """

    #: Logical topic: ``"predictions"`` or ``"clicks"``.
    topic: str
    #: Record key: the user id in UTF-8 (malformed records may have none).
    key: bytes | None
    #: Exactly the bytes to produce.
    value: bytes
    #: Event time in epoch milliseconds, ``None`` for malformed records.
    ts: int | None
    #: ``None`` for a valid record, else the kind of damage (see :data:`MALFORMED_KINDS`).
    malformed: str | None = field(default=None)

    @property
    def valid(self) -> bool:
        """True when the record honours its topic's contract."""
        return self.malformed is None


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return out


@dataclass(slots=True)
class _Requests:
    users: list[int]
    ts: list[int]
    sizes: list[int]
    models: list[int]


def _sessions(config: GeneratorConfig, activity: list[float], prng: random.Random) -> _Requests:
    """Lay out requests user by user: sessions of requests, separated by idle gaps."""
    out = _Requests([], [], [], [])
    heap = [
        (config.start_ts_ms + int(prng.expovariate(a / config.session_gap_ms_mean)), u)
        for u, a in enumerate(activity)
    ]
    heapq.heapify(heap)
    stay = 1.0 - 1.0 / config.requests_per_session_mean
    slate_max = min(config.slate_max, config.items)
    slate_min = min(config.slate_min, slate_max)
    n_models = len(config.models)
    total = 0
    while total < config.predictions:
        t, user = heapq.heappop(heap)
        first = True
        while total < config.predictions and (first or prng.random() < stay):
            if not first:
                t += 1_000 + int(prng.expovariate(1.0 / config.request_gap_ms_mean))
            first = False
            size = min(prng.randint(slate_min, slate_max), config.predictions - total)
            out.users.append(user)
            out.ts.append(t)
            out.sizes.append(size)
            out.models.append(prng.randrange(n_models))
            total += size
        gap = int(prng.expovariate(activity[user] / config.session_gap_ms_mean))
        heapq.heappush(heap, (t + 60_000 + gap, user))
    return out


def _candidates(
    n_requests: int, pool: int, cdf: npt.NDArray[np.float64], popularity: npt.NDArray[np.float64],
    rng: np.random.Generator, chunk: int = 8_192,
) -> npt.NDArray[np.int64]:
    """``pool`` distinct popularity-weighted candidate items per request."""
    n_items = len(cdf)
    out = np.empty((n_requests, pool), dtype=np.int64)
    for lo in range(0, n_requests, chunk):
        hi = min(lo + chunk, n_requests)
        draws = np.searchsorted(cdf, rng.random((hi - lo, 4 * pool)), side="right")
        for r, row in enumerate(np.minimum(draws, n_items - 1).tolist(), start=lo):
            distinct = list(dict.fromkeys(row))
            if len(distinct) >= pool:
                out[r] = distinct[:pool]
            else:  # rare: too few distinct items drawn; sample without replacement
                out[r] = rng.choice(n_items, size=pool, replace=False, p=popularity)
    return out


def _dumps(obj: object) -> bytes:
    # orjson hands back bytes with ~4 KiB of spare capacity; a right-sized copy keeps
    # a million records in a few hundred MB instead of several GB.
    return bytes(memoryview(orjson.dumps(obj)))


def _corrupt(
    topic: str, template: dict[str, Any], kind: str, bad_id: str, prng: random.Random
) -> bytes:
    """Break ``template`` (a valid record, given a fresh id) in the way ``kind`` says."""
    obj = dict(template)
    obj["prediction_id" if topic == "predictions" else "click_id"] = bad_id
    if kind == "not_json":
        if prng.random() < 0.5:
            raw = _dumps(obj)
            return raw[: prng.randint(1, len(raw) - 1)]  # truncated: never valid JSON
        if prng.random() < 0.5:
            return b"\xff\xfe" + _dumps(obj)[1:-1]  # not UTF-8
        return f"user_id={obj['user_id']} item_id={obj['item_id']} ts={obj['ts']}".encode()
    if kind == "not_object":
        return prng.choice([_dumps([obj]), b"null", b"42", _dumps(str(obj.get("user_id")))])
    if kind == "missing_field":
        name = prng.choice(_REQUIRED[topic])
        if prng.random() < 0.5:
            del obj[name]
        else:
            obj[name] = None
    elif kind == "bad_score":
        obj["score"] = prng.choice([1.5, -0.25, 2, "0.7", True])
    elif kind == "bad_ts_type":
        ts = obj["ts"]
        obj["ts"] = prng.choice([str(ts), "2026-01-01T00:00:00Z", float(ts) + 0.5, True])
    elif kind == "ts_out_of_range":
        ts = obj["ts"]
        obj["ts"] = prng.choice([ts // 1000, ts * 1000, -1, 0])
    elif kind == "id_too_long":
        name = prng.choice(_ID_FIELDS[topic][:4] if topic == "predictions" else ("user_id",
                                                                                  "item_id"))
        obj[name] = str(obj[name]) + "-" + "x" * MAX_ID_LEN
    elif kind == "empty_id":
        obj[prng.choice(_ID_FIELDS[topic])] = ""
    elif kind == "bad_id_type":
        obj[prng.choice(_ID_FIELDS[topic])] = prng.choice([12345, ["u"], {"id": "u"}])
    elif kind == "bad_position":
        obj["position"] = prng.choice([-1, "1", 1.5])
    elif kind == "bad_propensity":
        obj["propensity"] = prng.choice([1.5, -0.1, "high"])
    elif kind == "bad_features":
        obj["features"] = prng.choice([[0.1, 0.2], "user_ctr_prior=0.05", 3])
    elif kind == "too_large":
        obj["debug_blob"] = "x" * (MAX_RECORD_BYTES + 1)
    else:  # pragma: no cover - MALFORMED_KINDS and this function move together
        raise AssertionError(f"unknown malformed kind {kind!r}")
    return _dumps(obj)


def generate(config: GeneratorConfig) -> Iterator[GeneratedRecord]:
    """Generate the records ``config`` describes, in delivery order.

    Exactly ``config.predictions`` valid predictions, the clicks they draw, and the
    malformed records; everything is computed up front (about 10 s and 600 MB per
    million predictions), then yielded.

    >>> records = list(generate(GeneratorConfig(predictions=200, malformed_fraction=0.1)))
    >>> sorted({r.topic for r in records}), all(r.ts is None for r in records if r.malformed)
    (['clicks', 'predictions'], True)
    """
    prng = random.Random(config.seed)
    rng = np.random.default_rng(config.seed)
    n_users, n_items, seed = config.users, config.items, config.seed

    # The world: popularity, quality, taste, activity.
    ranks = rng.permutation(n_items)
    weights = 1.0 / (ranks + 1.0) ** config.zipf_s
    popularity = weights / weights.sum()
    cdf = np.cumsum(popularity)
    cdf[-1] = 1.0
    item_quality = rng.normal(0.0, 0.5, n_items)
    item_taste = rng.normal(0.0, 1.0, (n_items, _TASTE_DIMS))
    user_bias = rng.normal(0.0, 0.5, n_users)
    user_taste = rng.normal(0.0, 1.0, (n_users, _TASTE_DIMS))
    activity = rng.lognormal(0.0, 0.75, n_users)
    activity = activity / activity.mean()
    base_logit = math.log(config.base_ctr / (1.0 - config.base_ctr))
    user_prior = np.round(_sigmoid(base_logit + user_bias), 4).tolist()
    item_popularity = np.round(popularity, 6).tolist()
    user_ids = [f"user-{u:05d}" for u in range(n_users)]
    user_keys = [u.encode() for u in user_ids]
    item_ids = [f"item-{i:05d}" for i in range(n_items)]

    # Sessions and requests, then candidates, scores and slates.
    req = _sessions(config, activity.tolist(), prng)
    n_req = len(req.users)
    if n_req and max(req.ts) >= MAX_TS_MS - _TAIL_ROOM_MS:
        raise ValueError("the simulated traffic runs past the year 2100: use more users, fewer"
                         " predictions, a shorter session_gap_ms_mean or an earlier start_ts_ms")
    pool = min(n_items, 2 * config.slate_max)
    cand = _candidates(n_req, pool, cdf, popularity, rng)
    r_user = np.asarray(req.users, dtype=np.int64)
    r_model = np.asarray(req.models, dtype=np.int64)
    taste_scale = config.taste_strength / math.sqrt(_TASTE_DIMS)
    relevance = (
        base_logit + user_bias[r_user][:, None] + item_quality[cand]
        + taste_scale * np.einsum("rd,rcd->rc", user_taste[r_user], item_taste[cand])
    )
    noise = np.asarray(config.noise_for_models())[r_model][:, None]
    score_logit = relevance + noise * rng.normal(0.0, 1.0, relevance.shape)
    order = np.argsort(-score_logit, axis=1, kind="stable")
    cand = np.take_along_axis(cand, order, axis=1)
    relevance = np.take_along_axis(relevance, order, axis=1)
    score_logit = np.take_along_axis(score_logit, order, axis=1)
    # Propensity: softmax probability of picking the item from the pool.
    soft = np.exp(score_logit - score_logit.max(axis=1, keepdims=True))
    propensity = np.clip(soft / soft.sum(axis=1, keepdims=True), 1e-6, 1.0)
    sizes = np.asarray(req.sizes, dtype=np.int64)
    shown = np.arange(pool)[None, :] < sizes[:, None]
    p_req = np.repeat(np.arange(n_req), sizes)
    p_pos = np.nonzero(shown)[1]
    p_item = cand[shown]
    p_score = np.round(_sigmoid(score_logit[shown]), 6)
    p_click_prob = _sigmoid(relevance[shown] - config.position_decay * p_pos)
    p_propensity = np.round(propensity[shown], 6)
    del cand, relevance, score_logit, soft, propensity, order, noise, shown  # free early
    n_pred = len(p_item)
    clicked = rng.random(n_pred) < p_click_prob
    has_features = rng.random(n_pred) < config.features_fraction
    req_has_propensity = (rng.random(n_req) < config.propensity_fraction).tolist()

    # Clicks: delay (lognormal body + late tail), skew, attribution.
    c_pred = np.nonzero(clicked)[0]
    n_clicks = len(c_pred)
    tail = rng.random(n_clicks) < config.click_tail_fraction
    delay = np.where(
        tail,
        rng.lognormal(math.log(config.click_tail_median_ms), 0.6, n_clicks),
        rng.lognormal(math.log(config.click_delay_median_ms), config.click_delay_sigma, n_clicks),
    )
    delay = np.maximum(delay, 50.0).astype(np.int64)
    skewed = rng.random(n_clicks) < config.click_skew_fraction
    skew = rng.integers(1, max(config.max_click_skew_ms, 1) + 1, n_clicks)
    delay = np.where(skewed, -skew, delay)
    attribution = rng.random(n_clicks)
    share_pred, share_req, _ = config.attribution

    # Valid records, in generation order.
    r_ts, r_models, r_users = req.ts, req.models, req.users
    models = config.models
    values: list[bytes] = []
    keys: list[bytes | None] = []
    ts_list: list[int] = []
    p_req_list, p_item_list = p_req.tolist(), p_item.tolist()
    for j, (r, pos, item, score, prop, feats) in enumerate(zip(
        p_req_list, p_pos.tolist(), p_item_list, p_score.tolist(),
        p_propensity.tolist(), has_features.tolist(), strict=True,
    )):
        user = r_users[r]
        obj: dict[str, Any] = {
            "prediction_id": f"pred-{seed}-{j:08d}",
            "request_id": f"req-{seed}-{r:07d}",
            "user_id": user_ids[user],
            "item_id": item_ids[item],
            "model_id": models[r_models[r]],
            "score": score,
            "ts": r_ts[r],
            "position": pos,
        }
        if req_has_propensity[r]:
            obj["propensity"] = prop
        if feats:
            obj["features"] = {"user_ctr_prior": user_prior[user],
                               "item_popularity": item_popularity[item]}
        values.append(_dumps(obj))
        keys.append(user_keys[user])
        ts_list.append(r_ts[r])
    n_valid_pred = len(values)
    for c, (j, d, a) in enumerate(zip(c_pred.tolist(), delay.tolist(), attribution.tolist(),
                                      strict=True)):
        r = p_req_list[j]
        click: dict[str, Any] = {
            "user_id": user_ids[r_users[r]],
            "item_id": item_ids[p_item_list[j]],
            "ts": r_ts[r] + d,
            "click_id": f"click-{seed}-{c:07d}",
        }
        if a < share_pred + share_req:
            click["request_id"] = f"req-{seed}-{r:07d}"
        if a < share_pred:
            click["prediction_id"] = f"pred-{seed}-{j:08d}"
        values.append(_dumps(click))
        keys.append(keys[j])
        ts_list.append(click["ts"])
    n_valid = len(values)

    # Malformed records: broken copies of valid ones, spread over both topics.
    malformed: list[str | None] = [None] * n_valid
    topics = ["predictions"] * n_valid_pred + ["clicks"] * (n_valid - n_valid_pred)
    f = config.malformed_fraction
    n_bad = round(n_valid * f / (1.0 - f)) if n_valid else 0
    for b in range(n_bad):
        t = prng.randrange(n_valid)
        topic = "predictions" if t < n_valid_pred else "clicks"
        kind = prng.choice(MALFORMED_KINDS[topic])
        template = orjson.loads(values[t])
        values.append(_corrupt(topic, template, kind, f"bad-{seed}-{b:07d}", prng))
        keys.append(keys[t] if prng.random() < 0.75 else None)
        ts_list.append(ts_list[t])
        malformed.append(kind)
        topics.append(topic)

    # Delivery order: event time plus a jitter below the disorder bound.
    sort_ts = np.asarray(ts_list, dtype=np.int64)
    if config.max_disorder_ms > 0:
        sort_ts = sort_ts + rng.integers(0, config.max_disorder_ms, len(ts_list))
    for i in np.argsort(sort_ts, kind="stable").tolist():
        kind_i = malformed[i]
        yield GeneratedRecord(
            topic=topics[i],
            key=keys[i],
            value=values[i],
            ts=ts_list[i] if kind_i is None else None,
            malformed=kind_i,
        )


def write_jsonl(records: Iterable[GeneratedRecord], out_dir: Path) -> dict[str, int]:
    """Write each topic's values, one per line, to ``out_dir/<topic>.jsonl``.

    Keys and event times are not written (a value holds its ``user_id`` and ``ts``).
    Returns the number of lines written per topic.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     counts = write_jsonl(generate(GeneratorConfig(predictions=10)), Path(d))
    ...     first = next(read_jsonl(Path(d) / "predictions.jsonl"))
    >>> counts["predictions"], first.startswith(b'{"prediction_id":')
    (10, True)
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(TOPICS, 0)
    with (out_dir / "predictions.jsonl").open("wb") as preds, \
            (out_dir / "clicks.jsonl").open("wb") as clicks:
        files = {"predictions": preds, "clicks": clicks}
        for record in records:
            out = files.get(record.topic)
            if out is None:
                raise ValueError(f"unknown topic {record.topic!r}; expected one of {TOPICS}")
            if b"\n" in record.value:
                raise ValueError(f"a {record.topic} value contains a newline; JSON lines"
                                 " cannot hold it")
            out.write(record.value)
            out.write(b"\n")
            counts[record.topic] += 1
    return counts


def read_jsonl(path: Path) -> Iterator[bytes]:
    """Yield each line of ``path`` without its newline: the values :func:`write_jsonl` wrote.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "x.jsonl").write_bytes(b'{"a":1}\\nnot json\\n')
    ...     list(read_jsonl(Path(d) / "x.jsonl"))
    [b'{"a":1}', b'not json']
    """
    with Path(path).open("rb") as lines:
        for line in lines:
            yield line[:-1] if line.endswith(b"\n") else line
