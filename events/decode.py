"""Fast decoding of input records with msgspec; the contract of :mod:`events.contracts`.

The workers decode every input record here: msgspec validates types and ranges in C
(about ten times faster than decoding to dicts and checking fields in Python). A
record msgspec refuses is decoded again by :mod:`events.contracts`, whose verdict
counts and whose message is the reason written to ``dead-letters``. So both paths
accept exactly the same records (a hypothesis test compares them on generated and
mutated inputs) and a reason reads the same whatever found the problem.

A null value (a Kafka tombstone) or an empty one is refused with its own reason.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from events.contracts import (
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
    position: Annotated[int, msgspec.Meta(ge=0)] | None = None
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


def _check(raw: bytes | None) -> bytes:
    if raw is None:
        raise ContractError(NULL_VALUE)
    if len(raw) > MAX_RECORD_BYTES:
        raise ContractError(f"record is {len(raw)} bytes, more than {MAX_RECORD_BYTES}")
    if not raw.strip():
        raise ContractError("empty value: expected a JSON object")
    return raw


def _valid_text(value: str) -> bool:
    # msgspec lets lone surrogates through ("\\ud800"); they cannot be encoded again
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


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
    if b"\\u" in data:  # an escape could be a lone surrogate, which msgspec lets through
        for text in (rec.prediction_id, rec.request_id, rec.user_id, rec.item_id,
                     rec.model_id):
            if not _valid_text(text):
                return _precise_prediction(data)
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
    try:
        rec = _CLICKS.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _precise_click(data)
    if b"\\u" in data:
        for text in (rec.user_id, rec.item_id, rec.click_id, rec.request_id,
                     rec.prediction_id):
            if text is not None and not _valid_text(text):
                return _precise_click(data)
    return rec
