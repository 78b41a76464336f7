"""The label engine's records as JSON bytes (msgspec), and what it stores per prediction.

Output records (README, ``labels``): a label record; a training example (the
prediction's own fields, the label fields, ``freshet_features``); a late or extra
click (the prediction it belongs to plus the click); an unattributed click (the
click plus the reason). A shadow prediction's label and example carry ``served: false``
and, when final, ``served_prediction_id``. Stored records are what the label changelog keeps so a
restarted worker resumes exactly: one per remembered prediction, one per held click.
"""

from __future__ import annotations

from typing import Final

import msgspec

from events.contracts import SCHEMA_VERSION

_ENCODER = msgspec.json.Encoder()
encode = _ENCODER.encode


class LabelRecord(msgspec.Struct, gc=False):
    """A ``labels`` record.

    >>> encode(LabelRecord("p", "r", "u", "i", "m", 0.5, 0, "negative", 1, True, 10, 20,
    ...                    None, 10, 1))[:45]
    b'{"prediction_id":"p","request_id":"r","user_i'
    """

    prediction_id: str
    request_id: str
    user_id: str
    item_id: str
    model_id: str
    score: float
    label: int
    kind: str
    label_version: int
    final: bool
    prediction_ts: int
    label_ts: int
    delay_ms: int | None
    window_ms: int
    schema_version: int
    #: ``false`` on a shadow prediction's labels (absent on a served one's)
    served: bool | msgspec.UnsetType = msgspec.UNSET
    #: on a shadow's final label: its served twin's ``prediction_id`` (null: it had none)
    served_prediction_id: str | msgspec.UnsetType | None = msgspec.UNSET


class LabelTail(msgspec.Struct, gc=False):
    """The label fields a training example adds to the prediction's own fields.

    A shadow's ``served: false`` is one of its own fields already (never repeated).
    """

    label: int
    kind: str
    label_version: int
    final: bool
    prediction_ts: int
    label_ts: int
    delay_ms: int | None
    window_ms: int
    schema_version: int
    served_prediction_id: str | msgspec.UnsetType | None = msgspec.UNSET


class ClickOnPrediction(msgspec.Struct, gc=False):
    """A ``late_click`` / ``extra_click`` record: the prediction it belongs to + the click."""

    kind: str
    prediction_id: str
    request_id: str
    user_id: str
    item_id: str
    model_id: str
    prediction_ts: int
    click_ts: int
    delay_ms: int
    window_ms: int
    label: int | None
    click: msgspec.Raw
    schema_version: int = SCHEMA_VERSION


def unattributed(click_json: bytes, reason: str) -> bytes:
    """The click's own JSON object plus the reason it matched no prediction.

    >>> unattributed(b'{"user_id":"u","item_id":"i","ts":5}', "no_prediction")
    b'{"user_id":"u","item_id":"i","ts":5,"reason":"no_prediction","schema_version":1}'
    """
    return (click_json[:-1] + b',"reason":' + encode(reason)
            + b',"schema_version":' + str(SCHEMA_VERSION).encode() + b"}")


def training_example(fields_json: bytes, tail: bytes, user: bytes | None,
                     item: bytes | None) -> bytes:
    """Prediction fields + label fields + ``freshet_features`` as one JSON object.

    ``fields_json`` and ``tail`` are JSON objects' insides (no braces).

    >>> training_example(b'"prediction_id":"p"', b'"label":0', b'{"a":1}', None)
    b'{"prediction_id":"p","label":0,"freshet_features":{"user":{"a":1},"item":null}}'
    """
    return b"".join((b"{", fields_json, b",", tail, b',"freshet_features":{"user":',
                     user or b"null", b',"item":', item or b"null", b"}}"))


class StoredPrediction(msgspec.Struct, gc=False, array_like=True):
    """A remembered prediction as the label changelog keeps it."""

    prediction_id: str
    request_id: str
    user_id: str
    item_id: str
    model_id: str
    score: float
    ts: int
    served: bool
    fields: msgspec.Raw
    #: JSON objects, or ``null``
    user: msgspec.Raw
    item: msgspec.Raw
    waiting: msgspec.Raw
    final: bool
    label: int
    version: int
    observed: bool
    click_ts: int | None
    extra: int
    late: int
    #: a shadow's twin: null while not looked for (and on served rows), "" when it has
    #: none, else the served twin's prediction_id (absent in records of older versions)
    twin: str | None = None


class StoredHeld(msgspec.Struct, gc=False, array_like=True):
    """A held click (not attributed yet) as the label changelog keeps it."""

    seq: int
    due_ms: int
    click: msgspec.Raw


#: Changelog key prefixes: a prediction, a held click, the engine's counters.
PREDICTION_KEY: Final = b"P"
HELD_KEY: Final = b"H"
META_KEY: Final = b"M"

decode_prediction = msgspec.json.Decoder(StoredPrediction).decode
decode_held = msgspec.json.Decoder(StoredHeld).decode
