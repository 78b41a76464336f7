"""The feature catalog: which features freshet computes for users and items.

Feature names are a contract with model servers and training jobs.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.timing import DAY_MS, HOUR_MS, MINUTE_MS
from features.featureset import FeatureSet
from features.spec import (
    Aggregation,
    Count,
    DecayedCount,
    DistinctCount,
    FeatureSpec,
    SessionDuration,
    SessionEvents,
    SmoothedCtr,
    TimeSinceLast,
    TrendRatio,
)

#: Window length of each window suffix used in feature names.
WINDOWS_MS = {"1m": MINUTE_MS, "5m": 5 * MINUTE_MS, "1h": HOUR_MS, "24h": DAY_MS}


@dataclass(frozen=True)
class Catalog:
    """The user and item feature sets that the workers and the replay runner execute.

    >>> c = first_feature_catalog()
    >>> (c.user.names, c.item.names)
    (('clicks_5m',), ())
    """

    user: FeatureSet
    item: FeatureSet

    def __post_init__(self) -> None:
        if not isinstance(self.user, FeatureSet) or self.user.entity != "user":
            raise ValueError(f"Catalog.user must be a user FeatureSet, got {self.user!r}")
        if not isinstance(self.item, FeatureSet) or self.item.entity != "item":
            raise ValueError(f"Catalog.item must be an item FeatureSet, got {self.item!r}")


def _spec(entity: str, name: str, source: str, window: str | None, agg: Aggregation) -> FeatureSpec:
    window_ms = None if window is None else WINDOWS_MS[window]
    return FeatureSpec(name, 1, entity, source, window_ms, agg)


def _counts(entity: str, prefix: str, source: str, windows: tuple[str, ...]) -> list[FeatureSpec]:
    return [_spec(entity, f"{prefix}_{w}", source, w, Count()) for w in windows]


def default_catalog(
    ctr_prior_clicks: float = 1.0, ctr_prior_non_clicks: float = 19.0
) -> Catalog:
    """Every built-in user and item feature; CTR priors default to a 5 % prior CTR.

    >>> c = default_catalog()
    >>> c.user.names[:4], c.item.names[-2:]
    (('clicks_1m', 'clicks_5m', 'clicks_1h', 'clicks_24h'), ('clicks_decayed_15m', 'trend_ratio'))
    """
    ctr = SmoothedCtr(ctr_prior_clicks, ctr_prior_non_clicks)
    user = [
        *_counts("user", "clicks", "clicks", ("1m", "5m", "1h", "24h")),
        *_counts("user", "impressions", "predictions", ("5m", "1h", "24h")),
        _spec("user", "ctr_1h", "any", "1h", ctr),
        _spec("user", "ctr_24h", "any", "24h", ctr),
        _spec("user", "ms_since_last_click", "clicks", None, TimeSinceLast()),
        _spec("user", "distinct_items_clicked_1h", "clicks", "1h", DistinctCount("item_id")),
        _spec("user", "session_events", "any", None, SessionEvents()),
        _spec("user", "session_duration_ms", "any", None, SessionDuration()),
        _spec("user", "clicks_decayed_10m", "clicks", None, DecayedCount(10 * MINUTE_MS)),
    ]
    item = [
        *_counts("item", "impressions", "predictions", ("5m", "1h", "24h")),
        *_counts("item", "clicks", "clicks", ("5m", "1h", "24h")),
        _spec("item", "ctr_1h", "any", "1h", ctr),
        _spec("item", "ctr_24h", "any", "24h", ctr),
        _spec("item", "clicks_decayed_15m", "clicks", None, DecayedCount(15 * MINUTE_MS)),
        _spec("item", "trend_ratio", "clicks", None, TrendRatio(15 * MINUTE_MS, DAY_MS)),
    ]
    return Catalog(user=FeatureSet("user", user), item=FeatureSet("item", item))


def first_feature_catalog() -> Catalog:
    """The foundation's first feature only: user ``clicks_5m``; no item features.

    >>> first_feature_catalog().user.specs[0].state_key
    'clicks_5m@v1/300000'
    """
    clicks_5m = _spec("user", "clicks_5m", "clicks", "5m", Count())
    return Catalog(user=FeatureSet("user", [clicks_5m]), item=FeatureSet("item", []))


def load_catalog(reference: str) -> Catalog:
    """The catalog named ``package.module:attribute`` (a Catalog or a function returning one).

    This is how users bring their own features (``FRESHET_CATALOG``): the module
    lives in their own code, importable on the worker's ``PYTHONPATH``. Every
    problem raises a ``ValueError`` that says what to fix.

    >>> load_catalog("features.catalog:first_feature_catalog").user.names
    ('clicks_5m',)
    >>> load_catalog("features.catalog")
    Traceback (most recent call last):
    ...
    ValueError: catalog reference 'features.catalog' must look like package.module:attribute
    """
    import importlib

    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(
            f"catalog reference {reference!r} must look like package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import catalog module {module_name!r}: "
                         f"{type(exc).__name__}: {exc}") from exc
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if callable(found) and not isinstance(found, Catalog):
        try:
            found = found()
        except Exception as exc:
            raise ValueError(f"building the catalog {reference!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(found, Catalog):
        raise ValueError(f"{reference!r} is a {type(found).__name__}, not a "
                         "features.catalog.Catalog (or a function returning one)")
    return found
