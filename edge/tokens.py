"""Event -> token: the JSON event token (schema v1, ARCHITECTURE.md) with wall-clock time attached.

Keys are short and stable. `t0`/`t1` are epoch seconds (stream time + the wall-clock time of the
stream's first sample); `lat` is the detection latency in ms (emission minus onset, stream time);
`seq` is a per-device counter. Records written with `--events` also carry `onset`/`offset`, seconds
from the start of the stream.

`build_birth` makes the device's retained birth message (software version, model id and hash, the
label table that resolves class codes `c`, array geometry, topics); `validate_birth` checks one.
Wire forms and the spec: `edge.token_codec`, docs/tokens.md.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edge.errors import TokenError
from edge.messages import Event
from edge.token_codec import SCHEMA_VERSION, TOPIC_KINDS, check_name, label_table, topics

if TYPE_CHECKING:
    from boards.profiles import ArrayProfile

__all__ = ["SCHEMA_VERSION", "TokenBuilder", "build_birth", "validate_birth"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, nd)


@dataclass
class TokenBuilder:
    device_id: str
    model_id: str
    wall_start: float
    stream_times: bool = False
    _seq: int = field(default=0, init=False)

    def build(self, ev: Event) -> dict[str, Any]:
        b = ev.bearings[0] if ev.bearings else None
        tok: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "dev": self.device_id,
            "seq": self._seq,
            "id": ev.id,
            "ph": ev.phase,
            "t0": round(self.wall_start + ev.onset, 3),
            "t1": None if ev.offset is None else round(self.wall_start + ev.offset, 3),
            "lat": round((ev.emitted - ev.onset) * 1000.0),
            "lbl": ev.label,
            "mid": ev.mid,
            "c": ev.code,
            "p": round(ev.p, 3),
            "m": self.model_id,
        }
        optional = {
            "az": None if b is None else _r(b.azimuth, 1),
            "el": None if b is None else _r(b.elevation, 1),
            "dsd": None if b is None else _r(b.spread, 1),
            "trk": ev.track,
            "az1": _r(ev.azimuth_end, 1),  # a moving source's end azimuth (`az` is then its start)
            "lvl": _r(ev.level_dbfs, 1),
        }
        tok.update({k: v for k, v in optional.items() if v is not None})
        if b is not None and b.ambiguous:
            tok["amb"] = True
        if len(ev.bearings) > 1:
            tok["src"] = [[_r(x.azimuth, 1), _r(x.elevation, 1), round(x.power, 2)] for x in ev.bearings[1:]]
        if ev.states:  # issue 7: the first state and its probability; further states in `sx`; traits
            tok["st"] = ev.states[0].name
            tok["sp"] = round(ev.states[0].p, 2)
            if len(ev.states) > 1:
                tok["sx"] = [[s.name, round(s.p, 2)] for s in ev.states[1:]]
        if ev.traits:
            tok["tr"] = [s.name for s in ev.traits]
        if self.stream_times:
            tok["onset"] = ev.onset
            tok["offset"] = ev.offset
        self._seq += 1
        return tok


class LabelLike(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def mid(self) -> str: ...
    @property
    def name(self) -> str: ...


class ModelLike(Protocol):
    """What a birth message needs of a model (`edge.inference.Model` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def labels(self) -> Sequence[LabelLike]: ...


def build_birth(
    device_id: str,
    site: str,
    model: ModelLike,
    array: ArrayProfile | None,
    sw_version: str,
    t: float | None = None,
) -> dict[str, Any]:
    """The device's retained birth message (schema v1, docs/tokens.md), validated.

    `t` is the epoch time it is published at (now when None). Raises TokenError for a device or site id
    that is not a topic level, or a malformed model.
    """
    birth: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "dev": device_id,
        "site": site,
        "sw": sw_version,
        "model": {"id": model.id, "sha256": model.sha256},
        "labels": [[lb.index, lb.mid, lb.name] for lb in model.labels],
        "array": None if array is None else array.to_dict(),
        "topics": topics(site, device_id),
        "t": round(time.time() if t is None else t, 3),
    }
    return validate_birth(birth)


def _bad(key: str, value: Any, why: str) -> TokenError:
    text = repr(value)
    return TokenError(f"birth key {key!r}: {why}, got {text if len(text) <= 60 else text[:57] + '...'}")


def validate_birth(d: Any) -> dict[str, Any]:
    """`d` if it is a well-formed v1 birth message; TokenError naming the first bad key otherwise.

    Unknown extra keys are allowed (forward compatibility), as in tokens.
    """
    if not isinstance(d, dict):
        raise TokenError(f"a birth message must be a JSON object, got {type(d).__name__}")
    for key in ("v", "dev", "site", "sw", "model", "labels", "array", "t"):
        if key not in d:
            raise TokenError(f"birth key {key!r} is missing")
    v = d["v"]
    if isinstance(v, bool) or v != SCHEMA_VERSION:
        raise _bad("v", v, f"unsupported schema version (this decoder reads v={SCHEMA_VERSION})")
    check_name("dev", d["dev"])
    check_name("site", d["site"])
    if not isinstance(d["sw"], str) or not d["sw"]:
        raise _bad("sw", d["sw"], "expected a non-empty software version string")
    model = d["model"]
    if not isinstance(model, dict):
        raise _bad("model", model, "expected an object {id, sha256}")
    if not isinstance(model.get("id"), str) or not model["id"]:
        raise _bad("model.id", model.get("id"), "expected a non-empty string")
    if not isinstance(model.get("sha256"), str) or not _SHA256_HEX.fullmatch(model["sha256"]):
        raise _bad("model.sha256", model.get("sha256"), "expected 64 lower-case hex digits")
    if not label_table(d):
        raise _bad("labels", d["labels"], "expected at least one [code, mid, name]")
    _check_array(d["array"])
    if "topics" in d and d["topics"] is not None:
        tp = d["topics"]
        if not isinstance(tp, dict) or not all(isinstance(k, str) and isinstance(x, str) for k, x in tp.items()):
            raise _bad("topics", tp, f"expected an object of topic strings ({', '.join(TOPIC_KINDS)})")
    t = d["t"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise _bad("t", t, "expected epoch seconds, a finite number >= 0")
    return d


def _check_array(a: Any) -> None:
    if a is None:
        return
    if not isinstance(a, dict):
        raise _bad("array", a, "expected an array profile object or null")
    if not isinstance(a.get("name"), str) or not a["name"]:
        raise _bad("array.name", a.get("name"), "expected a non-empty string")
    mics = a.get("mics")
    if not isinstance(mics, list) or not mics:
        raise _bad("array.mics", mics, "expected a non-empty list of [x, y, z] metres")
    for i, m in enumerate(mics):
        if not (
            isinstance(m, list)
            and len(m) == 3
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in m)
        ):
            raise _bad(f"array.mics[{i}]", m, "expected [x, y, z], finite numbers (metres)")
