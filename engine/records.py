"""What the engine's partitions take and give: input batches, outputs, state deltas.

Outputs name a *logical* topic (``features_user``, ``labels``, ``dead_letters``, the
internal ``items_repartition`` / ``item_snapshots``...); the stream layer maps them
to broker topics, the replay runner to files. Deltas are changelog records of one
state (``user``, ``item`` or ``label``) of one partition: a key and its new value,
or None to delete it.
"""

from __future__ import annotations

import base64
import contextlib
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


class _DeadLetter(msgspec.Struct, omit_defaults=True):
    schema_version: int
    reason: str
    source: _Source
    key_b64: str | None
    value_b64: str | None
    value_text: str | None
    #: only when the raw key / value was cut (to its first DEAD_LETTER_*_BYTES): its size
    key_size: int | None = None
    value_size: int | None = None


_encode = msgspec.json.Encoder().encode

#: The raw bytes a dead letter keeps whole. Beyond them it keeps a prefix and the size:
#: an input can be as large as the broker allows (1 MiB by default), and its dead
#: letter (base64, plus the text) must still fit in one message, or the transaction
#: carrying it would fail, abort and be retried forever on the same input.
DEAD_LETTER_VALUE_BYTES: Final = 256 * 1024
DEAD_LETTER_KEY_BYTES: Final = 4 * 1024
#: The value is also given as text when it is UTF-8 and at most this long (JSON
#: escaping can make text six times longer).
DEAD_LETTER_TEXT_BYTES: Final = 64 * 1024


def dead_letter(topic: str, logical: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, reason: str) -> Out:
    """The ``dead-letters`` record for an input that could not be used.

    >>> import orjson
    >>> out = dead_letter("t.clicks", "clicks", 2, 9, b"u1", b"oops", "not valid JSON")
    >>> orjson.loads(out.value)["source"], out.key
    ({'topic': 't.clicks', 'logical': 'clicks', 'partition': 2, 'offset': 9}, b'u1')
    >>> big = orjson.loads(dead_letter("t", "clicks", 0, 1, None, b"x" * 10**6, "big").value)
    >>> big["value_size"], len(base64.b64decode(big["value_b64"])), big["value_text"]
    (1000000, 262144, None)
    """
    text: str | None = None
    if value is not None and len(value) <= DEAD_LETTER_TEXT_BYTES:
        with contextlib.suppress(UnicodeDecodeError):
            text = value.decode("utf-8")
    kept_key = None if key is None else key[:DEAD_LETTER_KEY_BYTES]
    kept_value = None if value is None else value[:DEAD_LETTER_VALUE_BYTES]
    body = _DeadLetter(
        SCHEMA_VERSION, reason, _Source(topic, logical, partition, offset),
        None if kept_key is None else base64.b64encode(kept_key).decode(),
        None if kept_value is None else base64.b64encode(kept_value).decode(), text,
        key_size=None if key is None or kept_key == key else len(key),
        value_size=None if value is None or kept_value == value else len(value))
    return Out("dead_letters", kept_key, _encode(body))
