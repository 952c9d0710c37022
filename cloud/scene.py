"""Decoded event tokens -> a sliding scene window per device (pure, synchronous).

A `SceneWindow` merges the on/upd/off phases of each event (by event id; an id that comes back with
another label or onset is a new event) and keeps the events that overlap the last `window_s` seconds.
Time is the device's clock (token epoch seconds): the window's "now" is the local clock plus the
device's clock offset, estimated from the least-delayed recent token (and never before the newest
token), so a device whose clock is off by minutes, or a token delivered late from a spool, still gives
a sensible window. Tokens are deduplicated by
(dev, seq): a redelivered QoS 1 message changes nothing (a seq seen before with another emission
time is taken as a restarted device counting from 0 again, not as a duplicate).

`Scene` is the frozen snapshot a caption backend reads; `SceneWindow.signature()` is a coarse summary
(labels + quarter-circle directions) whose change means "the scene changed, caption now".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.errors import TokenError

DEFAULT_WINDOW_S = 30.0
MAX_SEEN_SEQS = 65536  # bound on the dedupe memory per device
OFFSET_MEMORY_S = 300.0  # how long the device clock offset estimate outweighs later, more delayed tokens
ONSET_TOLERANCE_S = 0.002  # every phase of an event carries its onset t0 (ms resolution)

# 8 sectors of 45 degrees, counter-clockwise from the front (+x); +90 degrees is the listener's left.
SECTORS_8 = ("front", "front-left", "left", "back-left", "back", "back-right", "right", "front-right")
# 4 quarters of 90 degrees: the coarse directions of the scene signature.
SECTORS_4 = ("front", "left", "back", "right")

Signature = frozenset[tuple[str, str | None]]


def sector(az: float | None, sectors: tuple[str, ...] = SECTORS_8) -> str | None:
    """Azimuth in degrees (counter-clockwise from the front) -> the name of its sector; None for None/NaN."""
    if az is None or not math.isfinite(az):
        return None
    width = 360.0 / len(sectors)
    return sectors[math.floor(az / width + 0.5) % len(sectors)]


@dataclass(frozen=True)
class SceneEvent:
    """One sound event, its phases merged. `t1` is None while the event is still open (no `off` yet)."""

    id: str
    label: str
    t0: float  # onset, device epoch s
    t1: float | None  # offset, device epoch s; None while open
    last: float  # device time of the newest token of this event
    p: float  # highest confidence seen
    az: float | None = None  # degrees, counter-clockwise from the front; None when not localised
    el: float | None = None
    dsd: float | None = None
    lvl: float | None = None  # loudest level seen, dBFS
    state: str | None = None
    state_p: float | None = None
    more_states: tuple[str, ...] = ()  # further states (`sx`) at or above MORE_STATE_MIN_P
    traits: tuple[str, ...] = ()
    mid: str | None = None
    trk: Any = None
    tokens: int = 1  # how many phases were merged

    @property
    def open(self) -> bool:
        return self.t1 is None

    def end(self, now: float) -> float:
        """Offset, or `now` for an event still open."""
        return self.t1 if self.t1 is not None else max(now, self.last)

    def duration(self, now: float) -> float:
        return max(0.0, self.end(now) - self.t0)


@dataclass(frozen=True)
class Scene:
    """What a device heard in [start, end] (device epoch s), events ordered by onset."""

    dev: str
    start: float
    end: float
    events: tuple[SceneEvent, ...]

    @property
    def window_s(self) -> float:
        return self.end - self.start


def _num(tok: Mapping[str, Any], key: str) -> float | None:
    x = tok.get(key)
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise TokenError(f"token key {key!r} must be a number or null, got {x!r}")
    return float(x) if math.isfinite(x) else None


MORE_STATE_MIN_P = 0.5
"""Further states (`sx`) below this probability are left out of scenes and captions."""


def _more_states(x: Any) -> tuple[str, ...]:
    """`sx` as a list of [name, p] -> the names with p >= MORE_STATE_MIN_P, in order."""
    if x is None:
        return ()
    if not isinstance(x, list | tuple):
        raise TokenError(f"token key 'sx' must be a list of [state, p], got {x!r}")
    out = []
    for item in x:
        if not (isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TokenError(f"token key 'sx' must be a list of [state, p], got item {item!r}")
        if isinstance(item[1], int | float) and item[1] >= MORE_STATE_MIN_P:
            out.append(item[0])
    return tuple(out)


def _traits(x: Any) -> tuple[str, ...]:
    """`tr` as a list of names, or a mapping name -> value (shown as `name=value`, `name` when true)."""
    if x is None:
        return ()
    if isinstance(x, str):
        return (x,)
    if isinstance(x, Mapping):
        return tuple(str(k) if v is True else f"{k}={v}" for k, v in x.items() if v not in (None, False))
    if isinstance(x, list | tuple):
        return tuple(str(v) for v in x)
    raise TokenError(f"token key 'tr' must be a list or an object, got {x!r}")


def token_time(tok: Mapping[str, Any]) -> float:
    """When the device emitted a token (device epoch s): onset + latency, or its offset if later."""
    t0 = _num(tok, "t0")
    if t0 is None:
        raise TokenError(f"token has no onset time 't0': {dict(tok)!r}")
    lat = _num(tok, "lat")
    t = t0 + (lat / 1000.0 if lat is not None and lat >= 0 else 0.0)
    t1 = _num(tok, "t1")
    return max(t, t1) if t1 is not None else t


@dataclass
class SceneWindow:
    """The sliding window of one device. Feed tokens in any order; ask for events, snapshot, signature.

    `received` / `local` arguments are the caller's clock (e.g. `time.time()` at reception); leave them
    out and the window's "now" is simply the newest token time.
    """

    dev: str
    window_s: float = DEFAULT_WINDOW_S
    _events: dict[str, SceneEvent] = field(default_factory=dict, init=False)  # by internal key
    _current: dict[str, str] = field(default_factory=dict, init=False)  # event id -> key of its newest event
    _seen: dict[int, float] = field(default_factory=dict, init=False)
    _latest: float = field(default=-math.inf, init=False)
    _offset: float = field(default=0.0, init=False)  # device clock minus local clock
    _offset_at: float | None = field(default=None, init=False)  # local time of that estimate
    _version: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and math.isfinite(self.window_s)):
            raise ValueError(f"window_s must be a positive number of seconds, got {self.window_s!r}")

    @property
    def version(self) -> int:
        """Changes whenever the window's content changes (a token merged, an event aged out)."""
        return self._version

    def now(self, local: float | None = None) -> float:
        """The device time that corresponds to the local clock reading `local` (default: newest token)."""
        if local is None or not math.isfinite(self._latest):
            return self._latest if math.isfinite(self._latest) else (local if local is not None else 0.0)
        return max(self._latest, local + self._offset)

    def feed(self, tok: Mapping[str, Any], received: float | None = None) -> bool:
        """Merge one decoded token; False when it is a duplicate (same seq and time) or for another device."""
        if tok.get("dev") != self.dev:
            return False
        seq = tok.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise TokenError(f"token key 'seq' must be an integer, got {seq!r}")
        label = tok.get("lbl")
        if not isinstance(label, str) or not label:
            raise TokenError(f"token key 'lbl' must be a non-empty string, got {label!r}")
        ph = tok.get("ph")
        if ph not in ("on", "upd", "off"):
            raise TokenError(f"token key 'ph' must be on, upd or off, got {ph!r}")
        if tok.get("id") is None:
            raise TokenError("token has no event id 'id'")
        t_emit = token_time(tok)
        if self._seen.get(seq) == t_emit:
            return False  # a redelivery; the same seq at another time is a restarted device counting again
        t0 = _num(tok, "t0")
        assert t0 is not None  # token_time checked it
        t1 = _num(tok, "t1")
        p = _num(tok, "p")
        st = tok.get("st")
        new = SceneEvent(
            id=str(tok["id"]),
            label=label,
            t0=t0,
            t1=(t1 if t1 is not None else t_emit) if ph == "off" else None,
            last=t_emit,
            p=p if p is not None else 0.0,
            az=_num(tok, "az"),
            el=_num(tok, "el"),
            dsd=_num(tok, "dsd"),
            lvl=_num(tok, "lvl"),
            state=str(st) if st is not None else None,
            state_p=_num(tok, "sp"),
            more_states=_more_states(tok.get("sx")),
            traits=_traits(tok.get("tr")),
            mid=tok.get("mid") if isinstance(tok.get("mid"), str) else None,
            trk=tok.get("trk"),
        )
        key = self._current.get(new.id)
        old = None if key is None else self._events.get(key)
        if (
            key is not None
            and old is not None
            and old.label == new.label
            and not (ph == "on" and abs(t0 - old.t0) > ONSET_TOLERANCE_S)
        ):
            new = _merge(old, new)
        else:  # first phase seen, or the id reused (a restarted device): a new event beside the old one
            key = self._current[new.id] = f"{new.id}#{self._version}"
        self._events[key] = new
        self._seen[seq] = t_emit
        self._latest = max(self._latest, t_emit)
        if received is not None:
            # Delivery delays only make (emitted - received) smaller, so the largest recent value is the
            # best estimate of the clock offset; once it is OFFSET_MEMORY_S old, a smaller one may replace
            # it (the device's clock was set back).
            est = t_emit - received
            if self._offset_at is None or est > self._offset or received - self._offset_at > OFFSET_MEMORY_S:
                self._offset, self._offset_at = est, received
        self._version += 1
        self._forget_seqs()
        return True

    def _forget_seqs(self) -> None:
        horizon = self._latest - 2 * self.window_s
        if len(self._seen) > MAX_SEEN_SEQS or (self._seen and min(self._seen.values()) < horizon - self.window_s):
            self._seen = {s: t for s, t in self._seen.items() if t >= horizon}
            while len(self._seen) > MAX_SEEN_SEQS:
                self._seen.pop(next(iter(self._seen)))

    def prune(self, local: float | None = None) -> None:
        """Forget events that ended before the window's start."""
        start = self.now(local) - self.window_s
        gone = [k for k, e in self._events.items() if (e.t1 if e.t1 is not None else e.last) < start]
        for k in gone:
            del self._events[k]
        self._current = {i: k for i, k in self._current.items() if k in self._events}
        if gone:
            self._version += 1

    def events(self, local: float | None = None) -> list[SceneEvent]:
        """Events overlapping the window, ordered by onset (then label)."""
        start = self.now(local) - self.window_s
        inside = [e for e in self._events.values() if (e.t1 if e.t1 is not None else e.last) >= start]
        return sorted(inside, key=lambda e: (e.t0, e.label, e.id))

    def snapshot(self, local: float | None = None) -> Scene:
        end = self.now(local)
        return Scene(dev=self.dev, start=end - self.window_s, end=end, events=tuple(self.events(local)))

    def signature(self, local: float | None = None) -> Signature:
        """Labels with their coarse (quarter-circle) directions: changes when the scene changes."""
        return frozenset((e.label, sector(e.az, SECTORS_4)) for e in self.events(local))


def _merge(old: SceneEvent, new: SceneEvent) -> SceneEvent:
    """Phases of one event -> one event: newest direction/state, highest p and level, earliest onset."""
    newer = new.last >= old.last
    a, b = (old, new) if newer else (new, old)  # b is the newer one

    def pick(x: Any, y: Any) -> Any:
        return y if y is not None else x

    return SceneEvent(
        id=old.id,
        label=b.label,
        t0=min(old.t0, new.t0),
        t1=pick(old.t1, new.t1),
        last=max(old.last, new.last),
        p=max(old.p, new.p),
        az=pick(a.az, b.az),
        el=pick(a.el, b.el),
        dsd=pick(a.dsd, b.dsd),
        lvl=max((x for x in (old.lvl, new.lvl) if x is not None), default=None),
        state=pick(a.state, b.state),
        state_p=pick(a.state_p, b.state_p) if b.state is None or b.state_p is not None else None,
        more_states=b.more_states if b.state is not None else a.more_states,
        traits=tuple(dict.fromkeys(a.traits + b.traits)),
        mid=pick(a.mid, b.mid),
        trk=pick(a.trk, b.trk),
        tokens=old.tokens + new.tokens,
    )
