"""Input records (``labels``, ``training-examples``) as typed events, and the output type.

Inputs are the plain dicts freshet publishes. Only final labels are used: a non-final
record parses to None. A record that breaks the contract raises ValueError naming the
field. ``served`` (optional, default True) is False for a shadow model's score.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import ItemsView, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

Topic = Literal["model-metrics", "model-comparisons", "model-routing", "drift", "retrain-triggers"]
TOPICS: tuple[Topic, ...] = (
    "model-metrics", "model-comparisons", "model-routing", "drift", "retrain-triggers",
)


@dataclass(frozen=True, slots=True)
class EvalOutput:
    """One record for the caller to publish on ``topic`` under ``key``.

    >>> EvalOutput("model-routing", "routing", {"weights": {"m": 1.0}}).key
    'routing'
    >>> EvalOutput("gossip", "k", {})
    Traceback (most recent call last):
    ...
    ValueError: topic must be one of ('model-metrics', 'model-comparisons', 'model-routing', \
'drift', 'retrain-triggers'), got 'gossip'
    """

    topic: Topic
    key: str
    record: dict[str, Any]

    def __post_init__(self) -> None:
        if self.topic not in TOPICS:
            raise ValueError(f"topic must be one of {TOPICS}, got {self.topic!r}")


@dataclass(frozen=True, slots=True)
class LabelEvent:
    """A final label: what the evaluator keeps of a ``labels`` record.

    >>> LabelEvent("p1", 1, "m", 0.25, 1, 1_000).served
    True
    """

    prediction_id: str
    label_version: int
    model_id: str
    score: float
    label: int
    prediction_ts: int
    served: bool = True


class _Pairs(ItemsView[str, float]):
    """A :class:`FeatureVector`'s items, iterated in one pass (not a lookup per name)."""

    _mapping: FeatureVector

    def __iter__(self) -> Iterator[tuple[str, float]]:
        return zip(self._mapping.names, self._mapping.floats, strict=True)


class FeatureVector(Mapping[str, float]):
    """A training example's numeric features: shared names and packed float64 values.

    An evaluator holds every example until its label matures -- in a backfill, a whole
    log of them: as a dict of new strings and floats one took ~3.2 KB, as this ~0.4 KB.

    >>> v = FeatureVector(("logged.x", "user.n"), array("d", [2.0, 3.0]))
    >>> v["user.n"], list(v.items()), v == {"logged.x": 2.0, "user.n": 3.0}
    (3.0, [('logged.x', 2.0), ('user.n', 3.0)], True)
    """

    __slots__ = ("floats", "names")

    def __init__(self, names: tuple[str, ...], values: array[float]) -> None:
        if len(names) != len(values):
            raise ValueError(f"{len(names)} names for {len(values)} values")
        self.names = names
        self.floats = values

    def __getitem__(self, name: str) -> float:
        try:
            return self.floats[self.names.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def items(self) -> _Pairs:
        """``(name, value)`` pairs in order."""
        return _Pairs(self)

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def __reduce__(self) -> tuple[type[FeatureVector], tuple[tuple[str, ...], array[float]]]:
        return FeatureVector, (self.names, self.floats)


#: Names kept shared (a flattened name per prefix and name, a tuple per name list), up
#: to this many each: feature names come from producers' records, so they are bounded.
SHARED_NAMES_MAX: Final = 4_096
_flat_names: dict[str, dict[str, str]] = {}  # per prefix (a few): name -> prefix + name
_name_lists: dict[tuple[str, ...], tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True)
class ExampleEvent:
    """A final training example: its label fields and its flattened numeric features.

    >>> ExampleEvent("p1", 1, "m", 0.5, 0, 1_000, True, {"logged.x": 2.0}).features
    {'logged.x': 2.0}
    """

    prediction_id: str
    label_version: int
    model_id: str
    score: float
    label: int
    prediction_ts: int
    served: bool
    features: Mapping[str, float]


def _str(rec: dict[str, Any], name: str) -> str:
    value = rec.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"field '{name}' must be a non-empty string, got {value!r}")
    return value


def _int(rec: dict[str, Any], name: str) -> int:
    value = rec.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field '{name}' must be an integer, got {value!r}")
    return value


def _bool(rec: dict[str, Any], name: str, default: bool | None = None) -> bool:
    value = rec.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"field '{name}' must be a bool, got {value!r}")
    return value


def _common(rec: dict[str, Any]) -> tuple[str, int, str, float, int, int, bool] | None:
    if not isinstance(rec, dict):
        raise ValueError(f"record must be a dict, got {type(rec).__name__}")
    if not _bool(rec, "final"):
        return None
    score = rec.get("score")
    if isinstance(score, bool) or not isinstance(score, int | float) or not (
        math.isfinite(score) and 0.0 <= score <= 1.0
    ):
        raise ValueError(f"field 'score' must be a number in [0, 1], got {score!r}")
    label = rec.get("label")
    if label not in (0, 1) or isinstance(label, float):
        raise ValueError(f"field 'label' must be 0 or 1, got {label!r}")
    return (_str(rec, "prediction_id"), _int(rec, "label_version"), _str(rec, "model_id"),
            float(score), int(label), _int(rec, "prediction_ts"), _bool(rec, "served", True))


def parse_label(rec: dict[str, Any]) -> LabelEvent | None:
    """The :class:`LabelEvent` of a ``labels`` record; None when it is not final.

    >>> rec = {"prediction_id": "p", "label_version": 1, "model_id": "m", "score": 0.5,
    ...        "label": 1, "prediction_ts": 10, "final": True}
    >>> parse_label(rec).label, parse_label({**rec, "final": False})
    (1, None)
    >>> parse_label({**rec, "score": 2})
    Traceback (most recent call last):
    ...
    ValueError: field 'score' must be a number in [0, 1], got 2
    """
    common = _common(rec)
    return None if common is None else LabelEvent(*common)


def _numeric(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value))


def flatten_features(rec: dict[str, Any]) -> dict[str, float]:
    """Numeric features of a training example: ``logged.<name>``, ``user.<name>``, ``item.<name>``.

    ``logged`` are the values the model logged (``features``); ``user``/``item`` are
    freshet's point-in-time values (``freshet_features[side]["features"]``). Null,
    boolean, non-finite and non-numeric values are skipped; a missing side is skipped.

    >>> flatten_features({"features": {"x": 1, "tag": "a", "b": True},
    ...                   "freshet_features": {"user": {"features": {"clicks_1h": 3,
    ...                                                             "age": None}},
    ...                                        "item": None}})
    {'logged.x': 1.0, 'user.clicks_1h': 3.0}
    """
    return dict(feature_vector(rec).items())


def feature_vector(rec: dict[str, Any]) -> FeatureVector:
    """:func:`flatten_features` as a :class:`FeatureVector` (how examples are held).

    >>> feature_vector({"features": {"x": 1}, "freshet_features": {"item": {
    ...     "features": {"n": 2.5, "t": float("nan")}}}})
    {'logged.x': 1.0, 'item.n': 2.5}
    """
    names: list[str] = []
    values: array[float] = array("d")
    logged = rec.get("features")
    if isinstance(logged, dict):
        _numeric_into(names, values, "logged.", logged)
    freshet = rec.get("freshet_features")
    if isinstance(freshet, dict):
        for side in ("user", "item"):
            snap = freshet.get(side)
            side_values = snap.get("features") if isinstance(snap, dict) else None
            if isinstance(side_values, dict):
                _numeric_into(names, values, f"{side}.", side_values)
    key = tuple(names)
    shared = _name_lists.get(key)
    if shared is None:
        shared = key
        if len(_name_lists) < SHARED_NAMES_MAX:
            _name_lists[key] = key
    return FeatureVector(shared, values)


def _numeric_into(names: list[str], out: array[float], prefix: str,
                  values: dict[str, Any]) -> None:
    isfinite = math.isfinite
    flat = _flat_names.get(prefix)
    if flat is None:
        flat = _flat_names[prefix] = {}
    for name, value in values.items():
        kind = type(value)
        if kind is float or kind is int:  # decoded JSON: exact types first
            if not isfinite(value):
                continue
        elif not _numeric(value):
            continue
        flat_name = flat.get(name)
        if flat_name is None:
            flat_name = prefix + name
            if len(flat) < SHARED_NAMES_MAX:
                flat[name] = flat_name
        names.append(flat_name)
        out.append(value)


def parse_example(rec: dict[str, Any]) -> ExampleEvent | None:
    """The :class:`ExampleEvent` of a ``training-examples`` record; None when not final.

    >>> rec = {"prediction_id": "p", "label_version": 1, "model_id": "m", "score": 0.5,
    ...        "label": 0, "prediction_ts": 10, "final": True, "features": {"x": 2}}
    >>> parse_example(rec).features
    {'logged.x': 2.0}
    """
    common = _common(rec)
    return None if common is None else ExampleEvent(*common, feature_vector(rec))
