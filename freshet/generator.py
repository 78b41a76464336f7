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
* Routing: each request is served by a model drawn with the routing ``weights``
  (uniform by default). :class:`Simulation` runs the world chunk by chunk and takes
  new weights between chunks (:meth:`Simulation.set_weights`, or the
  ``weights_source`` callable of :func:`stream`), as a bandit's routing would.
* Each item shown has a true click probability (user, item and taste terms, minus
  a position penalty). Model ``i`` scores it as that relevance plus Gaussian noise
  of ``model_noise[i]`` logits, so ``model-a`` ranks better than ``model-b``: its
  served slates hold more relevant items (a higher CTR) and its scores a higher AUC.
* Shadow models (``shadow_models``) score every served prediction too, with their
  own noise (``shadow_noise``), and log it as a prediction with ``"served": false``
  right after the served one: same ``request_id``, ``user_id``, ``item_id``, ``ts``
  and ``position``, the same logged ``features``, no ``propensity``, its own
  ``prediction_id`` and ``score``. Shadow scores come from their own random stream
  and never change anything else: the served predictions and clicks are exactly
  those of the same config without shadows.
* Clicks are drawn from the true probability. Their delay is lognormal (median
  ``click_delay_median_ms``) with a long tail (``click_tail_fraction`` of clicks
  come about an hour later), and a few clicks are stamped slightly *before* their
  prediction (client clock skew). Clicks carry ``prediction_id`` and
  ``request_id``, only ``request_id``, or neither, in the ``attribution`` shares.
* Some requests log a ``propensity``; some predictions log the ``features`` the
  model saw ("log and wait"): ``user_ctr_prior`` (the user's true average click
  probability, 4 decimals) and ``item_popularity`` (the item's Zipf share, 6
  decimals), see :data:`LOGGED_FEATURES`.
* Drift (``drift_at_ms``): from that event time on (requests with
  ``ts >= drift_at_ms``), exactly two things change. (1) Every logged feature named
  in ``drift_features`` is shifted by ``drift_feature_shift`` times its standard
  deviation over its population (users for ``user_ctr_prior``, items for
  ``item_popularity``; :attr:`Simulation.feature_sd`), then rounded as before; the
  world itself (who clicks what) does not change, only what the models log, so a
  PSI over the logged features fires. (2) Every model's score noise, served and
  shadow, grows by ``drift_noise`` logits, so each model ranks and scores worse:
  its log-loss rises, its AUC and its served CTR drop (a performance-drop trigger).
  The predictions before ``drift_at_ms``, and which of them get clicked, are exactly
  those of the same config without drift (click delays, attribution and delivery
  jitter come from draws shared with the later records, so they may differ).
* Optionally, ``malformed_fraction`` of the served predictions, clicks and
  malformed records together are broken copies of valid served predictions or
  clicks, each tagged with the kind of damage (see :data:`MALFORMED_KINDS`);
  shadow predictions are never broken.

Records come out in delivery order: event-time order with bounded disorder, where
no record is delivered after one whose event time exceeds its own by
``max_disorder_ms`` or more; this holds across the chunks of a :class:`Simulation`
too, which holds back a record until no later chunk can deliver one before it.

>>> records = list(generate(GeneratorConfig(predictions=20, users=5, items=10)))
>>> sum(r.topic == "predictions" for r in records)
20
>>> records == list(generate(GeneratorConfig(predictions=20, users=5, items=10)))
True
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from events.contracts import MAX_ID_LEN, MAX_RECORD_BYTES, MAX_TS_MS, MIN_TS_MS

__all__ = [
    "LOGGED_FEATURES",
    "MALFORMED_KINDS",
    "TOPICS",
    "GeneratedRecord",
    "GeneratorConfig",
    "Simulation",
    "WeightsSource",
    "generate",
    "read_jsonl",
    "stream",
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
#: The feature values a prediction logs in its ``features`` ("log and wait").
LOGGED_FEATURES: tuple[str, str] = ("user_ctr_prior", "item_popularity")

#: What :func:`stream` polls before each chunk: new routing weights, or ``None`` to keep them.
WeightsSource = Callable[[], Mapping[str, float] | None]

_TASTE_DIMS = 4
#: Room kept between the last request and the end of valid event time (late clicks).
_TAIL_ROOM_MS = 30 * 24 * 3_600_000


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _normalize_weights(
    name: str, weights: object, models: tuple[str, ...], shadow_models: tuple[str, ...]
) -> dict[str, float]:
    """``weights`` checked and scaled to sum to 1, one entry per served model, in order.

    Missing models get 0; weights of shadow models are ignored (they are never served).
    """
    _check(isinstance(weights, Mapping),
           f"{name} must be a mapping {{model_id: weight}}, got {weights!r}")
    assert isinstance(weights, Mapping)
    raw = dict.fromkeys(models, 0.0)
    for model, weight in weights.items():
        _check(model in raw or model in shadow_models,
               f"{name}: unknown model {model!r}; the served models are {models!r}")
        _check(_is_real(weight) and math.isfinite(weight) and weight >= 0,
               f"{name}: the weight of {model!r} must be a finite number >= 0, got {weight!r}")
        if model in raw:
            raw[model] = float(weight)
    total = math.fsum(raw.values())
    _check(total > 0, f"{name} must give the served models a total weight > 0, got {weights!r}")
    return {model: weight / total for model, weight in raw.items()}


def _check_noise(name: str, noise: tuple[float, ...] | None, models: tuple[str, ...]) -> None:
    if noise is None:
        return
    _check(isinstance(noise, tuple) and len(noise) == len(models),
           f"{name} needs one value per model ({len(models)}), got {noise!r}")
    for value in noise:
        _check(_is_real(value) and math.isfinite(value) and value >= 0,
               f"{name} values must be finite and >= 0, got {value!r}")


def _check_ids(name: str, ids: object, allow_empty: bool) -> None:
    _check(isinstance(ids, tuple) and (allow_empty or len(ids) >= 1),
           f"{name} must be a {'' if allow_empty else 'non-empty '}tuple of model ids,"
           f" got {ids!r}")
    assert isinstance(ids, tuple)
    for model in ids:
        _check(isinstance(model, str) and 0 < len(model) <= MAX_ID_LEN,
               f"{name}: model ids must be non-empty strings of at most {MAX_ID_LEN}"
               f" characters, got {model!r}")
    _check(len(set(ids)) == len(ids), f"{name} must be distinct, got {ids!r}")


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    """What to generate; validated on construction (a ``ValueError`` says what to fix).

    Durations are integer milliseconds; fractions are in ``[0, 1]``.

    >>> GeneratorConfig().models
    ('model-a', 'model-b')
    >>> GeneratorConfig(models=("a", "b", "c")).noise_for_models()
    (0.25, 1.5, 2.75)
    >>> dict(GeneratorConfig(weights={"model-a": 3, "model-b": 1}).weights or {})
    {'model-a': 0.75, 'model-b': 0.25}
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
    #: Model ids that serve requests (by ``weights``: evenly by default).
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
    #: Routing: ``{model_id: weight}``, the share of requests each model serves (at the
    #: start of a :class:`Simulation`). Weights are >= 0 with a positive total and are
    #: normalized on construction (a read-only mapping over every model, in ``models``
    #: order; a missing model gets 0; a shadow model's weight is ignored). ``None`` =
    #: uniform.
    weights: Mapping[str, float] | None = None
    #: Models that score every served prediction without serving it (``"served": false``).
    shadow_models: tuple[str, ...] = ()
    #: Score noise of each shadow model, in logits; ``None`` continues ``model_noise``'s
    #: default sequence after the served models (2.75, 4.0, ... after two models).
    shadow_noise: tuple[float, ...] | None = None
    #: Event time from which drift applies (requests with ``ts >= drift_at_ms``);
    #: ``None`` = no drift. It must be >= ``start_ts_ms``.
    drift_at_ms: int | None = None
    #: Drift of the logged features: each of ``drift_features`` shifts by this many of
    #: its population standard deviations (may be negative).
    drift_feature_shift: float = 0.0
    drift_features: tuple[str, ...] = ("user_ctr_prior",)
    #: Drift of the models: logits added to every model's score noise (served and shadow).
    drift_noise: float = 0.0

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
        _check_ids("shadow_models", self.shadow_models, allow_empty=True)
        overlap = sorted(set(self.shadow_models) & set(self.models))
        _check(not overlap, f"shadow_models must not be served models too, got {overlap!r}")
        _check_noise("shadow_noise", self.shadow_noise, self.shadow_models)
        if self.weights is not None:
            normalized = _normalize_weights("weights", self.weights, self.models,
                                            self.shadow_models)
            object.__setattr__(self, "weights", MappingProxyType(normalized))
        self._check_drift()
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

    def _check_drift(self) -> None:
        at = self.drift_at_ms
        _check(at is None or (_is_int(at) and self.start_ts_ms <= at < MAX_TS_MS),
               f"drift_at_ms must be None or epoch milliseconds >= start_ts_ms"
               f" ({self.start_ts_ms}), got {at!r}")
        _check(_is_real(self.drift_feature_shift) and math.isfinite(self.drift_feature_shift),
               f"drift_feature_shift must be a finite number, got {self.drift_feature_shift!r}")
        _check(_is_real(self.drift_noise) and math.isfinite(self.drift_noise)
               and self.drift_noise >= 0,
               f"drift_noise must be a finite number >= 0, got {self.drift_noise!r}")
        _check(isinstance(self.drift_features, tuple)
               and len(set(self.drift_features)) == len(self.drift_features)
               and all(f in LOGGED_FEATURES for f in self.drift_features),
               f"drift_features must be distinct names from {LOGGED_FEATURES},"
               f" got {self.drift_features!r}")
        _check(at is not None or (self.drift_feature_shift == 0 and self.drift_noise == 0),
               "drift_feature_shift and drift_noise need drift_at_ms (when drift starts)")

    def routing_weights(self) -> dict[str, float]:
        """The normalized starting routing weights, one per served model (uniform by default).

        >>> GeneratorConfig(models=("a", "b", "c", "d")).routing_weights()
        {'a': 0.25, 'b': 0.25, 'c': 0.25, 'd': 0.25}
        """
        if self.weights is None:
            return dict.fromkeys(self.models, 1.0 / len(self.models))
        return dict(self.weights)

    def noise_for_shadows(self) -> tuple[float, ...]:
        """Score noise (logits) of each shadow model, continuing the default sequence.

        >>> GeneratorConfig(shadow_models=("s1", "s2")).noise_for_shadows()
        (2.75, 4.0)
        """
        if self.shadow_noise is not None:
            return tuple(float(n) for n in self.shadow_noise)
        n = len(self.models)
        return tuple(0.25 + 1.25 * (n + i) for i in range(len(self.shadow_models)))

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


#: One record waiting for delivery: topic, key, value, event time, malformed kind and
#: the values of the shadow predictions delivered right after it.
_Row = tuple[str, bytes | None, bytes, int, str | None, tuple[bytes, ...]]


class Simulation:
    """The simulated world, run chunk by chunk; routing weights may change between chunks.

    The world (users, items, tastes) and every random stream are fixed by the
    config's seed; ``config.predictions`` is not used (each :meth:`step` says how many).
    The output is a function of the config and of the sequence of :meth:`step` sizes
    and :meth:`set_weights` calls. Ids keep counting across chunks, and a step returns
    only the records whose place in the delivery order is final: the others (late
    clicks, mostly) come with a later step or :meth:`flush`.

    >>> sim = Simulation(GeneratorConfig(users=20, items=30))
    >>> first = sim.step(100)
    >>> sim.set_weights({"model-a": 1.0})
    >>> sim.weights
    {'model-a': 1.0, 'model-b': 0.0}
    >>> records = first + sim.step(100) + sim.flush()
    >>> sum(r.topic == "predictions" for r in records)
    200
    """

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self._prng = random.Random(config.seed)
        rng = self._rng = np.random.default_rng(config.seed)
        # shadow scores draw from their own stream: they never move any other draw
        self._shadow_rng = np.random.default_rng([config.seed, 1])
        n_users, n_items = config.users, config.items

        # The world: popularity, quality, taste, activity.
        ranks = rng.permutation(n_items)
        zipf = 1.0 / (ranks + 1.0) ** config.zipf_s
        self._popularity = zipf / zipf.sum()
        self._cdf = np.cumsum(self._popularity)
        self._cdf[-1] = 1.0
        self._item_quality = rng.normal(0.0, 0.5, n_items)
        self._item_taste = rng.normal(0.0, 1.0, (n_items, _TASTE_DIMS))
        self._user_bias = rng.normal(0.0, 0.5, n_users)
        self._user_taste = rng.normal(0.0, 1.0, (n_users, _TASTE_DIMS))
        activity = rng.lognormal(0.0, 0.75, n_users)
        self._activity: list[float] = (activity / activity.mean()).tolist()
        self._base_logit = math.log(config.base_ctr / (1.0 - config.base_ctr))
        prior = _sigmoid(self._base_logit + self._user_bias)
        self._feature_sd = {"user_ctr_prior": float(np.std(prior)),
                            "item_popularity": float(np.std(self._popularity))}
        shift = {name: config.drift_feature_shift * self._feature_sd[name]
                 if name in config.drift_features else 0.0 for name in LOGGED_FEATURES}
        self._user_prior: tuple[list[float], list[float]] = (
            np.round(prior, 4).tolist(),
            np.round(prior + shift["user_ctr_prior"], 4).tolist())
        self._item_popularity: tuple[list[float], list[float]] = (
            np.round(self._popularity, 6).tolist(),
            np.round(self._popularity + shift["item_popularity"], 6).tolist())
        self._user_ids = [f"user-{u:05d}" for u in range(n_users)]
        self._user_keys = [u.encode() for u in self._user_ids]
        self._item_ids = [f"item-{i:05d}" for i in range(n_items)]

        # Session state: every user's next session start.
        self._heap = [
            (config.start_ts_ms + int(self._prng.expovariate(a / config.session_gap_ms_mean)), u)
            for u, a in enumerate(self._activity)
        ]
        heapq.heapify(self._heap)
        self._weights: dict[str, float] = {}
        self._cum_weights: list[float] | None = None  # None: uniform
        self._last_model = 0
        self._route(config.routing_weights())

        # Counters (ids continue across steps) and the records held back.
        self._n_pred = self._n_req = self._n_click = self._n_bad = 0
        self._pending_sort: list[int] = []
        self._pending: list[_Row] = []

    @property
    def weights(self) -> dict[str, float]:
        """The current routing weights, normalized, one per served model.

        >>> Simulation(GeneratorConfig(models=("a", "b"))).weights
        {'a': 0.5, 'b': 0.5}
        """
        return dict(self._weights)

    @property
    def feature_sd(self) -> dict[str, float]:
        """Each logged feature's population standard deviation: ``drift_feature_shift``'s unit.

        >>> sorted(Simulation(GeneratorConfig(users=5, items=5)).feature_sd)
        ['item_popularity', 'user_ctr_prior']
        """
        return dict(self._feature_sd)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Route the next steps' requests by ``weights``, checked like ``GeneratorConfig.weights``.

        >>> sim = Simulation(GeneratorConfig())
        >>> sim.set_weights({"model-a": 9, "model-b": 1, "unknown": 1})
        Traceback (most recent call last):
        ...
        ValueError: weights: unknown model 'unknown'; the served models are ('model-a', 'model-b')
        """
        config = self.config
        self._route(_normalize_weights("weights", weights, config.models, config.shadow_models))

    def _route(self, weights: dict[str, float]) -> None:
        self._weights = weights
        values = list(weights.values())
        if all(w == values[0] for w in values):  # uniform: the draw of the default config
            self._cum_weights = None
        else:
            self._cum_weights = np.cumsum(values).tolist()
            self._last_model = max(i for i, w in enumerate(values) if w > 0)

    def _draw_model(self) -> int:
        cum = self._cum_weights
        if cum is None:
            return self._prng.randrange(len(self._weights))
        # the first model whose cumulative weight exceeds the draw (zero weights never win)
        return min(bisect.bisect_right(cum, self._prng.random()), self._last_model)

    def _requests(self, predictions: int) -> _Requests:
        """Lay out requests user by user: sessions of requests, separated by idle gaps."""
        config, prng, heap = self.config, self._prng, self._heap
        out = _Requests([], [], [], [])
        stay = 1.0 - 1.0 / config.requests_per_session_mean
        slate_max = min(config.slate_max, config.items)
        slate_min = min(config.slate_min, slate_max)
        total = 0
        while total < predictions:
            t, user = heapq.heappop(heap)
            first = True
            while total < predictions and (first or prng.random() < stay):
                if not first:
                    t += 1_000 + int(prng.expovariate(1.0 / config.request_gap_ms_mean))
                first = False
                size = min(prng.randint(slate_min, slate_max), predictions - total)
                out.users.append(user)
                out.ts.append(t)
                out.sizes.append(size)
                out.models.append(self._draw_model())
                total += size
            gap = int(prng.expovariate(self._activity[user] / config.session_gap_ms_mean))
            heapq.heappush(heap, (t + 60_000 + gap, user))
        return out

    def step(self, predictions: int) -> list[GeneratedRecord]:
        """Simulate the next ``predictions`` served predictions; return what is ready to deliver.

        >>> sim = Simulation(GeneratorConfig(users=10, items=20, shadow_models=("s",)))
        >>> out = sim.step(50) + sim.flush()
        >>> sum(r.topic == "predictions" and b'"served":false' in r.value for r in out)
        50
        """
        return list(self._advance(predictions))

    def flush(self) -> list[GeneratedRecord]:
        """Every record still held back, in delivery order (the end of the stream).

        >>> Simulation(GeneratorConfig()).flush()
        []
        """
        rows, self._pending, self._pending_sort = self._pending, [], []
        return list(self._emit(rows))

    def _emit(self, rows: Iterable[_Row]) -> Iterator[GeneratedRecord]:
        for topic, key, value, ts, kind, shadows in rows:
            yield GeneratedRecord(topic=topic, key=key, value=value,
                                  ts=ts if kind is None else None, malformed=kind)
            for shadow in shadows:
                yield GeneratedRecord(topic="predictions", key=key, value=shadow, ts=ts)

    def _advance(self, predictions: int) -> Iterator[GeneratedRecord]:
        """Simulate ``predictions`` served predictions now; the records come lazily."""
        _check(_is_int(predictions) and predictions >= 0,
               f"predictions must be an integer >= 0, got {predictions!r}")
        config, prng, rng = self.config, self._prng, self._rng
        seed = config.seed
        j0, r0, c0, b0 = self._n_pred, self._n_req, self._n_click, self._n_bad

        # Sessions and requests, then candidates, scores and slates.
        req = self._requests(predictions)
        n_req = len(req.users)
        if n_req and max(req.ts) >= MAX_TS_MS - _TAIL_ROOM_MS:
            raise ValueError("the simulated traffic runs past the year 2100: use more users,"
                             " fewer predictions, a shorter session_gap_ms_mean or an earlier"
                             " start_ts_ms")
        pool = min(config.items, 2 * config.slate_max)
        cand = _candidates(n_req, pool, self._cdf, self._popularity, rng)
        r_user = np.asarray(req.users, dtype=np.int64)
        r_model = np.asarray(req.models, dtype=np.int64)
        drift_at = config.drift_at_ms
        r_drift = (np.asarray(req.ts, dtype=np.int64) >= drift_at if drift_at is not None
                   else np.zeros(n_req, dtype=bool))
        taste_scale = config.taste_strength / math.sqrt(_TASTE_DIMS)
        relevance = (
            self._base_logit + self._user_bias[r_user][:, None] + self._item_quality[cand]
            + taste_scale * np.einsum("rd,rcd->rc", self._user_taste[r_user],
                                      self._item_taste[cand])
        )
        noise = np.asarray(config.noise_for_models())[r_model]
        if config.drift_noise:
            noise = noise + config.drift_noise * r_drift
        score_logit = relevance + noise[:, None] * rng.normal(0.0, 1.0, relevance.shape)
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
        p_relevance = relevance[shown]
        p_click_prob = _sigmoid(p_relevance - config.position_decay * p_pos)
        p_propensity = np.round(propensity[shown], 6)
        del cand, relevance, score_logit, soft, propensity, order, noise, shown  # free early
        n_pred = len(p_item)
        clicked = rng.random(n_pred) < p_click_prob
        has_features = rng.random(n_pred) < config.features_fraction
        req_has_propensity = (rng.random(n_req) < config.propensity_fraction).tolist()
        shadow_scores = self._shadow_scores(p_relevance, r_drift[p_req])
        del p_relevance, p_click_prob

        # Clicks: delay (lognormal body + late tail), skew, attribution.
        c_pred = np.nonzero(clicked)[0]
        n_clicks = len(c_pred)
        tail = rng.random(n_clicks) < config.click_tail_fraction
        delay = np.where(
            tail,
            rng.lognormal(math.log(config.click_tail_median_ms), 0.6, n_clicks),
            rng.lognormal(math.log(config.click_delay_median_ms), config.click_delay_sigma,
                          n_clicks),
        )
        delay = np.maximum(delay, 50.0).astype(np.int64)
        skewed = rng.random(n_clicks) < config.click_skew_fraction
        skew = rng.integers(1, max(config.max_click_skew_ms, 1) + 1, n_clicks)
        delay = np.where(skewed, -skew, delay)
        attribution = rng.random(n_clicks)
        share_pred, share_req, _ = config.attribution

        # Valid records, in generation order.
        r_ts, r_models, r_users = req.ts, req.models, req.users
        r_drift_list = r_drift.tolist()
        models, shadow_models = config.models, config.shadow_models
        user_ids, item_ids, user_keys = self._user_ids, self._item_ids, self._user_keys
        values: list[bytes] = []
        keys: list[bytes | None] = []
        ts_list: list[int] = []
        shadows: dict[int, tuple[bytes, ...]] = {}
        p_req_list, p_item_list = p_req.tolist(), p_item.tolist()
        shadow_rows = shadow_scores.tolist() if shadow_models else None
        for j, (r, pos, item, score, prop, feats) in enumerate(zip(
            p_req_list, p_pos.tolist(), p_item_list, p_score.tolist(),
            p_propensity.tolist(), has_features.tolist(), strict=True,
        )):
            user = r_users[r]
            obj: dict[str, Any] = {
                "prediction_id": f"pred-{seed}-{j0 + j:08d}",
                "request_id": f"req-{seed}-{r0 + r:07d}",
                "user_id": user_ids[user],
                "item_id": item_ids[item],
                "model_id": models[r_models[r]],
                "score": score,
                "ts": r_ts[r],
                "position": pos,
            }
            features: dict[str, float] | None = None
            if feats:
                drifted = r_drift_list[r]
                features = {"user_ctr_prior": self._user_prior[drifted][user],
                            "item_popularity": self._item_popularity[drifted][item]}
            if shadow_rows is not None:
                shadows[j] = tuple(
                    _dumps(_shadow(obj, f"pred-{seed}-{j0 + j:08d}-s{k}", shadow, s, features))
                    for k, (shadow, s) in enumerate(zip(shadow_models, shadow_rows[j],
                                                        strict=True)))
            if req_has_propensity[r]:
                obj["propensity"] = prop
            if features is not None:
                obj["features"] = features
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
                "click_id": f"click-{seed}-{c0 + c:07d}",
            }
            if a < share_pred + share_req:
                click["request_id"] = f"req-{seed}-{r0 + r:07d}"
            if a < share_pred:
                click["prediction_id"] = f"pred-{seed}-{j0 + j:08d}"
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
            values.append(_corrupt(topic, template, kind, f"bad-{seed}-{b0 + b:07d}", prng))
            keys.append(keys[t] if prng.random() < 0.75 else None)
            ts_list.append(ts_list[t])
            malformed.append(kind)
            topics.append(topic)
        self._n_pred, self._n_req = j0 + n_pred, r0 + n_req
        self._n_click, self._n_bad = c0 + n_clicks, b0 + n_bad

        # Delivery order: event time plus a jitter below the disorder bound, merged with
        # the records held back; deliver what no later step can precede.
        sort_ts = np.asarray(ts_list, dtype=np.int64)
        if config.max_disorder_ms > 0:
            sort_ts = sort_ts + rng.integers(0, config.max_disorder_ms, len(ts_list))
        held, held_sort = self._pending, self._pending_sort
        n_held = len(held)
        all_sort = np.concatenate([np.asarray(held_sort, dtype=np.int64), sort_ts])
        order_all = np.argsort(all_sort, kind="stable")
        # later steps start no request before the earliest next session, and stamp no
        # record more than max_click_skew_ms before its request
        horizon = self._heap[0][0] - config.max_click_skew_ms if self._heap else MAX_TS_MS
        cut = int(np.searchsorted(all_sort[order_all], horizon, side="left"))

        def row(i: int) -> _Row:
            if i < n_held:
                return held[i]
            k = i - n_held
            return (topics[k], keys[k], values[k], ts_list[k], malformed[k],
                    shadows.get(k, ()))

        later = order_all[cut:].tolist()
        self._pending = [row(i) for i in later]
        self._pending_sort = all_sort[later].tolist()
        return self._emit(row(i) for i in order_all[:cut].tolist())

    def _shadow_scores(
        self, relevance: npt.NDArray[np.float64], drifted: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float64]:
        """Each shadow model's score of each served prediction (rows: predictions)."""
        config = self.config
        n_shadow = len(config.shadow_models)
        if not n_shadow:
            return np.empty((len(relevance), 0))
        noise = np.broadcast_to(np.asarray(config.noise_for_shadows()),
                                (len(relevance), n_shadow))
        if config.drift_noise:
            noise = noise + config.drift_noise * drifted[:, None]
        draws = self._shadow_rng.normal(0.0, 1.0, (len(relevance), n_shadow))
        scores: npt.NDArray[np.float64] = np.round(
            _sigmoid(relevance[:, None] + noise * draws), 6)
        return scores


def _shadow(served: dict[str, Any], prediction_id: str, model: str, score: float,
            features: dict[str, float] | None) -> dict[str, Any]:
    """The shadow prediction of ``model`` for the served prediction ``served``."""
    obj: dict[str, Any] = {
        "prediction_id": prediction_id,
        "request_id": served["request_id"],
        "user_id": served["user_id"],
        "item_id": served["item_id"],
        "model_id": model,
        "score": score,
        "ts": served["ts"],
        "position": served["position"],
    }
    if features is not None:
        obj["features"] = features
    obj["served"] = False
    return obj


def generate(config: GeneratorConfig) -> Iterator[GeneratedRecord]:
    """Generate the records ``config`` describes, in delivery order.

    Exactly ``config.predictions`` valid served predictions (plus one per shadow
    model for each), the clicks they draw, and the malformed records; everything is
    computed up front (about 10 s and 600 MB per million predictions), then yielded.
    It is one :meth:`Simulation.step` of ``config.predictions``, then the flush.

    >>> records = list(generate(GeneratorConfig(predictions=200, malformed_fraction=0.1)))
    >>> sorted({r.topic for r in records}), all(r.ts is None for r in records if r.malformed)
    (['clicks', 'predictions'], True)
    """
    sim = Simulation(config)
    yield from sim._advance(config.predictions)
    yield from sim.flush()


def stream(
    config: GeneratorConfig,
    weights_source: WeightsSource | None = None,
    *,
    chunk_predictions: int = 1_000,
    forever: bool = False,
) -> Iterator[GeneratedRecord]:
    """Generate ``config``'s stream lazily in chunks, polling ``weights_source`` before each.

    Before each chunk of ``chunk_predictions`` served predictions, ``weights_source()``
    is called: a mapping routes that chunk's requests by it (validated like
    ``GeneratorConfig.weights``; a ``ValueError`` stops the stream), ``None`` keeps the
    current weights. It ends after ``config.predictions`` served predictions (then
    flushes the held-back records), or never with ``forever=True``. The output is
    deterministic for a config, a chunk size and the sequence of weights returned.
    With ``chunk_predictions >= config.predictions`` and no weights it equals
    :func:`generate`.

    >>> schedule = iter([{"model-a": 1.0}, None])
    >>> out = list(stream(GeneratorConfig(predictions=400), lambda: next(schedule, None),
    ...                   chunk_predictions=200))
    >>> sum(r.topic == "predictions" for r in out)
    400
    """
    _check(_is_int(chunk_predictions) and chunk_predictions >= 1,
           f"chunk_predictions must be an integer >= 1, got {chunk_predictions!r}")
    return _stream(Simulation(config), weights_source, chunk_predictions, forever)


def _stream(sim: Simulation, weights_source: WeightsSource | None, chunk_predictions: int,
            forever: bool) -> Iterator[GeneratedRecord]:
    remaining = sim.config.predictions
    while forever or remaining > 0:
        if weights_source is not None:
            weights = weights_source()
            if weights is not None:
                sim.set_weights(weights)
        n = chunk_predictions if forever else min(chunk_predictions, remaining)
        yield from sim._advance(n)
        remaining -= n
    yield from sim.flush()


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
