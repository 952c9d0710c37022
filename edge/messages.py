"""The typed messages that cross each stage boundary of the edge data flow.

Every message carries stream time (`t`, seconds since the stream started, sample-accurate: the
time of its first sample or frame) and a sequence number (`seq`) counted per stage. Wall-clock time is
attached once, when a token is built (`edge.tokens`).

    source   -> Block      float32 [C, N] at SAMPLE_RATE
    stft     -> Spectra    complex64 [C, F, T] (one STFT feeds features and localisation)
    logmel   -> Features   float32 [T, N_MELS] (channel mix)
    model    -> Scores     float32 [T', K] frame-level probabilities at the model's output hop
    sed      -> Event      on / off with onset/offset, label, confidence
    localise -> Bearing    azimuth / elevation (degrees) with spread and relative power
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
C64 = npt.NDArray[np.complex64]


@dataclass(frozen=True)
class Block:
    """A block of multichannel audio. `samples`: float32 [channels, n] in [-1, 1] at `sample_rate`."""

    samples: F32
    t: float
    seq: int
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n(self) -> int:
        return int(self.samples.shape[1])


@dataclass(frozen=True)
class Spectra:
    """STFT frames of all channels. `frames`: complex64 [channels, n_fft // 2 + 1, T].

    `t` is the stream time of the first frame's centre-less start (frame k starts at t + k * hop).
    `index` is the stream-wide index of the first frame.
    """

    frames: C64
    t: float
    seq: int
    index: int
    hop_s: float


@dataclass(frozen=True)
class Features:
    """Log-mel frames. `logmel`: float32 [T, n_mels]; frame k starts at t + k * hop_s."""

    logmel: F32
    t: float
    seq: int
    index: int
    hop_s: float


@dataclass(frozen=True)
class Scores:
    """Frame-level class probabilities. `probs`: float32 [T, K]; row k covers [t + k*hop_s, +hop_s).

    `ready` is the stream time at which these scores could first be computed (the end of the last
    audio sample the model saw): decisions taken on them cannot be earlier.
    """

    probs: F32
    t: float
    seq: int
    index: int
    hop_s: float
    labels: tuple[str, ...]
    ready: float = 0.0


@dataclass(frozen=True)
class Bearing:
    """One direction of arrival (degrees, conventions of ARCHITECTURE.md) with its angular spread.

    `power` is relative to the strongest source of the same estimate (1.0 for the dominant one).
    `elevation` is None where the array cannot tell it (linear or planar arrays only give a
    hemisphere). `ambiguous` marks a linear array's front/back mirror; `mirror` is then the other
    azimuth the same delays fit (the reflection across the array axis).
    """

    azimuth: float
    elevation: float | None
    spread: float
    power: float
    ambiguous: bool = False
    mirror: float | None = None


@dataclass(frozen=True)
class Track:
    """A tracked source (edge.tracking). `azimuth`/`elevation` degrees, `velocity` degrees per second
    (azimuth rate, counter-clockwise positive); `t` stream seconds of the last update; `born` stream
    seconds of its first bearing; `hits` bearings it has absorbed. `elevation` None as in `Bearing`.
    `confirmed` is False while the track is tentative (too few bearings yet)."""

    id: int
    azimuth: float
    elevation: float | None
    velocity: float
    spread: float
    t: float
    born: float
    hits: int
    confirmed: bool = True


Phase = Literal["on", "upd", "off"]


@dataclass(frozen=True)
class StateEstimate:
    """A state ("accelerating", "approaching", ...) or trait ("heavy") with its confidence `p` in [0, 1];
    `group` is its ontology group ("speed", "motion", ...): one estimate per group and event."""

    name: str
    p: float
    group: str


@dataclass(frozen=True)
class Event:
    """A sound event phase. `onset`/`offset` are stream seconds; `offset` is None while active.

    `emitted` is the stream time at which the event was decided (for `lat`, detection latency).
    """

    id: int
    phase: Phase
    label: str
    mid: str
    code: int
    p: float
    onset: float
    offset: float | None
    emitted: float
    seq: int
    level_dbfs: float
    bearings: tuple[Bearing, ...] = field(default_factory=tuple)
    track: int | None = None  # id of the track the dominant bearing belongs to (edge.tracking)
    azimuth_end: float | None = None  # a moving source's azimuth at the event's end (bearings[0]: start)
    # issue 7: DSP-derived states (edge.states) and traits (edge.ontology), each with a confidence
    states: tuple[StateEstimate, ...] = field(default_factory=tuple)
    traits: tuple[StateEstimate, ...] = field(default_factory=tuple)
