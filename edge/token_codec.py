"""Token dict <-> bytes: the JSON and packed binary forms of an event token, schema v1 (docs/tokens.md).

    encode_json(tok) -> bytes          compact UTF-8 JSON, validated first
    decode_json(data) -> dict          validated token (integral floats normalised to int)
    encode_packed(tok) -> bytes        fixed little-endian layout, 23..33 bytes
    decode_packed(data, birth) -> dict the JSON token back; `dev`, `m`, `lbl`, `mid` from the birth
    label_table(birth) -> {code: (mid, name)}

Every decoder raises `TokenError` (naming the key and the bad value) for any input it refuses and never
any other exception. Keys are frozen once published; unknown extra keys are accepted (forward
compatibility) and passed through by the JSON decoder. The packed form carries only the core keys
(`PACKED_KEYS`); JSON-only keys (`az1`, `src`, `top`, `st`, `sp`, `sx`, `tr`, `snr`, ...) are dropped by it.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Callable
from typing import Any

from edge.errors import TokenError

SCHEMA_VERSION = 1
TOPIC_PREFIX = "tympan/v1"
TOPIC_KINDS = ("status", "birth", "events", "tokens", "level", "caption")
PHASES = ("on", "upd", "off")

MAX_JSON_BYTES = 65536
MAX_NAME_LEN = 64  # device and site ids: topic levels
U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF
T_MAX_S = (1 << 48) / 1000.0  # t0 travels as 48-bit epoch milliseconds in the packed form

# Packed layout (little-endian). Header, always present:
#   0 u8  magic/version   0xA0 | SCHEMA_VERSION
#   1 u8  flags           bits 0-1 phase (0 on, 1 upd, 2 off); 2 az; 3 el; 4 dsd; 5 trk; 6 lvl; 7 amb
#   2 u16 tag             device_tag(dev, m): fingerprint of device + model id
#   4 u32 seq
#   8 u32 id
#  12 u16 c               class code (birth label table)
#  14 u48 t0              epoch ms
#  20 u16 lat             ms, saturating at 65535
#  22 u8  p               round(p * 255)
# then, in this order, only where flagged (`off` always carries t1):
#     u32 t1 - t0 ms | i16 az 0.01 deg | i8 el 1 deg | u8 dsd 1 deg | u16 trk | i8 lvl 1 dB (saturating)
PACKED_MAGIC = 0xA0
PACKED_BYTE0 = PACKED_MAGIC | SCHEMA_VERSION
_HEAD = struct.Struct("<BBHIIH6sHB")
_DUR = struct.Struct("<I")
_AZ = struct.Struct("<h")
_EL = struct.Struct("<b")
_DSD = struct.Struct("<B")
_TRK = struct.Struct("<H")
_LVL = struct.Struct("<b")
F_AZ, F_EL, F_DSD, F_TRK, F_LVL, F_AMB = 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7
P_SCALE = 255
AZ_SCALE = 100
PACKED_MAX_BYTES = _HEAD.size + _DUR.size + _AZ.size + _EL.size + _DSD.size + _TRK.size + _LVL.size
# The keys a packed token gives back (TokenBuilder's order); `amb` only when true.
PACKED_KEYS = ("v", "dev", "seq", "id", "ph", "t0", "t1", "lat", "lbl", "mid", "c", "p",
               "az", "el", "dsd", "trk", "lvl", "m")  # fmt: skip

LVL_RANGE = (-200.0, 100.0)
SNR_RANGE = (-100.0, 200.0)


# --- field checks: each returns the normalised value or raises TokenError quoting it --------------------


def _fail(key: str, value: Any, why: str) -> TokenError:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return TokenError(f"token key {key!r}: {why}, got {text}")


def _int(key: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(key, v, "expected an integer")
    if not lo <= v <= hi:
        raise _fail(key, v, f"expected an integer in [{lo}, {hi}]")
    return v


def _num(key: str, v: Any, lo: float, hi: float, lo_open: bool = False) -> float | int:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(key, v, "expected a number")
    if isinstance(v, float) and not math.isfinite(v):
        raise _fail(key, v, "expected a finite number")
    if v < lo or v > hi or (lo_open and v == lo):
        raise _fail(key, v, f"expected a number in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
    return v


def _str(key: str, v: Any, max_len: int = 256) -> str:
    if not isinstance(v, str) or not v:
        raise _fail(key, v, "expected a non-empty string")
    if len(v) > max_len:
        raise _fail(key, v, f"expected at most {max_len} characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(key, v, "expected valid Unicode (no lone surrogates)") from None
    return v


def check_name(key: str, v: Any) -> str:
    """A device or site id: a non-empty topic level (no '/', '+', '#', no control characters)."""
    s = _str(key, v, MAX_NAME_LEN)
    if any(ch in "/+#" or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in s):
        raise _fail(key, v, "expected a topic-safe name (no '/', '+', '#' or control characters)")
    return s


def _opt(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda k, v: None if v is None else check(k, v)


def _phase(k: str, v: Any) -> str:
    if v not in PHASES or not isinstance(v, str):
        raise _fail(k, v, "expected one of 'on', 'upd', 'off'")
    return v


def _true(k: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(k, v, "expected true or false")
    return v


def _src(k: str, v: Any) -> list[list[Any]]:
    if not isinstance(v, list) or len(v) > 16:
        raise _fail(k, v, "expected a list of at most 16 [az, el|null, power] bearings")
    out = []
    for i, b in enumerate(v):
        if not isinstance(b, list) or len(b) != 3:
            raise _fail(f"{k}[{i}]", b, "expected [az, el|null, power]")
        out.append([_num(f"{k}[{i}].az", b[0], -180.0, 180.0, lo_open=True),
                    None if b[1] is None else _num(f"{k}[{i}].el", b[1], -90.0, 90.0),
                    _num(f"{k}[{i}].power", b[2], 0.0, 1e6)])  # fmt: skip
    return out


MAX_STATES = 16


def _names(k: str, v: Any) -> list[str]:
    """`tr`: a list of at most 16 trait names (ontology names, docs/tokens.md)."""
    if not isinstance(v, list) or len(v) > MAX_STATES:
        raise _fail(k, v, f"expected a list of at most {MAX_STATES} names")
    return [_str(f"{k}[{i}]", x, 64) for i, x in enumerate(v)]


def _states(k: str, v: Any) -> list[list[Any]]:
    """`sx`: further states, a list of at most 16 [name, p]."""
    if not isinstance(v, list) or len(v) > MAX_STATES:
        raise _fail(k, v, f"expected a list of at most {MAX_STATES} [name, p] states")
    out = []
    for i, x in enumerate(v):
        if not isinstance(x, list) or len(x) != 2:
            raise _fail(f"{k}[{i}]", x, "expected [name, p]")
        out.append([_str(f"{k}[{i}].name", x[0], 64), _num(f"{k}[{i}].p", x[1], 0.0, 1.0)])
    return out


REQUIRED: dict[str, Callable[[str, Any], Any]] = {
    "v": lambda k, v: _int(k, v, SCHEMA_VERSION, SCHEMA_VERSION),
    "dev": check_name,
    "seq": lambda k, v: _int(k, v, 0, U32_MAX),
    "id": lambda k, v: _int(k, v, 0, U32_MAX),
    "ph": _phase,
    "t0": lambda k, v: _num(k, v, 0.0, T_MAX_S),
    "t1": _opt(lambda k, v: _num(k, v, 0.0, T_MAX_S)),
    "lat": lambda k, v: _int(k, v, 0, U32_MAX),
    "lbl": _str,
    "mid": _str,
    "c": lambda k, v: _int(k, v, 0, U16_MAX),
    "p": lambda k, v: _num(k, v, 0.0, 1.0),
    "m": _str,
}
OPTIONAL: dict[str, Callable[[str, Any], Any]] = {
    "az": _opt(lambda k, v: _num(k, v, -180.0, 180.0, lo_open=True)),
    "el": _opt(lambda k, v: _num(k, v, -90.0, 90.0)),
    "dsd": _opt(lambda k, v: _num(k, v, 0.0, 180.0)),
    "trk": _opt(lambda k, v: _int(k, v, 0, U16_MAX)),
    "az1": _opt(lambda k, v: _num(k, v, -180.0, 180.0, lo_open=True)),
    "lvl": _opt(lambda k, v: _num(k, v, *LVL_RANGE)),
    "snr": _opt(lambda k, v: _num(k, v, *SNR_RANGE)),
    "amb": _true,
    "src": _opt(_src),
    "st": _opt(lambda k, v: _str(k, v, 64)),
    "sp": _opt(lambda k, v: _num(k, v, 0.0, 1.0)),
    "sx": _opt(_states),
    "tr": _opt(_names),
}


def validate_token(tok: Any) -> dict[str, Any]:
    """The token checked against schema v1: a new dict, integral floats of integer keys made ints.

    Unknown keys are kept as they are. Raises TokenError naming the first bad key and its value.
    """
    if not isinstance(tok, dict):
        raise TokenError(f"a token must be a JSON object, got {type(tok).__name__}")
    if "v" in tok:
        v = tok["v"]
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and v == SCHEMA_VERSION):
            raise _fail("v", v, f"unsupported schema version (this decoder reads v={SCHEMA_VERSION})")
    out: dict[str, Any] = {}
    for key, check in REQUIRED.items():
        if key not in tok:
            raise TokenError(f"token key {key!r} is missing")
        out[key] = check(key, tok[key])
    for key, value in tok.items():
        if not isinstance(key, str):  # pragma: no cover - JSON keys are strings
            raise _fail("<key>", key, "expected string keys")
        if key in OPTIONAL:
            out[key] = OPTIONAL[key](key, value)
        elif key not in REQUIRED:
            out[key] = value
    if (out["ph"] == "off") != (out["t1"] is not None):
        raise _fail("t1", out["t1"], f"expected a number for phase 'off' and null otherwise (ph={out['ph']!r})")
    if out["t1"] is not None and out["t1"] < out["t0"]:
        raise _fail("t1", out["t1"], f"expected t1 >= t0 ({out['t0']!r})")
    if out.get("sp") is not None and out.get("st") is None:
        raise _fail("sp", out["sp"], "expected no state probability without a state 'st'")
    return {k: out[k] for k in tok}  # the caller's key order


# --- JSON form --------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} is not JSON")


def encode_json(tok: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a validated token (keys in the dict's order)."""
    clean = validate_token(tok)
    try:
        return json.dumps(clean, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as e:  # unknown extra keys that are not JSON
        raise TokenError(f"token cannot be written as JSON: {e}") from None


def decode_json(data: bytes | str) -> dict[str, Any]:
    """The token of one JSON payload, validated (see `validate_token`); TokenError for anything else."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > MAX_JSON_BYTES:
            raise TokenError(f"JSON token of {len(data)} bytes exceeds {MAX_JSON_BYTES}")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise TokenError(
                f"JSON token is not UTF-8 (byte {e.start}: {bytes(data)[e.start : e.start + 1]!r})"
            ) from None
    elif isinstance(data, str):
        text = data
        if len(text) > MAX_JSON_BYTES:
            raise TokenError(f"JSON token of {len(text)} characters exceeds {MAX_JSON_BYTES}")
    else:
        raise TokenError(f"expected bytes or str, got {type(data).__name__}")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise TokenError(f"not a JSON token: {str(e)[:120]}") from None
    return validate_token(obj)


# --- the birth message's label table and fingerprint -----------------------------------------------------


def _birth_labels(birth: Any) -> tuple[str, list[Any]]:
    if not isinstance(birth, dict):
        raise TokenError(f"a birth message must be a JSON object, got {type(birth).__name__}")
    dev = birth.get("dev")
    if not isinstance(dev, str):
        raise TokenError(f"birth key 'dev': expected a string, got {dev!r}")
    labels = birth.get("labels")
    if not isinstance(labels, list):
        raise TokenError(f"birth key 'labels': expected a list of [code, mid, name], got {type(labels).__name__}")
    return dev, labels


def label_table(birth: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """The birth message's class codes: {code: (mid, name)}. TokenError for a malformed table."""
    _, labels = _birth_labels(birth)
    table: dict[int, tuple[str, str]] = {}
    for i, row in enumerate(labels):
        if not (isinstance(row, list) and len(row) == 3):
            raise TokenError(f"birth key 'labels[{i}]': expected [code, mid, name], got {row!r}"[:160])
        code = _int(f"labels[{i}][0]", row[0], 0, U16_MAX)
        mid, name = _str(f"labels[{i}][1]", row[1]), _str(f"labels[{i}][2]", row[2])
        if code in table:
            raise TokenError(f"birth key 'labels[{i}]': class code {code} appears twice")
        table[code] = (mid, name)
    return table


def device_tag(dev: str, model_id: str) -> int:
    """16-bit fingerprint of (device, model): the first two bytes, little-endian, of the SHA-256 of the
    UTF-8 string `dev + "\\n" + model_id`. A packed token carries it; the decoder checks it against the
    birth, so a token is never resolved through another device's or another model's label table."""
    try:
        blob = f"{dev}\n{model_id}".encode()
    except UnicodeEncodeError:
        raise TokenError(f"cannot fingerprint device {dev!r} / model {model_id!r}") from None
    return int.from_bytes(hashlib.sha256(blob).digest()[:2], "little")


def birth_tag(birth: dict[str, Any]) -> int:
    """The `device_tag` of a birth message (its `dev` and `model.id`)."""
    dev, _ = _birth_labels(birth)
    return device_tag(dev, _birth_model_id(birth))


def _birth_model_id(birth: dict[str, Any]) -> str:
    model = birth.get("model")
    m = model.get("id") if isinstance(model, dict) else None
    if not isinstance(m, str) or not m:
        raise TokenError(f"birth key 'model.id': expected a non-empty string, got {m!r}"[:160])
    return m


# --- packed form ------------------------------------------------------------------------------------------


def _ms(t: float) -> int:
    return round(t * 1000.0)


def _sat(x: int, lo: int, hi: int) -> int:
    return lo if x < lo else hi if x > hi else x


def encode_packed(tok: dict[str, Any]) -> bytes:
    """The packed form of a validated token (layout in docs/tokens.md). `dev` and `m` travel as a 16-bit
    fingerprint (`device_tag`), `lbl`/`mid` as the class code `c`; the decoder takes them from the birth."""
    t = validate_token(tok)
    tag = device_tag(t["dev"], t["m"])
    flags = PHASES.index(t["ph"])
    tail = b""
    if t["ph"] == "off":
        dur = _ms(t["t1"]) - _ms(t["t0"])
        if not 0 <= dur <= U32_MAX:
            raise _fail("t1", t["t1"], f"t1 - t0 = {dur} ms does not fit the packed form's u32")
        tail += _DUR.pack(dur)
    if t.get("az") is not None:
        q = round(t["az"] * AZ_SCALE)
        flags |= F_AZ
        tail += _AZ.pack(180 * AZ_SCALE if q <= -180 * AZ_SCALE else q)
    if t.get("el") is not None:
        flags |= F_EL
        tail += _EL.pack(round(t["el"]))
    if t.get("dsd") is not None:
        flags |= F_DSD
        tail += _DSD.pack(round(t["dsd"]))
    if t.get("trk") is not None:
        flags |= F_TRK
        tail += _TRK.pack(t["trk"])
    if t.get("lvl") is not None:
        flags |= F_LVL
        tail += _LVL.pack(_sat(round(t["lvl"]), -128, 127))
    if t.get("amb") is True:
        flags |= F_AMB
    head = _HEAD.pack(PACKED_BYTE0, flags, tag, t["seq"], t["id"], t["c"], _ms(t["t0"]).to_bytes(6, "little"),
                      _sat(t["lat"], 0, U16_MAX), round(t["p"] * P_SCALE))  # fmt: skip
    return head + tail


def packed_size(flags: int) -> int:
    """The exact length of a packed token with these flags."""
    n = _HEAD.size + (_DUR.size if flags & 3 == PHASES.index("off") else 0)
    for bit, s in ((F_AZ, _AZ), (F_EL, _EL), (F_DSD, _DSD), (F_TRK, _TRK), (F_LVL, _LVL)):
        if flags & bit:
            n += s.size
    return n


def decode_packed(data: bytes, birth: dict[str, Any]) -> dict[str, Any]:
    """The JSON token of a packed one, resolved through its device's birth message (`dev`, `m`, `lbl`,
    `mid`). TokenError for a wrong magic/version, a wrong length, a birth that is not the one the token
    was coded against, an unknown class code or a decoded value out of range."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TokenError(f"packed token: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise TokenError(f"packed token is empty (the header alone is {_HEAD.size} bytes)")
    if data[0] != PACKED_BYTE0:
        if data[0] & 0xF0 == PACKED_MAGIC:
            raise TokenError(f"packed token of unsupported version {data[0] & 0x0F} (this decoder reads v=1)")
        raise TokenError(f"not a packed Tympan token: first byte 0x{data[0]:02x}, expected 0x{PACKED_BYTE0:02x}")
    if len(data) < 2:
        raise TokenError(f"packed token truncated: {len(data)} bytes, the header alone is {_HEAD.size}")
    flags = data[1]
    if flags & 3 == 3:
        raise TokenError(f"packed token flags 0x{flags:02x}: phase code 3 is undefined")
    want = packed_size(flags)
    if len(data) != want:
        kind = "truncated" if len(data) < want else "over-long"
        raise TokenError(f"packed token {kind}: {len(data)} bytes, its flags 0x{flags:02x} say {want}")
    _, _, tag, seq, eid, code, t0b, lat, pq = _HEAD.unpack_from(data, 0)
    dev, _ = _birth_labels(birth)
    want_tag = birth_tag(birth)
    if tag != want_tag:
        raise TokenError(f"packed token (tag 0x{tag:04x}) does not belong to the birth of device {dev!r} "
                         f"(tag 0x{want_tag:04x}): another device or model")  # fmt: skip
    table = label_table(birth)
    if code not in table:
        raise TokenError(f"packed token class code {code} is not in the birth label table of {dev!r}")
    m = _birth_model_id(birth)
    t0_ms = int.from_bytes(t0b, "little")
    ph = PHASES[flags & 3]
    off = _HEAD.size
    vals: dict[str, Any] = {"t1": None, "az": None, "el": None, "dsd": None, "trk": None, "lvl": None}
    if ph == "off":
        vals["t1"] = (t0_ms + _DUR.unpack_from(data, off)[0]) / 1000.0
        off += _DUR.size
    for key, bit, s in (("az", F_AZ, _AZ), ("el", F_EL, _EL), ("dsd", F_DSD, _DSD), ("trk", F_TRK, _TRK),
                        ("lvl", F_LVL, _LVL)):  # fmt: skip
        if flags & bit:
            vals[key] = s.unpack_from(data, off)[0]
            off += s.size
    if vals["az"] is not None:
        vals["az"] = round(vals["az"] / AZ_SCALE, 2)
    for key in ("el", "dsd", "lvl"):
        if vals[key] is not None:
            vals[key] = float(vals[key])
    mid, name = table[code]
    tok: dict[str, Any] = {
        "v": SCHEMA_VERSION, "dev": dev, "seq": seq, "id": eid, "ph": ph, "t0": t0_ms / 1000.0, "t1": vals["t1"],
        "lat": lat, "lbl": name, "mid": mid, "c": code, "p": round(pq / P_SCALE, 3), "m": m,
    }  # fmt: skip
    # optional keys are left out when unknown, as the edge's TokenBuilder does
    tok.update({k: vals[k] for k in ("az", "el", "dsd", "trk", "lvl") if vals[k] is not None})
    if flags & F_AMB:
        tok["amb"] = True
    return validate_token(tok)


def topics(site: str, dev: str) -> dict[str, str]:
    """The device's MQTT topics: {kind: "tympan/v1/<site>/<dev>/<kind>"} for every kind in TOPIC_KINDS."""
    root = f"{TOPIC_PREFIX}/{check_name('site', site)}/{check_name('dev', dev)}"
    return {k: f"{root}/{k}" for k in TOPIC_KINDS}
