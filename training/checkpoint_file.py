"""The trainer's checkpoint file format, as bytes (the caller writes them atomically).

``freshet-train-checkpoint 1\\n``, then one JSON line ``{"record": <the version record,
position included>, "input": <what the position refers to>, "state_sha256": ...}``,
then the :class:`~training.trainer.ContinualTrainer` state bytes (a pickle: load only
files this process family wrote).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from training.trainer import Checkpoint

MAGIC = b"freshet-train-checkpoint 1\n"


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """The latest checkpoint: its version record, the input's identity, the trainer state.

    >>> sc = StoredCheckpoint({"version": 2, "position": {}}, {"kind": "files"}, b"state")
    >>> StoredCheckpoint.from_bytes(sc.to_bytes()) == sc, sc.version
    (True, 2)
    >>> StoredCheckpoint({"version": 0, "position": {}}, {}, b"")
    Traceback (most recent call last):
    ...
    ValueError: checkpoint record version must be an integer >= 1, got 0
    """

    record: dict[str, Any]
    input: dict[str, Any]
    state: bytes

    def __post_init__(self) -> None:
        version = self.record.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"checkpoint record version must be an integer >= 1, got {version!r}")
        if not isinstance(self.record.get("position"), dict):
            raise ValueError("checkpoint record has no position object")
        if not isinstance(self.input, dict):
            raise ValueError("checkpoint input must be an object")

    @property
    def version(self) -> int:
        """The version number.

        >>> StoredCheckpoint({"version": 3, "position": {}}, {}, b"").version
        3
        """
        return int(self.record["version"])

    @classmethod
    def of(cls, checkpoint: Checkpoint, input_desc: dict[str, Any]) -> StoredCheckpoint:
        """What to store of a trainer checkpoint read from ``input_desc``.

        >>> from training.trainer import ModelVersion
        >>> v = ModelVersion(1, None, 5, None, None, {}, 1, True, "r", {"line": 4}, "x")
        >>> StoredCheckpoint.of(Checkpoint(v, b"m", b"s"), {}).record["position"]
        {'line': 4}
        """
        return cls(checkpoint.record, input_desc, checkpoint.state)

    def to_bytes(self) -> bytes:
        """The file's bytes.

        >>> StoredCheckpoint({"version": 1, "position": {}}, {}, b"").to_bytes()[:24]
        b'freshet-train-checkpoint'
        """
        header = {"record": self.record, "input": self.input,
                  "state_sha256": hashlib.sha256(self.state).hexdigest()}
        return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + self.state

    @classmethod
    def from_bytes(cls, data: bytes) -> StoredCheckpoint:
        """Parse and verify a file's bytes; ValueError saying what is wrong.

        >>> StoredCheckpoint.from_bytes(b"junk")
        Traceback (most recent call last):
        ...
        ValueError: not a freshet trainer checkpoint
        >>> good = StoredCheckpoint({"version": 1, "position": {}}, {}, b"abc").to_bytes()
        >>> StoredCheckpoint.from_bytes(good[:-1])
        Traceback (most recent call last):
        ...
        ValueError: the trainer state does not match its checksum
        """
        if not data.startswith(MAGIC):
            raise ValueError("not a freshet trainer checkpoint")
        head, sep, state = data[len(MAGIC):].partition(b"\n")
        try:
            header = json.loads(head)
            record, input_desc, digest = header["record"], header["input"], header["state_sha256"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable checkpoint header: {exc}") from None
        if not sep or hashlib.sha256(state).hexdigest() != digest:
            raise ValueError("the trainer state does not match its checksum")
        return cls(record, input_desc, state)
