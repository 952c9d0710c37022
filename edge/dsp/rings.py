"""Per-frame values -> per-output-frame rings: the pipeline's level and cross-spectrum accumulation
(numpy reference).

An output frame is `sub` consecutive STFT frames; a ring of R slots holds output frame j in slot
j mod R. Each slot keeps the sum of its frames' power (float64), their count, the output frame's stream
index, and optionally the sum of their cross-spectra. Sums are taken in frame order, so they do not
depend on how the stream was cut into chunks.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register
from edge.errors import InputError


@register(REFERENCE, "ring_accumulate")
def ring_accumulate(
    first: int,
    sub: int,
    power: npt.NDArray[np.float64],
    cross: npt.NDArray[np.complex64] | None,
    psum: npt.NDArray[np.float64],
    pcount: npt.NDArray[np.int64],
    pframe: npt.NDArray[np.int64],
    ring: npt.NDArray[np.complex64] | None,
) -> None:
    """Add T frames (stream indices first .. first + T - 1) in place: power [T] into `psum` [R] and
    `pcount` [R], cross [T, ...] into `ring` [R, ...] (both None, or both given). A slot is cleared
    (and `pframe` set to its output frame) when its output frame's first STFT frame arrives.
    T must be at most (R - 1) * sub (no slot is written for two output frames in one call)."""
    t = len(power)
    n_slots = len(psum)
    if t > (n_slots - 1) * sub:
        raise InputError(f"ring_accumulate: {t} frames overrun a ring of {n_slots} slots of {sub} frames")
    if (cross is None) != (ring is None) or (cross is not None and len(cross) != t):
        raise InputError("ring_accumulate: cross-spectra and their ring must come together, one row per frame")
    if t == 0:
        return
    f = first + np.arange(t)
    slots = (f // sub) % n_slots
    starts = f % sub == 0
    fresh = slots[starts]  # output frames that start in this call
    pframe[fresh] = f[starts] // sub
    psum[fresh] = 0.0
    pcount[fresh] = 0
    if ring is not None:
        ring[fresh] = 0
    # The frames of one phase (f mod sub) fall in distinct slots, so each pass adds them with one
    # fancy-indexed +=; passes in phase order add each slot's frames in frame order (as np.add.at would),
    # wherever the call's first frame falls in its output frame.
    for phase in range(sub):
        r = (phase - first) % sub
        if r >= t:
            continue
        s = slots[r::sub]
        psum[s] += power[r::sub]
        pcount[s] += 1
        if ring is not None and cross is not None:
            ring[s] += cross[r::sub]
