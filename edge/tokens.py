"""Event -> token: the JSON event token (schema v1, ARCHITECTURE.md) with wall-clock time attached.

Keys are short and stable. `t0`/`t1` are epoch seconds (stream time + the wall-clock time of the
stream's first sample); `lat` is the detection latency in ms (emission minus onset, stream time);
`seq` is a per-device counter. Records written with `--events` also carry `onset`/`offset`, seconds
from the start of the stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edge.messages import Event

SCHEMA_VERSION = 1


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
            "az": None if b is None else _r(b.azimuth, 1),
            "el": None if b is None else _r(b.elevation, 1),
            "dsd": None if b is None else _r(b.spread, 1),
            "trk": None,
            "lvl": _r(ev.level_dbfs, 1),
            "m": self.model_id,
        }
        if b is not None and b.ambiguous:
            tok["amb"] = True
        if len(ev.bearings) > 1:
            tok["src"] = [[_r(x.azimuth, 1), _r(x.elevation, 1), round(x.power, 2)] for x in ev.bearings[1:]]
        if self.stream_times:
            tok["onset"] = ev.onset
            tok["offset"] = ev.offset
        self._seq += 1
        return tok
