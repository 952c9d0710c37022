"""Line faults for the simulator: bytes in -> the bytes a bad serial line delivers (seeded).

Each byte is independently corrupted (one random bit flipped), duplicated or dropped with the given
probabilities, in that order. A slow link is a baud rate: 10 bit times per byte (8N1) on the line.
The same seed gives the same faults for the same byte stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge.errors import ConfigError

MAX_RATE = 0.5


@dataclass(frozen=True)
class Faults:
    """What the simulated line and MCU do wrong. Rates are per byte, in both directions.

    `baud`: the line's speed (None: as fast as the pseudo-terminal). `power_loss_after`: the MCU loses
    power (stops dead, keeping only what it had written to flash) once it has received that many bytes
    of flash data in this run; None: never.
    """

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    baud: int | None = None
    power_loss_after: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "duplicate"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= MAX_RATE):
                raise ConfigError(f"fault rate {name}={v!r}: must be a probability per byte in [0, {MAX_RATE}]")
        if self.baud is not None and not (isinstance(self.baud, int) and 300 <= self.baud <= 100_000_000):
            raise ConfigError(f"baud {self.baud!r}: must be an integer from 300 to 100000000")
        if self.power_loss_after is not None and not (
            isinstance(self.power_loss_after, int) and self.power_loss_after >= 0
        ):
            raise ConfigError(f"power_loss_after {self.power_loss_after!r}: must be a byte count >= 0")

    @property
    def bytes_clean(self) -> bool:
        return self.drop == 0 and self.corrupt == 0 and self.duplicate == 0

    def byte_time_s(self) -> float:
        """Seconds one byte occupies the line (0 without a baud rate)."""
        return 0.0 if self.baud is None else 10.0 / self.baud


class FaultyLine:
    """One direction of the line: applies `faults` to each piece of bytes passing through."""

    def __init__(self, faults: Faults, stream: int) -> None:
        self.faults = faults
        self._rng = np.random.default_rng([faults.seed, stream])
        self.dropped = 0
        self.corrupted = 0
        self.duplicated = 0

    def __call__(self, data: bytes) -> bytes:
        f = self.faults
        if f.bytes_clean or not data:
            return data
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        if f.corrupt:
            hit = self._rng.random(arr.size) < f.corrupt
            n = int(hit.sum())
            if n:
                arr[hit] ^= (np.uint8(1) << self._rng.integers(0, 8, n).astype(np.uint8)).astype(np.uint8)
                self.corrupted += n
        if f.duplicate:
            twice = self._rng.random(arr.size) < f.duplicate
            n = int(twice.sum())
            if n:
                arr = np.repeat(arr, 1 + twice.astype(np.intp))
                self.duplicated += n
        if f.drop:
            keep = self._rng.random(arr.size) >= f.drop
            self.dropped += int(arr.size - keep.sum())
            arr = arr[keep]
        return arr.tobytes()
