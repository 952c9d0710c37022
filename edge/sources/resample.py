"""Audio at any sample rate -> audio at SAMPLE_RATE (16 kHz), by polyphase FIR filtering.

The filter: a linear-phase low-pass FIR, Kaiser-windowed sinc designed with `scipy.signal.kaiserord`
for `ATTENUATION_DB` of stop-band attenuation. Its pass band ends at `PASS_FRACTION` of the lower of the
two rates and its stop band starts at the lower Nyquist frequency (half the lower rate):

    44.1 / 48 kHz -> 16 kHz: flat (ripple ~0.003 dB) to 7 kHz, >= 70 dB down from 8 kHz on, so content
                             above 8 kHz cannot alias into the band;
    8 kHz -> 16 kHz:         flat to 3.5 kHz, images above 4 kHz >= 70 dB down.

The rate ratio is reduced to up / down (44100 -> 16000 is 160 / 441) and the filter runs at
`rate_in * up` as `scipy.signal.resample_poly` runs it: `resample_whole` is `resample_poly` with this
filter, and `Resampler` is its streaming twin. `Resampler` keeps a short input history between chunks
and gives the same samples as `resample_whole` on the concatenated input however the input is cut
(same arithmetic, so the same float64 values), with memory bounded by the chunk size plus the history.

scipy.signal is imported only when a filter is designed (it takes over a second to import, and a
16 kHz file or device never needs it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import gcd

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import InputError

F64 = npt.NDArray[np.float64]

PASS_FRACTION = 0.4375
"""End of the pass band as a fraction of the lower rate (7 kHz when the lower rate is 16 kHz)."""
STOP_FRACTION = 0.5
"""Start of the stop band as a fraction of the lower rate (its Nyquist frequency)."""
ATTENUATION_DB = 70.0
"""Stop-band attenuation of the design (Kaiser); the pass-band ripple is 10 ** (-70 / 20), ~0.003 dB."""
MAX_UP = 2048
"""Largest interpolation factor accepted; every common audio rate needs at most 640 (11025 Hz)."""


@dataclass(frozen=True)
class PolyphaseFilter:
    """A resampling ratio `up / down` (reduced) and its low-pass FIR `taps` (odd length, unit DC gain;
    the single tap 1.0 when the rates are equal)."""

    rate_in: int
    rate_out: int
    up: int
    down: int
    taps: F64


@lru_cache(maxsize=16)
def design_filter(rate_in: int, rate_out: int = SAMPLE_RATE) -> PolyphaseFilter:
    """The anti-aliasing / anti-imaging filter for `rate_in` -> `rate_out` (see the module docstring).

    Raises InputError for a rate that is not a positive integer or whose ratio to `rate_out` does not
    reduce to an interpolation factor of at most MAX_UP (the filter would need millions of taps).
    """
    if rate_in <= 0 or int(rate_in) != rate_in:
        raise InputError(f"sample rate {rate_in!r} Hz is not a positive integer")
    g = gcd(rate_out, rate_in)
    up, down = rate_out // g, rate_in // g
    if up > MAX_UP:
        raise InputError(
            f"sample rate {rate_in} Hz is not supported: {rate_out}/{rate_in} Hz reduces to {up}/{down}, "
            f"interpolation factors above {MAX_UP} are not supported"
        )
    if up == down == 1:
        identity = np.ones(1)
        identity.setflags(write=False)
        return PolyphaseFilter(rate_in, rate_out, 1, 1, identity)
    from scipy.signal import firwin, kaiserord

    fs_up = float(rate_in * up)
    low = min(rate_in, rate_out)
    f_pass, f_stop = PASS_FRACTION * low, STOP_FRACTION * low
    numtaps, beta = kaiserord(ATTENUATION_DB, (f_stop - f_pass) / (fs_up / 2.0))
    numtaps |= 1  # odd: a whole-sample group delay, as resample_poly expects
    taps = firwin(numtaps, (f_pass + f_stop) / 2.0, window=("kaiser", beta), fs=fs_up)
    taps = np.asarray(taps, dtype=np.float64)
    taps.setflags(write=False)
    return PolyphaseFilter(rate_in, rate_out, up, down, taps)


def resample_whole(x: npt.NDArray[np.floating], rate_in: int, rate_out: int = SAMPLE_RATE) -> F64:
    """[C, N] at `rate_in` -> float64 [C, ceil(N * up / down)] at `rate_out`, in one call.

    The reference for `Resampler`: `scipy.signal.resample_poly` with `design_filter`'s taps.
    """
    from scipy.signal import resample_poly

    f = design_filter(rate_in, rate_out)
    x64 = np.asarray(x, dtype=np.float64)
    if f.up == f.down == 1:
        return x64.copy()
    return np.asarray(resample_poly(x64, f.up, f.down, axis=-1, window=f.taps), dtype=np.float64)


class Resampler:
    """Streaming `resample_whole`: feed [C, n] chunks to `process`, then call `flush` once at the end.

    Output sample m is sum_n x[n] * h[(m + delay) * down - n * up] with h the zero-padded, `up`-scaled
    taps, exactly as in resample_poly, and the total output length is ceil(N * up / down).
    """

    def __init__(self, channels: int, rate_in: int, rate_out: int = SAMPLE_RATE) -> None:
        self.filter = design_filter(rate_in, rate_out)
        up, down = self.filter.up, self.filter.down
        self._channels = channels
        self._identity = up == down == 1
        half_len = (self.filter.taps.size - 1) // 2
        pre_pad = down - half_len % down  # as resample_poly: puts output samples on the filter centre
        self._h = np.concatenate([np.zeros(pre_pad), self.filter.taps * up])
        self._delay = (half_len + pre_pad) // down  # outputs resample_poly drops at the start
        self._buf: F64 = np.zeros((channels, 0))
        self._start = 0  # stream index of self._buf[:, 0]; a multiple of `down`
        self._n_in = 0  # input samples seen
        self._next = 0  # index of the next output sample to emit
        self._flushed = False
        if not self._identity:
            from scipy.signal import upfirdn

            self._upfirdn = upfirdn

    @property
    def rate_in(self) -> int:
        return self.filter.rate_in

    def process(self, chunk: npt.NDArray[np.floating]) -> F64:
        """Consume [C, n] input samples; return the [C, k] output samples they complete (k may be 0)."""
        if self._flushed:
            raise RuntimeError("Resampler.process called after flush")
        x = np.asarray(chunk, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self._channels:
            raise ValueError(f"expected a [{self._channels}, n] chunk, got shape {x.shape}")
        if self._identity:
            self._n_in += x.shape[1]
            return x.copy()
        self._buf = np.concatenate([self._buf, x], axis=1)
        self._n_in += x.shape[1]
        # Output K = m + delay needs inputs up to floor(K * down / up): all present while K*down < n*up.
        last = (self._n_in * self.filter.up - 1) // self.filter.down - self._delay
        return self._emit(last)

    def flush(self) -> F64:
        """The remaining output samples, as if the input were followed by zeros (resample_poly's padding)."""
        if self._flushed:
            raise RuntimeError("Resampler.flush called twice")
        self._flushed = True
        up, down = self.filter.up, self.filter.down
        if self._identity:
            return np.zeros((self._channels, 0))
        n_out = -(-self._n_in * up // down)
        if n_out <= self._next:
            return np.zeros((self._channels, 0))
        need = (n_out - 1 + self._delay) * down // up + 1  # inputs read by the last output
        pad = max(0, need - self._start - self._buf.shape[1])
        self._buf = np.concatenate([self._buf, np.zeros((self._channels, pad))], axis=1)
        return self._emit(n_out - 1)

    def _emit(self, last: int) -> F64:
        """Outputs self._next .. last (inclusive) from the buffered input; then drop unneeded input."""
        up, down = self.filter.up, self.filter.down
        if last < self._next:
            return np.zeros((self._channels, 0))
        y = self._upfirdn(self._h, self._buf, up, down, axis=-1)
        offset = self._start * up // down - self._delay  # output index of y[:, 0]
        out = np.ascontiguousarray(y[:, self._next - offset : last + 1 - offset])
        self._next = last + 1
        # The next output reads inputs from ceil(((next + delay) * down - len(h) + 1) / up) on.
        first_needed = -(-((self._next + self._delay) * down - self._h.size + 1) // up)
        end = self._start + self._buf.shape[1]
        new_start = min(max(self._start, first_needed // down * down), end // down * down)
        if new_start > self._start:
            self._buf = self._buf[:, new_start - self._start :]
            self._start = new_start
        return out
