"""Periodic label reports: label watermarks per partition, click delays per model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from engine.records import Out
from engine.users import UserPartition
from events.contracts import SCHEMA_VERSION
from labels.delays import DelayStats

_encode = msgspec.json.Encoder().encode


def label_reports(partitions: Sequence[UserPartition]) -> list[Out]:
    """``label-watermarks`` per partition and ``model-metrics`` (click delays) per model.

    >>> label_reports([])
    []
    """
    out = []
    delays = DelayStats()
    for part in sorted(partitions, key=lambda p: p.partition):
        value = part.label_watermark_ms()
        if part.labels is not None:
            delays.merge(part.labels.delays)
        if value is None:
            continue
        record: dict[str, Any] = {"partition": part.partition, "label_watermark_ms": value,
                  "watermark_ms": part.watermark_ms, "schema_version": SCHEMA_VERSION}
        out.append(Out("label_watermarks", str(part.partition).encode(), _encode(record)))
    owned = sorted(p.partition for p in partitions)
    for model_id, stats in sorted(delays.snapshot().items()):
        metrics: dict[str, Any] = {"model_id": model_id, "click_delay": stats,
                                   "schema_version": SCHEMA_VERSION, "partitions": owned}
        out.append(Out("model_metrics", model_id.encode(), _encode(metrics)))
    return out
