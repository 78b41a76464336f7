"""Pure feature engine: declared features over tiled, event-time state, in columns.

No Kafka, Faust or clock here: time always comes in as integer milliseconds. A
feature is a :class:`FeatureSpec` whose :class:`~features.aggregation.Aggregation`
reads per-key :class:`~features.store.Store` s; a :class:`FeatureSet` plans one
entity's features over shared stores, and a :class:`~features.table.FeatureTable`
holds one partition's state in numpy columns and applies whole micro-batches at once.

Semantics
---------
- Each entity key (a user or an item) has one state. Its ``as_of_ts`` is the max
  event ``ts`` of all events (clicks and predictions) applied to it; every value is
  "as of" that time, and a record published because of an event includes that event.
- An impression is a prediction event (source ``"predictions"``); a click is an
  event of source ``"clicks"``; a spec with source ``"any"`` reads both.
- Sliding window of length ``W`` with tile size ``T`` (``T`` divides ``W`` and
  ``T <= W / 12``; by default ``T = W / 12``, so 1m -> 5 s, 5m -> 25 s, 1h -> 5 min,
  24h -> 2 h): the value as of ``t`` counts events with
  ``tile_start(t, T) - (W - T) <= ts <= t``, i.e. the ``W / T`` tiles ending with
  the (partial) tile that holds ``t``. Older tiles are dropped from state, so state
  per key stays bounded. An event whose tile is already outside the window of the
  current ``as_of_ts`` is ignored by that window: it could never count again.
  Lateness is the stream layer's job; this package never rejects an event.
- Counts are ints. Smoothed CTR over a window is
  ``(clicks + a) / (impressions + a + b)`` (a float; the prior ``a / (a + b)`` when
  empty). Distinct counts are exact over the same tiled window.
- Time since last event: ``as_of_ts - last event ts``; None when there was none.
- Sessions (both sources by default): consecutive events less than ``gap_ms``
  (30 min) apart are in one session; an event exactly ``gap_ms`` after the previous
  one starts a new one. ``session_events`` / ``session_duration_ms`` describe the
  session containing ``as_of_ts`` (count, last - first ts); 0 / None when none.
- Decayed count with half-life ``h``: ``sum(2 ** (-(t - ts) / h))`` over events with
  ``ts <= t``. Trend ratio: short over long decayed rate (rate = decayed count *
  ln 2 / half-life); None when the long decayed count is 0.
- Order independence: applying the same set of events in any order gives the same
  final values (exactly for counts, distinct counts and sessions; within 1e-9
  relative for decayed values). Sessions need every event to arrive at most
  ``horizon_ms`` (default 1 h; keep it >= the stream's allowed lateness) behind
  ``as_of_ts``: older arrivals are ignored by sessions, and sessions ending more than
  ``horizon_ms + gap_ms`` before ``as_of_ts`` are dropped from state. A caller that
  has a watermark (no event older than it will come) passes it to ``update``; then
  sessions keep everything an arrival at or after the watermark could still join, so
  they are order independent however far ``as_of_ts`` runs ahead of the watermark
  (as it does when one input topic is read ahead of the other).
- ``FeatureSet.state_name`` hashes the entity and every spec's full definition
  (state_key, source, tile, aggregation parameters), so a changed definition never
  resumes stale state.
- Batches: applying events in one batch or in many gives the same values; a
  point-in-time read at an event includes exactly the key's events up to it in
  arrival order.
"""

from features.aggregation import Aggregation, Values
from features.catalog import Catalog, default_catalog, first_feature_catalog, load_catalog
from features.featureset import FeatureSet
from features.spec import (
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
from features.store import Store
from features.table import FeatureTable

__all__ = [
    "Aggregation",
    "Catalog",
    "Count",
    "DecayedCount",
    "DistinctCount",
    "FeatureSet",
    "FeatureSpec",
    "FeatureTable",
    "SessionDuration",
    "SessionEvents",
    "SmoothedCtr",
    "Store",
    "TimeSinceLast",
    "TrendRatio",
    "Values",
    "default_catalog",
    "first_feature_catalog",
    "load_catalog",
]
