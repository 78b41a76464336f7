"""Configuration of the natural-label state machine (one frozen, validated spec).

See :mod:`labels.engine` for what each mode emits (README: which training rule it serves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Exactly one final label per prediction: positive at the click, negative at window close.
MODE_WAIT = "wait"
#: An early negative at once, corrected by a late positive (fake-negative weighting).
MODE_EARLY_NEGATIVE = "early_negative"
#: A label after a short observation window, corrected later (ES-DFM / DEFER).
MODE_OBSERVE_THEN_CORRECT = "observe_then_correct"

#: Every mode :class:`LabelConfig` accepts.
MODES = (MODE_WAIT, MODE_EARLY_NEGATIVE, MODE_OBSERVE_THEN_CORRECT)
LabelMode = Literal["wait", "early_negative", "observe_then_correct"]


def _check_int(name: str, value: object, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer number of milliseconds, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0 ms, got {value}")
    if not positive and value < 0:
        raise ValueError(f"{name} must be >= 0 ms, got {value}")


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """How predictions and clicks are joined into labels (all times in integer ms).

    ``window_ms``: attribution window ``[pred.ts, pred.ts + window_ms)``.
    ``skew_ms``: how far (in event time) a click carrying explicit ids may precede its
    prediction, and how long a click whose explicit ids match nothing yet is held.
    ``mode``: one of :data:`MODES`. ``observe_ms``: observation window of
    ``observe_then_correct`` (``0 < observe_ms < window_ms`` in that mode).
    ``late_horizon_ms``: how long after window close a finalized prediction is remembered
    to recognise late clicks. ``provisional_examples``: also emit a training example with
    every non-final label (what delayed-feedback trainers consume as labels arrive); by
    default training examples go with final labels only. ``eager_clicks``: a click
    naming an open, unclicked prediction by ``prediction_id`` inside its window makes it
    positive as soon as it is seen, instead of once the watermark has passed it (modes
    ``wait`` and ``early_negative``; see the README, labels).

    >>> LabelConfig().window_ms
    1800000
    >>> LabelConfig(mode="early_negative").mode
    'early_negative'
    >>> LabelConfig(mode="soon")
    Traceback (most recent call last):
    ...
    ValueError: mode must be one of ('wait', 'early_negative', 'observe_then_correct'), got 'soon'
    >>> LabelConfig(mode="observe_then_correct", window_ms=60_000, observe_ms=60_000)
    Traceback (most recent call last):
    ...
    ValueError: observe_ms (60000) must be < window_ms (60000) in mode 'observe_then_correct'
    """

    window_ms: int = 1_800_000
    skew_ms: int = 5_000
    mode: LabelMode = "wait"
    observe_ms: int = 60_000
    late_horizon_ms: int = 3_600_000
    provisional_examples: bool = False
    eager_clicks: bool = False

    def __post_init__(self) -> None:
        _check_int("window_ms", self.window_ms, positive=True)
        _check_int("skew_ms", self.skew_ms, positive=False)
        _check_int("observe_ms", self.observe_ms, positive=True)
        _check_int("late_horizon_ms", self.late_horizon_ms, positive=False)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.mode == MODE_OBSERVE_THEN_CORRECT and self.observe_ms >= self.window_ms:
            raise ValueError(
                f"observe_ms ({self.observe_ms}) must be < window_ms ({self.window_ms})"
                f" in mode {self.mode!r}"
            )
        if not isinstance(self.eager_clicks, bool):
            raise ValueError(f"eager_clicks must be a bool, got {self.eager_clicks!r}")
        if not isinstance(self.provisional_examples, bool):
            raise ValueError(
                f"provisional_examples must be a bool, got {self.provisional_examples!r}"
            )
