"""The batch processor the Faust agent (and the replay runner) drive.

It turns a batch of raw input records into state writes and output records, with no
Faust or Kafka in sight, so that the stream workers and ``freshet replay`` run
exactly the same code. Per batch, each touched key's state is written once and its
feature record published once (not once per event).

Exactly-once state under at-least-once delivery: every key's stored state remembers
the last input offset it has applied per source topic. A record redelivered after a
crash (its offset not yet committed) is recognised by that offset and not applied
again; its key's current state and record are re-sent instead, so that nothing the
crash cut off is lost and outputs stay idempotent (same key, same content).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from events.contracts import SCHEMA_VERSION, Click, ContractError, Prediction, decode_click, \
    decode_prediction
from events.timing import InputWatermark
from features.featureset import FeatureSet

log = logging.getLogger(__name__)

SOURCES = ("clicks", "predictions")
_DECODERS: dict[str, Callable[[bytes], Prediction | Click]] = {
    "clicks": decode_click,
    "predictions": decode_prediction,
}


@dataclass(slots=True)
class InputRecord:
    """One consumed Kafka record, as the processor needs it."""

    source: str  # logical topic: "clicks" or "predictions"
    topic: str  # the broker topic it came from
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class Output:
    """A record to publish on a logical topic."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class BatchResult:
    """What one batch produced: state writes per (partition, key) and output records."""

    writes: dict[tuple[int, str], bytes] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)


@dataclass(slots=True)
class Counters:
    """Running totals, exported as metrics and shown by the live summary."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    dead_letters: int = 0
    late_events: int = 0
    duplicates: int = 0
    features_published: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {"events": dict(self.events), "dead_letters": self.dead_letters,
                "late_events": self.late_events, "duplicates": self.duplicates,
                "features_published": dict(self.features_published)}


def dead_letter(rec: InputRecord, reason: str) -> Output:
    """The ``dead-letters`` record for an input that could not be used."""
    text: str | None
    try:
        text = rec.value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    body = {
        "schema_version": SCHEMA_VERSION,
        "reason": reason,
        "source": {"topic": rec.topic, "logical": rec.source, "partition": rec.partition,
                   "offset": rec.offset},
        "key_b64": None if rec.key is None else base64.b64encode(rec.key).decode(),
        "value_b64": base64.b64encode(rec.value).decode(),
        "value_text": text,
    }
    return Output("dead_letters", rec.key, orjson.dumps(body))


class EntityStates:
    """Decoded per-key state of one feature set, read through from the table."""

    def __init__(self, features: FeatureSet, read: Callable[[str], bytes | None]) -> None:
        self.features = features
        self._read = read

    def load(self, key: str) -> dict[str, Any]:
        raw = self._read(key)
        if raw is None:
            return {"f": self.features.new_state(), "o": {}}
        state: dict[str, Any] = orjson.loads(raw)
        return state


class FeatureProcessor:
    """Applies input batches to entity feature state; emits state writes and records."""

    def __init__(self, user_features: FeatureSet, read_user_state: Callable[[str], bytes | None],
                 allowed_lateness_ms: int) -> None:
        self.users = EntityStates(user_features, read_user_state)
        self.allowed_lateness_ms = allowed_lateness_ms
        self.watermarks: dict[int, InputWatermark] = {}
        self.counters = Counters()

    def watermark(self, partition: int) -> InputWatermark:
        """The partition's input watermark (created on first use)."""
        wm = self.watermarks.get(partition)
        if wm is None:
            wm = self.watermarks[partition] = InputWatermark(SOURCES, self.allowed_lateness_ms)
        return wm

    def process(self, batch: Sequence[InputRecord]) -> BatchResult:
        """Apply a batch of input records in order; see the module docstring."""
        result = BatchResult()
        dirty: dict[str, tuple[int, dict[str, Any]]] = {}
        features = self.users.features
        counters = self.counters
        for rec in batch:
            counters.events[rec.source] += 1
            try:
                event = _DECODERS[rec.source](rec.value)
            except ContractError as exc:
                counters.dead_letters += 1
                result.outputs.append(dead_letter(rec, exc.reason))
                continue
            wm = self.watermark(rec.partition)
            if wm.is_late(event.ts):
                counters.late_events += 1
                counters.dead_letters += 1
                result.outputs.append(dead_letter(
                    rec, f"late event: ts {event.ts} is behind the watermark {wm.value_ms} "
                         f"(allowed lateness {self.allowed_lateness_ms} ms)"))
                continue
            wm.observe(rec.source, event.ts)
            key = features.key_of(rec.source, event)
            entry = dirty.get(key)
            state = entry[1] if entry is not None else self.users.load(key)
            applied = state["o"].get(rec.source)
            if applied is not None and rec.offset <= applied:
                counters.duplicates += 1  # redelivered after a crash: re-send, not re-apply
            else:
                features.update(state["f"], rec.source, event)
                state["o"][rec.source] = rec.offset
            dirty[key] = (rec.partition, state)
        published = counters.features_published
        for key, (partition, state) in dirty.items():
            result.writes[(partition, key)] = orjson.dumps(state)
            record = features.record(key, state["f"])
            record["source"] = {"partition": partition, **state["o"]}
            result.outputs.append(Output("features_user", key.encode(), orjson.dumps(record)))
            published[features.entity] = published.get(features.entity, 0) + 1
        return result
