"""Settings of the evaluator: frozen dataclasses, each validated in ``__post_init__``.

Every problem raises ValueError naming the field. Times are integer milliseconds of
event time. ``None`` disables an optional trigger reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from evaluation.stats import Z95

PerformanceMetric = Literal["off", "log_loss", "auc", "both"]
PERFORMANCE_METRICS: tuple[PerformanceMetric, ...] = ("off", "log_loss", "auc", "both")


def _int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _float(name: str, value: object, *, low: float, high: float, open_low: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Per-model metrics: time tiles and sliding windows (each a multiple of ``tile_ms``).

    A sliding window of width ``W`` for a model whose newest matured prediction is at
    ``t`` covers ``prediction_ts`` in ``[e - W, e)`` with ``e = (t // tile_ms + 1) *
    tile_ms`` (the end of the tile holding ``t``); with ``tile_ms = 1`` that is exactly
    ``(t - W, t]``.

    >>> MetricsConfig().windows
    (('1h', 3600000), ('24h', 86400000))
    >>> MetricsConfig(tile_ms=7_000)
    Traceback (most recent call last):
    ...
    ValueError: windows: '1h' (3600000 ms) is not a multiple of tile_ms (7000)
    """

    tile_ms: int = 60_000
    windows: tuple[tuple[str, int], ...] = (("1h", 3_600_000), ("24h", 86_400_000))
    z: float = Z95

    def __post_init__(self) -> None:
        _int("tile_ms", self.tile_ms, minimum=1)
        _float("z", self.z, low=0.0, high=10.0, open_low=True)
        names: set[str] = set()
        for entry in self.windows:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
                raise ValueError(f"windows: each entry must be (name, width_ms), got {entry!r}")
            name, width = entry
            _int(f"windows[{name!r}]", width, minimum=1)
            if name == "all" or name in names or not name:
                raise ValueError(f"windows: name {name!r} is reserved, empty or repeated")
            if width % self.tile_ms:
                raise ValueError(
                    f"windows: {name!r} ({width} ms) is not a multiple of tile_ms ({self.tile_ms})"
                )
            names.add(name)


@dataclass(frozen=True, slots=True)
class ComparisonConfig:
    """Pairwise tests: ``alpha`` for the ``significant`` flags, mSPRT prior variance.

    ``msprt_tau2`` is the variance of the normal mixing prior on the CTR difference
    (1e-4: a standard deviation of 1 percentage point, the scale of effects expected
    between CTR models around a few percent).

    >>> ComparisonConfig().msprt_tau2
    0.0001
    >>> ComparisonConfig(alpha=1.5)
    Traceback (most recent call last):
    ...
    ValueError: alpha must be in (0.0, 1.0], got 1.5
    """

    alpha: float = 0.05
    msprt_tau2: float = 1e-4

    def __post_init__(self) -> None:
        _float("alpha", self.alpha, low=0.0, high=1.0, open_low=True)
        _float("msprt_tau2", self.msprt_tau2, low=0.0, high=1.0, open_low=True)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Thompson routing: ``draws`` seeded Monte-Carlo draws, exploration ``floor``.

    >>> RoutingConfig().draws
    20000
    >>> RoutingConfig(draws=100)
    Traceback (most recent call last):
    ...
    ValueError: draws must be >= 10000, got 100
    """

    draws: int = 20_000
    seed: int = 0
    floor: float = 0.05

    def __post_init__(self) -> None:
        _int("draws", self.draws, minimum=10_000)
        _int("seed", self.seed, minimum=0)
        _float("floor", self.floor, low=0.0, high=1.0, open_low=False)


@dataclass(frozen=True, slots=True)
class DriftConfig:
    """PSI against reference quantile bins, and ADWIN on each model's log-loss stream.

    ``reference_size``: how many first matured (served) training examples, or first
    matured labels of a model for its scores, form the reference when none is given.
    ``current_size``: PSI compares the last ``current_size`` values after the reference
    with it (None until that many were seen). ``epsilon``: floor of a bin's share.

    >>> DriftConfig().bins
    10
    >>> DriftConfig(bins=1)
    Traceback (most recent call last):
    ...
    ValueError: bins must be >= 2, got 1
    """

    bins: int = 10
    epsilon: float = 1e-4
    reference_size: int = 1_000
    current_size: int = 1_000
    psi_threshold: float = 0.2
    adwin_delta: float = 0.002

    def __post_init__(self) -> None:
        _int("bins", self.bins, minimum=2)
        _float("epsilon", self.epsilon, low=0.0, high=0.1, open_low=True)
        _int("reference_size", self.reference_size, minimum=2)
        _int("current_size", self.current_size, minimum=1)
        _float("psi_threshold", self.psi_threshold, low=0.0, high=1e6, open_low=True)
        _float("adwin_delta", self.adwin_delta, low=0.0, high=1.0, open_low=True)


@dataclass(frozen=True, slots=True)
class TriggerConfig:
    """Retrain-trigger thresholds, per model (None/"off"/False disables a reason).

    ``every_ms``: event time since the last trigger. ``every_labels``: matured labels
    since it. ``performance``: compare the last ``recent_labels`` labels with the first
    ``reference_labels`` after the last trigger, every ``check_every`` labels once both
    are full; fires when the lower end of the ``z`` interval of the drop exceeds the
    margin. ``drift``: a drift subject newly over its threshold.

    >>> TriggerConfig().performance
    'log_loss'
    >>> TriggerConfig(every_ms=0)
    Traceback (most recent call last):
    ...
    ValueError: every_ms must be >= 1, got 0
    """

    every_ms: int | None = 86_400_000
    every_labels: int | None = None
    performance: PerformanceMetric = "log_loss"
    reference_labels: int = 1_000
    recent_labels: int = 1_000
    check_every: int = 100
    log_loss_margin: float = 0.01
    auc_margin: float = 0.01
    z: float = Z95
    drift: bool = True
    #: a drift subject re-arms below this fraction of its threshold (hysteresis)
    drift_rearm: float = 0.5

    def __post_init__(self) -> None:
        if self.every_ms is not None:
            _int("every_ms", self.every_ms, minimum=1)
        if self.every_labels is not None:
            _int("every_labels", self.every_labels, minimum=1)
        if self.performance not in PERFORMANCE_METRICS:
            raise ValueError(
                f"performance must be one of {PERFORMANCE_METRICS}, got {self.performance!r}"
            )
        _int("reference_labels", self.reference_labels, minimum=2)
        _int("recent_labels", self.recent_labels, minimum=2)
        _int("check_every", self.check_every, minimum=1)
        _float("log_loss_margin", self.log_loss_margin, low=0.0, high=1e6, open_low=False)
        _float("auc_margin", self.auc_margin, low=0.0, high=1.0, open_low=False)
        _float("z", self.z, low=0.0, high=10.0, open_low=True)
        if not isinstance(self.drift, bool):
            raise ValueError(f"drift must be a bool, got {self.drift!r}")
        _float("drift_rearm", self.drift_rearm, low=0.0, high=1.0, open_low=False)


@dataclass(frozen=True, slots=True)
class EvalConfig:
    """Everything the :class:`~evaluation.evaluator.Evaluator` needs.

    ``dedupe_horizon_ms``: how long (behind the label watermark) a label's
    ``(prediction_id, label_version)`` is remembered to drop repeats; a record older
    than that when it arrives is dropped as too late.

    >>> EvalConfig().dedupe_horizon_ms
    86400000
    >>> EvalConfig(dedupe_horizon_ms=-1)
    Traceback (most recent call last):
    ...
    ValueError: dedupe_horizon_ms must be >= 0, got -1
    """

    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    comparison: ComparisonConfig = field(default_factory=ComparisonConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    dedupe_horizon_ms: int = 86_400_000

    def __post_init__(self) -> None:
        for name, kind in (("metrics", MetricsConfig), ("comparison", ComparisonConfig),
                           ("routing", RoutingConfig), ("drift", DriftConfig),
                           ("triggers", TriggerConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}")
        _int("dedupe_horizon_ms", self.dedupe_horizon_ms, minimum=0)
