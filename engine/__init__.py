"""The engine: one execution of features and labels over columnar micro-batches.

Pure like ``features/`` and ``labels/`` (no Kafka, Faust or clock): the live workers
(:mod:`streams.worker`) feed it batches consumed from Kafka, ``freshet replay``
(:mod:`streams.replay`) batches read from files; both get the same outputs and
state deltas back. See :mod:`engine.users` (a user partition: decode, watermark,
user features, labels) and :mod:`engine.items` (an item partition behind the
repartition topic).
"""

from engine.items import ItemPartition
from engine.records import META_KEY, Delta, InputBatch, Out, Result, dead_letter
from engine.reports import label_reports
from engine.users import Counters, UserPartition

__all__ = [
    "META_KEY",
    "Counters",
    "Delta",
    "InputBatch",
    "ItemPartition",
    "Out",
    "Result",
    "UserPartition",
    "dead_letter",
    "label_reports",
]
