"""Catalogs the benchmarks run freshet with (``FRESHET_CATALOG=bench.catalogs:<name>``).

``same_job`` is the peers' job: per user, the events of both topics in a 5-minute
window sliding by 25 s (the Quix, Bytewax and Pathway apps in ``bench/``), here a
5-minute window of 12 tiles of 25 s.
"""

from __future__ import annotations

from features.aggregation import Count
from features.catalog import Catalog
from features.featureset import FeatureSet
from features.spec import FeatureSpec


def same_job() -> Catalog:
    """One user feature: events (clicks and predictions) in the last 5 minutes."""
    events_5m = FeatureSpec("events_5m", 1, "user", "any", 300_000, Count())
    return Catalog(user=FeatureSet("user", [events_5m]), item=FeatureSet("item", []))
