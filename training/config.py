"""Settings of the reference continual trainer (one frozen, validated dataclass)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Optimizer = Literal["sgd", "adam", "adagrad"]
OPTIMIZERS: tuple[Optimizer, ...] = ("sgd", "adam", "adagrad")


def _int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _number(name: str, value: object, low: float, high: float, *, open_low: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value > high or value < low or (open_low and value == low):
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    """How the trainer learns, checkpoints and promotes.

    Model: ``StandardScaler | LogisticRegression(optimizer(learning_rate), l2,
    intercept_lr)``. ``checkpoint_every``: a version every that many examples.
    ``auc_window``: progressive AUC is exact over the last that many examples.
    Promotion: over the last ``recent_k`` examples both champion and challenger
    scored (>= 30, the paired test is a normal approximation), the challenger is
    promoted when the one-sided p-value of "mean per-example log-loss improvement <=
    ``min_margin``" is below ``alpha``.

    >>> TrainerConfig().optimizer
    'sgd'
    >>> TrainerConfig(recent_k=10)
    Traceback (most recent call last):
    ...
    ValueError: recent_k must be >= 30, got 10
    >>> TrainerConfig(optimizer="lbfgs")
    Traceback (most recent call last):
    ...
    ValueError: optimizer must be one of ('sgd', 'adam', 'adagrad'), got 'lbfgs'
    """

    optimizer: Optimizer = "sgd"
    learning_rate: float = 0.01
    intercept_lr: float = 0.01
    l2: float = 0.0
    checkpoint_every: int = 10_000
    auc_window: int = 10_000
    recent_k: int = 1_000
    alpha: float = 0.05
    min_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        _number("learning_rate", self.learning_rate, 0.0, 10.0, open_low=True)
        _number("intercept_lr", self.intercept_lr, 0.0, 10.0, open_low=False)
        _number("l2", self.l2, 0.0, 1e3, open_low=False)
        _int("checkpoint_every", self.checkpoint_every, 1)
        _int("auc_window", self.auc_window, 1)
        _int("recent_k", self.recent_k, 30)
        _number("alpha", self.alpha, 0.0, 0.5, open_low=True)
        _number("min_margin", self.min_margin, 0.0, 1e3, open_low=False)
