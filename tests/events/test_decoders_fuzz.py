"""Fuzzing the input decoders: nothing but ContractError, and the contract's own verdict.

Every input is run through all four decoders (the fast msgspec ones the workers use
and the precise ones of events.contracts, for both topics: a prediction is also
shaped like a click) and compared with ``contract_oracle``, a plain-Python (stdlib
json) restatement of the README's contract: the same verdict, the same decoded
fields when valid, a non-empty reason when not, and no other exception ever. Inputs:
arbitrary bytes, arbitrary JSON values (hypothesis ``recursive``), valid records
with fields replaced by odd values, and byte-level mutations of valid records.
Hypothesis runs derandomized with bounded example counts, so CI sees the same
inputs every time in a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.contracts import Click, ContractError, Prediction, decode_click, decode_prediction
from events.decode import ClickIn, PredictionIn, decode_click_in, decode_prediction_in
from tests.events import contract_oracle as oracle

FUZZ = settings(derandomize=True, max_examples=500, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TS = 1_767_225_600_000
PRED = {"prediction_id": "p1", "request_id": "r1", "user_id": "u1", "item_id": "i1",
        "model_id": "m1", "score": 0.3, "ts": TS}


def norm(value: Any) -> Any:
    """Integers beyond 64 bits as doubles (how JSON parsers read them), at any depth."""
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items()}
    if isinstance(value, list):
        return [norm(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
        return float(value)
    return value


def prediction_view(p: PredictionIn | Prediction) -> dict[str, Any]:
    features: Any = p.features
    if isinstance(p, PredictionIn):
        features = None if features is msgspec.UNSET else json.loads(bytes(features))
    return {"prediction_id": p.prediction_id, "request_id": p.request_id,
            "user_id": p.user_id, "item_id": p.item_id, "model_id": p.model_id,
            "score": p.score, "ts": p.ts, "position": p.position, "propensity": p.propensity,
            "features": norm(features), "served": p.served}


def click_view(c: ClickIn | Click) -> dict[str, Any]:
    return {"user_id": c.user_id, "item_id": c.item_id, "ts": c.ts, "click_id": c.click_id,
            "request_id": c.request_id, "prediction_id": c.prediction_id}


Decoder = Callable[[bytes | None], Any]
CHECKS: list[tuple[tuple[Decoder, ...], Callable[[bytes | None], dict[str, Any]],
                   Callable[[Any], dict[str, Any]]]] = [
    ((decode_prediction_in, decode_prediction), oracle.prediction, prediction_view),
    ((decode_click_in, decode_click), oracle.click, click_view),
]


def agree(raw: bytes | None) -> None:
    """All four decoders give the oracle's verdict; only ContractError is ever raised."""
    for decoders, want_of, view in CHECKS:
        try:
            want: dict[str, Any] | None = want_of(raw)
            if want is not None and want.get("features") is not None:
                want["features"] = norm(want["features"])
        except oracle.Invalid:
            want = None
        for decode in decoders:
            try:
                got: dict[str, Any] | None = view(decode(raw))
            except ContractError as exc:
                assert isinstance(exc.reason, str) and exc.reason, raw
                got = None
            assert got == want, (decode.__name__, raw[:300] if raw else raw, got, want)


# -- strategies ---------------------------------------------------------------------

TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "x" * 256, "x" * 257, "\ud800",
                                                         "\udc00x", "é", "\u2028", "\x00"]))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), TEXT,
    st.sampled_from([TS, 0, -1, 1, 2**63, 2**64 - 1, 2**64, 0.0, -0.0, 1.0, 1.5, 1e308,
                     946_684_800_000, 946_684_799_999, 4_102_444_800_000]))
JSON = st.recursive(SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(TEXT, kids, max_size=4)), max_leaves=24)
IDS = st.text(st.characters(codec="utf-8"), min_size=1, max_size=256)
#: JSON a valid record may carry (logged features): finite, 64-bit integers, real text
VALID_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
              st.floats(allow_nan=False, allow_infinity=False), st.text(st.characters(
                  codec="utf-8"), max_size=8)),
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.text(max_size=6), kids, max_size=3)),
    max_leaves=12)
FIELDS = [*PRED, "position", "propensity", "features", "served", "click_id", "extra"]


@st.composite
def valid_prediction(draw: st.DrawFn) -> dict[str, Any]:
    rec: dict[str, Any] = {name: draw(IDS) for name in PRED if name.endswith("_id")}
    rec["score"] = draw(st.floats(0, 1))
    rec["ts"] = draw(st.integers(oracle.TS_MIN, oracle.TS_MAX - 1))
    optional = {"position": st.integers(0, 2**64 - 1), "propensity": st.floats(0, 1),
                "features": st.dictionaries(st.text(max_size=6), VALID_JSON, max_size=3),
                "served": st.booleans(), "click_id": IDS}
    for name, values in optional.items():
        if draw(st.booleans()):
            rec[name] = draw(values)
    return rec


def dumps(draw: Callable[[st.SearchStrategy[Any]], Any], obj: Any) -> bytes:
    """JSON text as varied producers write it: escaped or raw UTF-8, spaced or compact."""
    text = json.dumps(obj, allow_nan=True, ensure_ascii=draw(st.booleans()),
                      indent=draw(st.sampled_from([None, 1])))
    return text.encode("utf-8", "surrogatepass")  # a raw lone surrogate: invalid UTF-8


@st.composite
def odd_records(draw: st.DrawFn) -> bytes:
    """A valid record with some fields removed, replaced by odd values, or repeated."""
    rec = draw(valid_prediction())
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()) and name in rec:
            del rec[name]
        else:
            rec[name] = draw(JSON)
    raw = dumps(draw, rec)
    if draw(st.booleans()) and rec:  # a repeated field: the last one counts
        raw = raw.rstrip()[:-1] + b', "' + next(iter(rec)).encode() + b'": ' + dumps(
            draw, draw(SCALARS)) + b"}"
    return raw


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """Byte-level damage to a valid record: flips, JSON-significant inserts, cuts, repeats."""
    data = bytearray(dumps(draw, draw(valid_prediction())))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "insert", "delete", "repeat", "truncate"]))
        if op == "flip" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\",
                                              b"e999", b"NaN", b"-", b"0", b"\xff", b"\\ud800",
                                              b"\x00", b" ", b"null", b"9" * 25]))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        elif op == "repeat":
            data[i:i] = data[i:i + draw(st.integers(1, 40))]
        else:
            del data[i:]
    return bytes(data)


# -- properties ---------------------------------------------------------------------

@FUZZ
@given(raw=st.one_of(st.binary(max_size=120), st.none()))
def test_arbitrary_bytes(raw: bytes | None) -> None:
    agree(raw)


@FUZZ
@given(value=JSON, data=st.data())
def test_arbitrary_json_values(value: Any, data: st.DataObject) -> None:
    agree(dumps(data.draw, value))


@FUZZ
@given(raw=odd_records())
def test_valid_records_with_odd_fields(raw: bytes) -> None:
    agree(raw)


@FUZZ
@given(raw=mutated())
def test_mutated_records(raw: bytes) -> None:
    agree(raw)


@settings(derandomize=True, max_examples=300, deadline=None, database=None)
@given(rec=valid_prediction(), data=st.data())
def test_valid_records_decode_to_their_fields(rec: dict[str, Any],
                                              data: st.DataObject) -> None:
    """The generator of valid records really makes valid ones (the fuzzing's baseline)."""
    raw = dumps(data.draw, rec)
    assert prediction_view(decode_prediction_in(raw)) == {
        **{k: rec.get(k) for k in ("prediction_id", "request_id", "user_id", "item_id",
                                   "model_id", "ts", "position", "propensity", "served")},
        "score": float(rec["score"]), "features": norm(rec.get("features"))}
    agree(raw)


def nest(depth: int) -> bytes:
    """A valid prediction whose ``features`` make the record ``depth`` levels deep."""
    body = json.dumps(PRED)[:-1].encode()
    return body + b', "features": ' + b'{"a": ' * (depth - 1) + b"1" + b"}" * depth


# Hand-written verdicts, the inputs that once got past a decoder (see the report of
# issue 9) among them; the oracle itself is checked against them too.
TABLE: list[tuple[str, bytes | None, str | None]] = [
    ("tombstone", None, "null value"),
    ("objects-10000-deep (was RecursionError)", b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
     "not valid JSON"),
    ("arrays-10000-deep", b"[" * 10_000 + b"]" * 10_000, "not valid JSON"),
    ("64 levels", nest(64), None),
    ("65 levels", nest(65), "nested deeper than 64 levels"),
    ("overflow in multiline features (was ValidationError)",
     json.dumps(PRED)[:-1].encode() + b', "features": {\n"x": 1e999}}', "not valid JSON"),
    ("overflow in an unknown field (was accepted)",
     json.dumps(PRED)[:-1].encode() + b', "x": 1e999}', "not valid JSON"),
    ("huge integer in an unknown field (was accepted)",
     json.dumps(PRED)[:-1].encode() + b', "x": ' + b"9" * 400 + b"}", "not valid JSON"),
    ("non-UTF-8 in an unknown field (was accepted)",
     json.dumps(PRED)[:-1].encode() + b', "x": "caf\xe9"}', "not valid JSON"),
    ("non-UTF-8 in features (was accepted, then copied raw into outputs)",
     json.dumps(PRED)[:-1].encode() + b', "features": {"x": "\xff"}}', "not valid JSON"),
    ("position 2**64 (was accepted by the fast decoder)",
     json.dumps({**PRED, "position": 2**64}).encode(), "field 'position'"),
    ("position 2**64 - 1", json.dumps({**PRED, "position": 2**64 - 1}).encode(), None),
    ("NaN score", json.dumps({**PRED, "score": float("nan")}).encode(), "not valid JSON"),
    ("lone surrogate in an unknown field", json.dumps({**PRED, "x": "\ud800"}).encode(),
     "not valid JSON"),
]


@pytest.mark.parametrize(("raw", "reason"), [(r, why) for _, r, why in TABLE],
                         ids=[name for name, _, _ in TABLE])
def test_known_inputs(raw: bytes | None, reason: str | None) -> None:
    try:
        oracle.prediction(raw)
        valid = True
    except oracle.Invalid:
        valid = False
    assert valid == (reason is None)
    for decode in (decode_prediction_in, decode_prediction):
        if reason is None:
            decode(raw)
        else:
            with pytest.raises(ContractError) as err:
                decode(raw)
            assert err.value.reason.startswith(reason), err.value.reason
    agree(raw)
