"""Fast decoding of input records with msgspec; the contract of :mod:`events.contracts`.

The workers decode every input record here: msgspec validates types and ranges in C
(about ten times faster than decoding to dicts and checking fields in Python). A
record msgspec refuses is decoded again by :mod:`events.contracts`, whose verdict
counts and whose message is the reason written to ``dead-letters``. So both paths
accept exactly the same records (a hypothesis test compares them on generated and
mutated inputs) and a reason reads the same whatever found the problem.

A null value (a Kafka tombstone) or an empty one is refused with its own reason.

msgspec skips unknown fields (and keeps ``features`` raw) without the checks orjson
makes on every value (UTF-8, lone surrogates, numbers that overflow a double), and
recurses without a depth limit of its own. So a record goes to msgspec only once
orjson has read it and it has at most :data:`~events.contracts.MAX_DEPTH` brackets
(:func:`_plain`, ~1 us, cheaper than any regex over the bytes); anything else is
decided by the contract path, so nothing the contract refuses reaches an output raw.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
import orjson

from events.contracts import (
    MAX_DEPTH,
    MAX_ID_LEN,
    MAX_RECORD_BYTES,
    MAX_TS_MS,
    MIN_TS_MS,
    Click,
    ContractError,
    decode_click,
    decode_prediction,
)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LEN)]
Ts = Annotated[int, msgspec.Meta(ge=MIN_TS_MS, lt=MAX_TS_MS)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]

#: Reasons for values that are not a record at all.
NULL_VALUE: Final = "null value (a Kafka tombstone): expected a JSON object"


class PredictionIn(msgspec.Struct, gc=False, omit_defaults=True):
    """A valid ``predictions`` record (see README, topic contracts)."""

    prediction_id: Id
    request_id: Id
    user_id: Id
    item_id: Id
    model_id: Id
    score: Unit
    ts: Ts
    #: larger ones are decided by the contract (orjson reads up to 2**64 - 1 as an int)
    position: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None = None
    propensity: Unit | None = None
    features: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    served: bool | None = None


class ClickIn(msgspec.Struct, gc=False, omit_defaults=True):
    """A valid ``clicks`` record."""

    user_id: Id
    item_id: Id
    ts: Ts
    click_id: Id | None = None
    request_id: Id | None = None
    prediction_id: Id | None = None

    def to_click(self) -> Click:
        """The same click as :class:`events.contracts.Click`.

        >>> ClickIn("u", "i", 1_700_000_000_000).to_click().user_id
        'u'
        """
        return Click(self.user_id, self.item_id, self.ts, self.click_id, self.request_id,
                     self.prediction_id)


_PREDICTIONS = msgspec.json.Decoder(PredictionIn)
_CLICKS = msgspec.json.Decoder(ClickIn)
encode = msgspec.json.Encoder().encode


def _precise_prediction(raw: bytes) -> PredictionIn:
    """What :mod:`events.contracts` makes of a record msgspec refused (its reason, if any).

    msgspec refuses a few records the contract accepts (a repeated key whose first
    value is invalid: the last one counts); those are taken as the contract says.
    """
    p = decode_prediction(raw)
    features: msgspec.Raw | msgspec.UnsetType = (
        msgspec.UNSET if p.features is None else msgspec.Raw(encode(p.features)))
    return PredictionIn(p.prediction_id, p.request_id, p.user_id, p.item_id, p.model_id,
                        p.score, p.ts, p.position, p.propensity, features, p.served)


def _precise_click(raw: bytes) -> ClickIn:
    """Like :func:`_precise_prediction`, for clicks."""
    c = decode_click(raw)
    return ClickIn(c.user_id, c.item_id, c.ts, c.click_id, c.request_id, c.prediction_id)


def _plain(data: bytes) -> bool:
    """Whether msgspec's verdict on ``data`` is the contract's (see the module doc).

    >>> _plain(b'{"a":[1]}'), _plain(b'{"a":1e400}'), _plain(b'{"a":"\\xff"}'), _plain(b"[" * 65)
    (True, False, False, False)
    """
    if data.count(b"{") + data.count(b"[") > MAX_DEPTH:
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _check(raw: bytes | None) -> bytes:
    if raw is None:
        raise ContractError(NULL_VALUE)
    if len(raw) > MAX_RECORD_BYTES:
        raise ContractError(f"record is {len(raw)} bytes, more than {MAX_RECORD_BYTES}")
    if not raw.strip():
        raise ContractError("empty value: expected a JSON object")
    return raw


def decode_prediction_in(raw: bytes | None) -> PredictionIn:
    """Decode a ``predictions`` value or raise :class:`ContractError` with the reason.

    >>> p = decode_prediction_in(b'{"prediction_id":"p","request_id":"r","user_id":"u",'
    ...     b'"item_id":"i","model_id":"m","score":1,"ts":1700000000000,"features":{"a":1}}')
    >>> p.score, bytes(p.features)
    (1.0, b'{"a":1}')
    >>> decode_prediction_in(None)
    Traceback (most recent call last):
    ...
    events.contracts.ContractError: null value (a Kafka tombstone): expected a JSON object
    """
    data = _check(raw)
    if not _plain(data):
        return _precise_prediction(data)
    try:
        rec = _PREDICTIONS.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _precise_prediction(data)
    if rec.features is not msgspec.UNSET:
        body = bytes(rec.features).lstrip()
        if body == b"null":
            rec.features = msgspec.UNSET
        elif not body.startswith(b"{"):
            raise ContractError("field 'features' must be an object")
        elif b"\n" in body or b"\r" in body:
            # kept raw, it goes into JSON lines: re-encoded without line breaks
            rec.features = msgspec.Raw(encode(msgspec.json.decode(body)))
    return rec


def decode_click_in(raw: bytes | None) -> ClickIn:
    """Decode a ``clicks`` value or raise :class:`ContractError` with the reason.

    >>> decode_click_in(b'{"user_id":"u","item_id":"i","ts":1700000000000}').item_id
    'i'
    >>> decode_click_in(b'{"user_id":"u","item_id":"i","ts":"x"}')
    Traceback (most recent call last):
    ...
    events.contracts.ContractError: field 'ts' must be an integer (epoch milliseconds), got str
    """
    data = _check(raw)
    if not _plain(data):
        return _precise_click(data)
    try:
        rec = _CLICKS.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _precise_click(data)
    return rec
