"""Event token schema v1: JSON and packed round trips, the inputs that must be rejected, fuzzed decoders
that never raise anything but TokenError, the birth message, the shipped JSON Schemas, and the size
budget of a typical token (docs/tokens.md)."""

from __future__ import annotations

import functools
import json
import statistics
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boards.profiles import resolve
from edge.errors import TokenError
from edge.inference import Label
from edge.messages import Bearing, Event
from edge.token_codec import (
    PACKED_BYTE0,
    PACKED_MAX_BYTES,
    decode_json,
    decode_packed,
    device_tag,
    encode_json,
    encode_packed,
    label_table,
    topics,
    validate_token,
)
from edge.tokens import TokenBuilder, build_birth, validate_birth

MODEL_ID = "tympan-sed-s1-20261126"
LABELS = (
    Label(0, "/m/09x0r", "Speech"),
    Label(5, "/m/0463cq4", "Crying, sobbing"),
    Label(18, "/m/0bt9lr", "Dog"),
    Label(19, "/m/05tny_", "Bark"),
    Label(29, "/m/07qn5dc", "Crowing, cock-a-doodle-doo"),
)
WALL = 1795713338.833
JSON_BUDGET, PACKED_BUDGET = 250, 32


class FakeModel:
    id = MODEL_ID
    sha256 = "3aba79f7e4068c5bbfbb671e3f8d893b348bfeabfe971fdb33c5e6952cb3ed32"
    labels = LABELS


def birth_of(dev: str = "kitchen-pi", model_id: str = MODEL_ID) -> dict[str, Any]:
    m = FakeModel()
    m.id = model_id
    return build_birth(dev, "home", m, resolve("respeaker-4mic-hat", None), "0.1.0", t=WALL)


BIRTH = birth_of()


def event(phase: str = "off", code: int = 18, eid: int = 2, el: float | None = None, amb: bool = False) -> Event:
    lb = next(x for x in LABELS if x.index == code)
    return Event(id=eid, phase=phase, label=lb.name, mid=lb.mid, code=code, p=0.8734, onset=1.8,  # type: ignore[arg-type]
                 offset=2.12 if phase == "off" else None, emitted=2.4, seq=0, level_dbfs=-19.71,
                 bearings=(Bearing(59.04, el, 38.6, 1.0, amb),))  # fmt: skip


def sample_tokens() -> list[dict[str, Any]]:
    """Tokens of a scene like the bundled one: on/off pairs with az/dsd/lvl from a planar array."""
    tb = TokenBuilder("kitchen-pi", MODEL_ID, WALL)
    out = []
    for code, eid in ((18, 0), (19, 1), (29, 2), (5, 3)):
        out += [tb.build(event("on", code, eid)), tb.build(event("off", code, eid))]
    return out


def packed_fields_close(a: dict[str, Any], b: dict[str, Any]) -> None:
    """`b` (decoded from packed) equals `a` up to the resolutions of docs/tokens.md."""
    for k in ("v", "dev", "seq", "id", "ph", "t0", "t1", "lbl", "mid", "c", "m", "trk"):
        assert a.get(k) == b.get(k), k
    assert b["lat"] == min(a["lat"], 65535)
    assert b["p"] == pytest.approx(a["p"], abs=0.5 / 255 + 0.0005)
    for k, tol in (("az", 0.005), ("el", 0.5), ("dsd", 0.5), ("lvl", 0.5)):
        if a.get(k) is None:
            assert b.get(k) is None, k
        elif k == "az" and b[k] == 180.0:
            assert a[k] >= 179.995 or a[k] <= -179.995
        elif k == "lvl":
            assert b[k] == pytest.approx(min(max(a[k], -128), 127), abs=tol)
        else:
            assert b[k] == pytest.approx(a[k], abs=tol), k
    assert b.get("amb", False) == bool(a.get("amb", False))


# --- round trips ------------------------------------------------------------------------------------------


def test_json_round_trip_of_builder_tokens() -> None:
    for tok in sample_tokens():
        data = encode_json(tok)
        assert b" " not in data.replace(b"Crying, sobbing", b"").replace(b"Crowing, cock-a-doodle-doo", b"")
        assert decode_json(data) == tok
        assert decode_json(data.decode()) == tok


def test_packed_round_trip_of_builder_tokens() -> None:
    for tok in sample_tokens():
        back = decode_packed(encode_packed(tok), BIRTH)
        packed_fields_close(tok, back)
        assert list(back) == list(tok)  # the JSON token's keys, in TokenBuilder's order


def test_packed_keeps_elevation_track_and_ambiguity() -> None:
    tok = TokenBuilder("kitchen-pi", MODEL_ID, WALL).build(event("upd", el=-12.3, amb=True))
    tok["trk"] = 4711
    back = decode_packed(encode_packed(tok), BIRTH)
    assert back["el"] == -12.0 and back["trk"] == 4711 and back["amb"] is True and back["t1"] is None
    assert back["ph"] == "upd"


def test_packed_drops_json_only_keys_and_extra_keys_pass_through_json() -> None:
    tok = sample_tokens()[1] | {"src": [[-120.4, None, 0.5]], "snr": 12.5, "x-future": {"k": [1, 2]}}
    assert decode_json(encode_json(tok)) == tok
    back = decode_packed(encode_packed(tok), BIRTH)
    assert "src" not in back and "snr" not in back and "x-future" not in back


def test_integral_floats_are_read_as_integers() -> None:
    tok = sample_tokens()[0]
    raw = json.dumps(tok | {"seq": 7.0, "c": 18.0}).encode()
    back = decode_json(raw)
    assert back["seq"] == 7 and isinstance(back["seq"], int) and isinstance(back["c"], int)


def test_azimuth_edge_wraps_to_plus_180() -> None:
    tok = sample_tokens()[0] | {"az": -179.999}
    assert decode_packed(encode_packed(tok), BIRTH)["az"] == 180.0


def test_lat_and_lvl_saturate() -> None:
    tok = sample_tokens()[1] | {"lat": 70000, "lvl": -150.0}
    back = decode_packed(encode_packed(tok), BIRTH)
    assert back["lat"] == 65535 and back["lvl"] == -128.0


# --- what must be rejected --------------------------------------------------------------------------------

GOOD = {"v": 1, "dev": "kitchen-pi", "seq": 41, "id": 7, "ph": "off", "t0": 1795713340.633, "t1": 1795713340.953,
        "lat": 600, "lbl": "Dog", "mid": "/m/0bt9lr", "c": 18, "p": 0.873, "az": 59.0, "el": None, "dsd": 39.0,
        "trk": None, "lvl": -19.7, "m": MODEL_ID}  # fmt: skip
BAD: list[tuple[str, dict[str, Any]]] = [
    ("'v'", GOOD | {"v": 2}),
    ("'v'", GOOD | {"v": "1"}),
    ("'dev'", GOOD | {"dev": ""}),
    ("'dev'", GOOD | {"dev": "a/b"}),
    ("'dev'", GOOD | {"dev": "x" * 65}),
    ("'seq'", GOOD | {"seq": -1}),
    ("'seq'", GOOD | {"seq": 1.5}),
    ("'seq'", GOOD | {"seq": True}),
    ("'seq'", GOOD | {"seq": 2**32}),
    ("'id'", GOOD | {"id": "7"}),
    ("'ph'", GOOD | {"ph": "end"}),
    ("'t0'", GOOD | {"t0": "now"}),
    ("'t0'", GOOD | {"t0": -1.0}),
    ("'t1'", GOOD | {"t1": None}),
    ("'t1'", GOOD | {"ph": "on"}),
    ("'lat'", GOOD | {"lat": -5}),
    ("'lbl'", GOOD | {"lbl": 3}),
    ("'mid'", GOOD | {"mid": ""}),
    ("'c'", GOOD | {"c": 70000}),
    ("'p'", GOOD | {"p": 1.2}),
    ("'p'", GOOD | {"p": None}),
    ("'az'", GOOD | {"az": -180.0}),
    ("'az'", GOOD | {"az": 181}),
    ("'el'", GOOD | {"el": 91}),
    ("'dsd'", GOOD | {"dsd": -1}),
    ("'trk'", GOOD | {"trk": 1.5}),
    ("'lvl'", GOOD | {"lvl": "loud"}),
    ("'amb'", GOOD | {"amb": 1}),
    ("'src[0]'", GOOD | {"src": [[1, 2]]}),
    ("'m'", GOOD | {"m": None}),
    *[(f"'{k}' is missing", {x: y for x, y in GOOD.items() if x != k}) for k in ("v", "dev", "seq", "ph", "c", "p")],
]


@pytest.mark.parametrize(("needle", "tok"), BAD, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD)])
def test_decode_json_rejects_and_names_the_key(needle: str, tok: dict[str, Any]) -> None:
    with pytest.raises(TokenError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        decode_json(json.dumps(tok))
    with pytest.raises(TokenError):
        encode_json(tok)


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[]", b'"tok"', b"{", b"\xff\xfe", b'{"v":1,"t0":NaN}', b'{"v":Infinity}', b"[" * 5000,
     b"1" * 5000, b" " * 70000, b'{"v":1,"dev":"\\ud800"}'],
)  # fmt: skip
def test_decode_json_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(TokenError):
        decode_json(raw)


def test_t1_before_t0_is_rejected() -> None:
    with pytest.raises(TokenError, match="t1 >= t0"):
        decode_json(json.dumps(GOOD | {"t1": GOOD["t0"] - 1}))


def test_decode_packed_rejections() -> None:
    good = encode_packed(GOOD)
    assert decode_packed(good, BIRTH)["seq"] == 41
    for data, needle in (
        (b"", "empty"),
        (b"\x00" + good[1:], "not a packed Tympan token"),
        (bytes([PACKED_BYTE0 + 1]) + good[1:], "unsupported version 2"),
        (good[:-1], "truncated"),
        (good[:5], "truncated"),
        (good + b"\x00", "over-long"),
        (good[:1] + bytes([good[1] | 3]) + good[2:], "phase code 3"),
    ):
        with pytest.raises(TokenError, match=needle):
            decode_packed(data, BIRTH)
    with pytest.raises(TokenError, match="another device or model"):
        decode_packed(good, birth_of("garage-pi"))
    with pytest.raises(TokenError, match="another device or model"):
        decode_packed(good, birth_of(model_id="tympan-sed-s2"))
    with pytest.raises(TokenError, match="class code 77 is not in the birth label table"):
        decode_packed(encode_packed(GOOD | {"c": 77}), BIRTH)
    with pytest.raises(TokenError, match="expected bytes"):
        decode_packed("text", BIRTH)  # type: ignore[arg-type]


# --- property-based: round trips and fuzz -----------------------------------------------------------------


def _r(nd: int) -> Any:
    return lambda x: round(x, nd)


@st.composite
def tokens(draw: st.DrawFn) -> dict[str, Any]:
    lb = draw(st.sampled_from(LABELS))
    ph = draw(st.sampled_from(["on", "upd", "off"]))
    t0 = draw(st.floats(1.6e9, 2.5e9).map(_r(3)))
    opt = st.none()
    tok: dict[str, Any] = {
        "v": 1, "dev": draw(st.sampled_from(["kitchen-pi"])), "seq": draw(st.integers(0, 2**32 - 1)),
        "id": draw(st.integers(0, 2**32 - 1)), "ph": ph, "t0": t0,
        "t1": round(t0 + draw(st.floats(0, 3600)), 3) if ph == "off" else None,
        "lat": draw(st.integers(0, 100_000)), "lbl": lb.name, "mid": lb.mid, "c": lb.index,
        "p": draw(st.floats(0, 1).map(_r(3))),
        "az": draw(opt | st.floats(-179.9, 180).map(_r(1))), "el": draw(opt | st.floats(-90, 90).map(_r(1))),
        "dsd": draw(opt | st.floats(0, 180).map(_r(1))), "trk": draw(opt | st.integers(0, 65535)),
        "lvl": draw(opt | st.floats(-200, 100).map(_r(1))), "m": MODEL_ID,
    }  # fmt: skip
    if draw(st.booleans()):
        tok["amb"] = True
    return tok


@settings(deadline=None, max_examples=300)
@given(tokens())
def test_property_round_trips(tok: dict[str, Any]) -> None:
    assert decode_json(encode_json(tok)) == tok
    data = encode_packed(tok)
    assert len(data) <= PACKED_MAX_BYTES
    packed_fields_close(tok, decode_packed(data, BIRTH))


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=300))
def test_fuzz_any_bytes_json_decodes_or_token_error(data: bytes) -> None:
    try:
        assert isinstance(decode_json(data), dict)
    except TokenError:
        pass


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from([*GOOD, "amb", "src", "snr"]), JSONISH, max_size=6), st.booleans())
def test_fuzz_mutated_json_tokens_decode_valid_or_token_error(changes: dict[str, Any], drop: bool) -> None:
    tok = {k: v for k, v in GOOD.items() if not (drop and k in changes)} | ({} if drop else changes)
    try:
        out = decode_json(json.dumps(tok))
    except TokenError:
        return
    assert validate_token(out) == out


def _decoded_consistently(data: bytes) -> None:
    try:
        out = decode_packed(data, BIRTH)
    except TokenError:
        return
    assert label_table(BIRTH)[out["c"]] == (out["mid"], out["lbl"])  # never a code outside the table
    assert out["dev"] == BIRTH["dev"] and out["m"] == BIRTH["model"]["id"]
    assert validate_token(out) == out


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=40))
def test_fuzz_any_bytes_packed_decodes_or_token_error(data: bytes) -> None:
    _decoded_consistently(data)


@settings(deadline=None, max_examples=500)
@given(tokens(), st.data())
def test_truncated_and_mutated_packed_tokens(tok: dict[str, Any], data: st.DataObject) -> None:
    raw = encode_packed(tok)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(TokenError):
        decode_packed(raw[:cut], BIRTH)
    i = data.draw(st.integers(0, len(raw) - 1))
    mutated = bytearray(raw)
    mutated[i] ^= data.draw(st.integers(1, 255))
    _decoded_consistently(bytes(mutated))
    with pytest.raises(TokenError):
        decode_packed(raw + data.draw(st.binary(min_size=1, max_size=4)), BIRTH)


# --- birth message ----------------------------------------------------------------------------------------


def test_birth_message() -> None:
    b = BIRTH
    assert b["v"] == 1 and b["dev"] == "kitchen-pi" and b["site"] == "home" and b["sw"] == "0.1.0"
    assert b["model"] == {"id": MODEL_ID, "sha256": FakeModel.sha256}
    assert b["labels"][2] == [18, "/m/0bt9lr", "Dog"]
    assert label_table(b)[29] == ("/m/07qn5dc", "Crowing, cock-a-doodle-doo")
    assert b["array"]["name"] == "respeaker-4mic-hat" and len(b["array"]["mics"]) == 4
    assert b["topics"] == topics("home", "kitchen-pi")
    assert b["topics"]["tokens"] == "tympan/v1/home/kitchen-pi/tokens"
    assert b["t"] == WALL
    assert validate_birth(json.loads(json.dumps(b))) == b
    assert build_birth("d", "s", FakeModel(), None, "1")["array"] is None


BAD_BIRTHS: list[tuple[str, Any]] = [
    ("JSON object", []),
    ("'v'", BIRTH | {"v": 2}),
    ("'dev'", BIRTH | {"dev": "a#b"}),
    ("'site'", BIRTH | {"site": ""}),
    ("'sw'", BIRTH | {"sw": 1}),
    ("'model.sha256'", BIRTH | {"model": {"id": "x", "sha256": "ABC"}}),
    ("'model.id'", BIRTH | {"model": {"sha256": FakeModel.sha256}}),
    ("'labels'", BIRTH | {"labels": []}),
    ("labels\\[1\\]", BIRTH | {"labels": [[0, "/m/a", "A"], [1, "/m/b"]]}),
    ("appears twice", BIRTH | {"labels": [[0, "/m/a", "A"], [0, "/m/b", "B"]]}),
    ("'array.mics", BIRTH | {"array": {"name": "x", "mics": [[0, 0]]}}),
    ("'t'", BIRTH | {"t": -1}),
    ("'t' is missing", {k: v for k, v in BIRTH.items() if k != "t"}),
]


@pytest.mark.parametrize(("needle", "birth"), BAD_BIRTHS, ids=[str(i) for i in range(len(BAD_BIRTHS))])
def test_validate_birth_rejects(needle: str, birth: Any) -> None:
    with pytest.raises(TokenError, match=needle):
        validate_birth(birth)


def test_build_birth_rejects_names_that_are_not_topic_levels() -> None:
    with pytest.raises(TokenError, match="'dev'"):
        build_birth("kitchen/pi", "home", FakeModel(), None, "0.1.0")


def test_device_tag_separates_devices_and_models() -> None:
    tags = {device_tag(d, m) for d in ("a", "b", "kitchen-pi") for m in ("m1", "m2")}
    assert len(tags) == 6


# --- the shipped JSON Schemas agree with the validators ---------------------------------------------------


def _schema(name: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")  # dev extra: jsonschema>=4.18
    return _validator(jsonschema, name)


@functools.cache
def _validator(jsonschema: Any, name: str) -> Any:
    schema = json.loads((resources.files("edge") / "schema" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_token_schema_accepts_what_encode_json_emits() -> None:
    v = _schema("token-v1.schema.json")
    for tok in [*sample_tokens(), GOOD, GOOD | {"amb": True, "src": [[10.0, None, 0.3]], "x-future": 1}]:
        assert v.is_valid(json.loads(encode_json(tok)))


@settings(deadline=None, max_examples=100)
@given(tokens())
def test_token_schema_accepts_random_valid_tokens(tok: dict[str, Any]) -> None:
    assert _schema("token-v1.schema.json").is_valid(json.loads(encode_json(tok)))


@pytest.mark.parametrize(("needle", "tok"), BAD, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD)])
def test_token_schema_rejects_what_decode_json_rejects(needle: str, tok: dict[str, Any]) -> None:
    assert not _schema("token-v1.schema.json").is_valid(tok), needle


def test_birth_schema_agrees() -> None:
    v = _schema("birth-v1.schema.json")
    assert v.is_valid(json.loads(json.dumps(BIRTH)))
    for needle, b in BAD_BIRTHS:
        if needle != "appears twice":  # uniqueness of codes is not expressible in JSON Schema
            assert not v.is_valid(b), needle


# --- size budget (docs/tokens.md: JSON <= 250 bytes, packed <= 32 bytes for a typical event) ---------------


def test_size_budget_of_a_typical_token() -> None:
    toks = sample_tokens()
    off = next(t for t in toks if t["ph"] == "off" and t["lbl"] == "Dog")
    assert len(encode_json(off)) <= JSON_BUDGET
    assert len(encode_packed(off)) <= PACKED_BUDGET
    assert statistics.median(len(encode_json(t)) for t in toks) <= JSON_BUDGET
    # a 3-D array's token (with elevation) still fits
    tok3d = TokenBuilder("kitchen-pi", MODEL_ID, WALL).build(event("off", el=21.4))
    assert len(encode_packed(tok3d)) == PACKED_BUDGET
