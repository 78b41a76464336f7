"""What the engine's partitions take and give: input batches, outputs, state deltas.

Outputs name a *logical* topic (``features_user``, ``labels``, ``dead_letters``, the
internal ``items_repartition`` / ``item_snapshots``...); the stream layer maps them
to broker topics, the replay runner to files. Deltas are changelog records of one
state (``user``, ``item`` or ``label``) of one partition: a key and its new value,
or None to delete it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Final, Literal, NamedTuple

import msgspec
import numpy as np
import numpy.typing as npt

from events.contracts import SCHEMA_VERSION

StateName = Literal["user", "item", "label"]

#: Key of a partition's own bookkeeping (watermarks) in its feature changelog:
#: not UTF-8, so no entity id (a JSON string) can ever be this key.
META_KEY: Final = b"\xff\xffmeta"

#: Largest value of one batched internal message (the broker default max is 1 MiB).
MAX_FRAME_BYTES: Final = 512 * 1024


class Out(NamedTuple):
    """A record to publish on a logical topic (partition None: by key)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None


class Delta(NamedTuple):
    """A changelog record of one state of one partition (value None: delete the key)."""

    state: StateName
    partition: int
    key: bytes
    value: bytes | None


@dataclass(slots=True)
class Result:
    """What processing produced: outputs (in order) and state deltas."""

    outputs: list[Out] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)

    def extend(self, other: Result) -> None:
        """Append another result's outputs and deltas."""
        self.outputs.extend(other.outputs)
        self.deltas.extend(other.deltas)


@dataclass(slots=True)
class InputBatch:
    """One partition's input records in the order they were consumed.

    ``source`` codes: 0 clicks, 1 predictions (:data:`features.batch.SOURCE_CODES`).
    """

    source: npt.NDArray[np.int8]
    offset: npt.NDArray[np.int64]
    keys: list[bytes | None]
    values: list[bytes | None]

    def __len__(self) -> int:
        return len(self.values)


class _Source(msgspec.Struct):
    topic: str
    logical: str
    partition: int
    offset: int


class _DeadLetter(msgspec.Struct):
    schema_version: int
    reason: str
    source: _Source
    key_b64: str | None
    value_b64: str | None
    value_text: str | None


_encode = msgspec.json.Encoder().encode


def dead_letter(topic: str, logical: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, reason: str) -> Out:
    """The ``dead-letters`` record for an input that could not be used.

    >>> import orjson
    >>> out = dead_letter("t.clicks", "clicks", 2, 9, b"u1", b"oops", "not valid JSON")
    >>> orjson.loads(out.value)["source"], out.key
    ({'topic': 't.clicks', 'logical': 'clicks', 'partition': 2, 'offset': 9}, b'u1')
    """
    text: str | None
    try:
        text = None if value is None else value.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    body = _DeadLetter(
        SCHEMA_VERSION, reason, _Source(topic, logical, partition, offset),
        None if key is None else base64.b64encode(key).decode(),
        None if value is None else base64.b64encode(value).decode(), text)
    return Out("dead_letters", key, _encode(body))
