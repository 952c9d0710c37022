"""Bearings -> Tracks: a multi-target tracker on the circle (and the sphere for 3-D arrays).

Each track is a constant-velocity Kalman filter on azimuth, state [azimuth, azimuth rate], whose
innovations are wrapped to (-180, 180], so a source crossing +/-180 degrees keeps its track and its
velocity. Arrays that report elevation (3-D) add a second constant-velocity filter on elevation.

One `update(t, bearings)` per localiser hop:

1. every track is predicted to `t`;
2. bearings are assigned to tracks by a global nearest-neighbour assignment (Hungarian, on the
   normalised innovation squared) inside a chi-square gate that is also capped at `max_gate_deg`
   (`tentative_gate_deg` for tentative tracks, so random bearings rarely confirm one);
3. assigned tracks are corrected; a bearing that no track takes (and is strong enough) starts a
   tentative track;
4. a tentative track is confirmed after `confirm_hits` bearings; it is dropped when it has not been
   seen for `tentative_coast_s` seconds (sounds such as barks or footsteps come and go), when it is
   not confirmed within `confirm_window_s` of its birth (random bearings rarely gather that fast), or
   when it lies within `merge_deg` of an older track; a confirmed track dies when it has not been seen for
   `max_coast_s` seconds. Confirmed tracks are never merged: two sources that cross keep their ids.

A track gets its id at birth (so the bearings it took while tentative can be credited to it once it
is confirmed); ids count up from 0 and wrap at 65536 (the token's `trk` is a u16), skipping ids still
in use. `update` returns the confirmed tracks; `live` also the tentative ones (`confirmed` False).
Pure and synchronous: the caller owns the clock (stream seconds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.errors import ConfigError
from edge.messages import Bearing, Track

TRACK_ID_LIMIT = 1 << 16
_BIG = 1e9


@dataclass(frozen=True)
class TrackerConfig:
    meas_sigma_deg: float = 4.0  # bearing noise (1 sigma)
    accel_sigma_deg_s2: float = 10.0  # white-acceleration process noise (1 sigma, deg/s^2)
    init_velocity_sigma_deg_s: float = 30.0  # prior on a new track's angular velocity
    gate_chi2: float = 9.0  # 3 sigma on one degree of freedom
    max_gate_deg: float = 30.0
    tentative_gate_deg: float = 10.0  # a tentative track takes only bearings this close (clutter)
    birth_min_power: float = 0.5  # relative power a bearing needs to start a track
    confirm_hits: int = 3
    tentative_coast_s: float = 1.0
    confirm_window_s: float = 1.2  # a tentative track not confirmed this long after its birth is dropped
    max_coast_s: float = 1.5
    merge_deg: float = 8.0

    def __post_init__(self) -> None:
        for name in ("meas_sigma_deg", "accel_sigma_deg_s2", "init_velocity_sigma_deg_s", "gate_chi2"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"tracker {name}={v!r}: must be a positive number")
        for name in ("max_gate_deg", "tentative_gate_deg"):
            v = getattr(self, name)
            if not 0.0 < v <= 180.0:
                raise ConfigError(f"tracker {name}={v!r}: must be in (0, 180]")
        if not 0.0 <= self.birth_min_power <= 1.0:
            raise ConfigError(f"tracker birth_min_power={self.birth_min_power!r}: must be in [0, 1]")
        if self.confirm_hits < 1:
            raise ConfigError(f"tracker confirm_hits={self.confirm_hits!r}: must be >= 1")
        for name in ("tentative_coast_s", "confirm_window_s", "max_coast_s"):
            v = getattr(self, name)
            if not 0.0 < v <= 600.0:
                raise ConfigError(f"tracker {name}={v!r}: must be in (0, 600] seconds")
        if not 0.0 <= self.merge_deg < 180.0:
            raise ConfigError(f"tracker merge_deg={self.merge_deg!r}: must be in [0, 180)")


def wrap(a: float) -> float:
    """An angle in degrees wrapped to (-180, 180]."""
    w = math.fmod(a + 180.0, 360.0)
    if w < 0:
        w += 360.0
    w -= 180.0
    return 180.0 if w == -180.0 else w


class _Cv:
    """A 1-D constant-velocity Kalman filter: state [angle, rate] (degrees, degrees per second), its
    covariance [[p00, p01], [p01, p11]]; in Python floats (2 x 2 numpy products cost more than they compute)."""

    def __init__(self, z: float, cfg: TrackerConfig, circular: bool) -> None:
        self.angle, self.rate = float(z), 0.0
        self.p00, self.p01, self.p11 = cfg.meas_sigma_deg**2, 0.0, cfg.init_velocity_sigma_deg_s**2
        self.q = cfg.accel_sigma_deg_s2**2
        self.r = cfg.meas_sigma_deg**2
        self.circular = circular

    def predict(self, dt: float) -> None:
        """x <- F x, P <- F P F' + Q with F = [[1, dt], [0, 1]] and white-acceleration Q."""
        if dt <= 0:
            return
        p00, p01, p11, q = self.p00, self.p01, self.p11, self.q
        self.angle += dt * self.rate
        self.p00 = p00 + 2.0 * dt * p01 + dt * dt * p11 + q * dt**3 / 3.0
        self.p01 = p01 + dt * p11 + q * dt**2 / 2.0
        self.p11 = p11 + q * dt
        self._norm()

    def innovation(self, z: float) -> tuple[float, float]:
        """(innovation, its variance) of a measurement z."""
        y = z - self.angle
        return (wrap(y) if self.circular else y), self.p00 + self.r

    def correct(self, z: float) -> None:
        y, s = self.innovation(z)
        k0, k1 = self.p00 / s, self.p01 / s
        self.angle += k0 * y
        self.rate += k1 * y
        p00, p01, p11 = self.p00, self.p01, self.p11
        self.p00 = p00 - k0 * p00
        self.p01 = ((p01 - k0 * p01) + (p01 - k1 * p00)) / 2.0  # P - k P[0, :], symmetrised
        self.p11 = p11 - k1 * p01
        self._norm()

    def _norm(self) -> None:
        if self.circular:
            self.angle = wrap(self.angle)
        elif abs(self.angle) > 90.0:  # elevation: stop at the pole
            self.angle = math.copysign(90.0, self.angle)
            self.rate = 0.0


@dataclass
class _Live:
    az: _Cv
    el: _Cv | None
    born: float
    t: float
    last_seen: float
    id: int
    hits: int = 1
    confirmed: bool = False


class Tracker:
    """Multi-target bearing tracker (see the module docstring). `update` returns the confirmed tracks."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._live: list[_Live] = []
        self._next_id = 0
        self._t: float | None = None

    @property
    def tracks(self) -> tuple[Track, ...]:
        """The confirmed tracks as of the last update, oldest first."""
        return tuple(self._snapshot(tr) for tr in self._live if tr.confirmed)

    @property
    def live(self) -> tuple[Track, ...]:
        """Every live track, tentative ones included, oldest first."""
        return tuple(self._snapshot(tr) for tr in self._live)

    def update(self, t: float, bearings: Sequence[Bearing]) -> tuple[Track, ...]:
        """Advance to stream time `t` (seconds, never backwards) with this hop's bearings."""
        if self._t is not None and t < self._t:
            raise ConfigError(f"tracker time went backwards: {t!r} after {self._t!r}")
        cfg = self.config
        for tr in self._live:
            dt = t - tr.t
            tr.az.predict(dt)
            if tr.el is not None:
                tr.el.predict(dt)
            tr.t = t
        self._t = t
        taken = self._associate(bearings)
        for j, b in enumerate(bearings):
            i = taken.get(j)
            if i is not None:
                tr = self._live[i]
                tr.az.correct(b.azimuth)
                if tr.el is not None and b.elevation is not None:
                    tr.el.correct(b.elevation)
                tr.hits += 1
                tr.last_seen = t
        for j, b in enumerate(bearings):
            if j not in taken and b.power >= cfg.birth_min_power:
                el = None if b.elevation is None else _Cv(b.elevation, cfg, circular=False)
                az = _Cv(b.azimuth, cfg, circular=True)
                self._live.append(_Live(az=az, el=el, born=t, t=t, last_seen=t, id=self._new_id()))
        self._prune(t)
        for tr in self._live:
            tr.confirmed = tr.confirmed or tr.hits >= cfg.confirm_hits
        return self.tracks

    def _associate(self, bearings: Sequence[Bearing]) -> dict[int, int]:
        """{bearing index: live-track index} by a gated global nearest-neighbour assignment."""
        if not bearings or not self._live:
            return {}
        cfg = self.config
        cost = np.full((len(bearings), len(self._live)), _BIG)
        for j, b in enumerate(bearings):
            for i, tr in enumerate(self._live):
                y, s = tr.az.innovation(b.azimuth)
                d2 = y * y / s
                if tr.el is not None and b.elevation is not None:
                    ye, se = tr.el.innovation(b.elevation)
                    d2 += ye * ye / se
                if d2 <= cfg.gate_chi2 and abs(y) <= (cfg.max_gate_deg if tr.confirmed else cfg.tentative_gate_deg):
                    # confirmed tracks first: a small bonus, less than any gate's width
                    cost[j, i] = d2 - (0.5 if tr.confirmed else 0.0)
        rows, cols = linear_sum_assignment(cost)
        return {int(j): int(i) for j, i in zip(rows, cols, strict=True) if cost[j, i] < _BIG}

    def _prune(self, t: float) -> None:
        cfg = self.config
        keep: list[_Live] = []
        for tr in self._live:
            if t - tr.last_seen > (cfg.max_coast_s if tr.confirmed else cfg.tentative_coast_s):
                continue
            if not tr.confirmed and tr.hits < cfg.confirm_hits and t - tr.born >= cfg.confirm_window_s:
                continue
            keep.append(tr)
        # a tentative track on the direction of an older track is a duplicate of it; confirmed tracks
        # are never merged (two sources may cross: each keeps its id and coasts through the crossing)
        keep.sort(key=lambda tr: (not tr.confirmed, tr.born))
        out: list[_Live] = []
        for tr in keep:
            if tr.confirmed or all(abs(wrap(tr.az.angle - o.az.angle)) > cfg.merge_deg for o in out):
                out.append(tr)
        out.sort(key=lambda tr: tr.born)
        self._live = out

    def _new_id(self) -> int:
        used = {tr.id for tr in self._live}
        while self._next_id % TRACK_ID_LIMIT in used:
            self._next_id += 1
        i = self._next_id % TRACK_ID_LIMIT
        self._next_id += 1
        return i

    @staticmethod
    def _snapshot(tr: _Live) -> Track:
        return Track(
            id=tr.id,
            azimuth=round(tr.az.angle, 2),
            elevation=None if tr.el is None else round(tr.el.angle, 2),
            velocity=round(tr.az.rate, 2),
            spread=round(math.sqrt(tr.az.p00), 2),
            t=tr.t,
            born=tr.born,
            hits=tr.hits,
            confirmed=tr.confirmed,
        )

