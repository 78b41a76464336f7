"""What to generate: :class:`GeneratorConfig`, its validation and the routing weights' checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from events.contracts import MAX_ID_LEN, MAX_TS_MS, MIN_TS_MS
from freshet.generator.records import LOGGED_FEATURES

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
