"""GCC-PHAT cross-correlations -> SRP-PHAT steered response power over a direction grid; the
coarse-to-fine search of a peak off the grid; narrowband votes of time-frequency cells (the localiser's
multi-source histogram)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register


@register(REFERENCE, "srp_map")
def srp_map(cc: npt.NDArray[np.floating], lag_index: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """cc [P, L] cross-correlations; lag_index [G, P] fractional lag index of each pair for each grid
    direction -> power [G]: the sum over pairs of the linearly interpolated cross-correlation."""
    n_pairs, length = cc.shape
    k = np.clip(lag_index, 0.0, length - 1.000001)
    k0 = np.floor(k).astype(np.intp)
    frac = (k - k0).astype(np.float32)
    rows = np.arange(n_pairs)[None, :]
    v = cc[rows, k0] * (1.0 - frac) + cc[rows, k0 + 1] * frac
    return v.sum(axis=1).astype(np.float32)


def srp_lags(
    az_deg: npt.NDArray[np.float64],
    el_deg: npt.NDArray[np.float64],
    diff_t: npt.NDArray[np.float64],
    scale: tuple[float, float, float, float],
) -> npt.NDArray[np.float64]:
    """[G, P] fractional lag index of each pair for directions in degrees: u the unit vector
    (cos el cos az, cos el sin az, sin el), lag = (-(u @ diff_t) / c * rate) * upsample + lag0 with
    `scale` = (c, rate, upsample, lag0) and `diff_t` [3, P] the pairs' mic position differences."""
    c, rate, up, lag0 = scale
    az_r = np.radians(np.asarray(az_deg, dtype=np.float64))
    el_r = np.radians(np.asarray(el_deg, dtype=np.float64))
    cos_el = np.cos(el_r)
    u = np.empty((az_r.size, 3), np.float64)
    u[:, 0] = cos_el * np.cos(az_r)
    u[:, 1] = cos_el * np.sin(az_r)
    u[:, 2] = np.sin(el_r)
    tdoa = -(u @ diff_t) / c  # arrival at i minus arrival at j
    return np.asarray(tdoa * rate * up + lag0)


@register(REFERENCE, "srp_refine")
def srp_refine(
    cc: npt.NDArray[np.floating],
    diff_t: npt.NDArray[np.float64],
    scale: tuple[float, float, float, float],
    daz: npt.NDArray[np.float64],
    del_: npt.NDArray[np.float64],
    sizes: npt.NDArray[np.int64],
    az: float,
    el: float,
    el_min: float,
) -> tuple[float, float]:
    """Coarse-to-fine search of an SRP-PHAT peak from a grid direction (az, el), degrees: level n's
    candidates are (az + daz[i], clip(el + del_[i], el_min, 90)) for its run of `sizes[n]` offsets
    (`daz`, `del_` hold every level's in order); each candidate's power is `srp_map` of cc [P, L] at
    its `srp_lags` and the first candidate of the largest power is the next level's centre.
    -> the last level's best (az, el)."""
    off = 0
    for n in sizes:
        a = az + daz[off : off + n]
        e = np.minimum(np.maximum(el + del_[off : off + n], el_min), 90.0)
        best = int(np.argmax(srp_map(cc, srp_lags(a, e, diff_t, scale))))
        az, el = float(a[best]), float(e[best])
        off += int(n)
    return az, el


NB_EPS = 1e-12  # |x| floor of the unit cross-spectra in nb_vote


@register(REFERENCE, "nb_vote")
def nb_vote(
    blocks: npt.NDArray[np.complexfloating], steer_re: npt.NDArray[np.floating], steer_im: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """blocks [K, P, B] cross-spectra (summed per block of frames); steer_re, steer_im [B, P, G] real and
    imaginary parts of a narrowband pair steering -> (vote [B, K], weight [B, K]): each (bin, block)
    cell's unit cross-spectra u = x / (|x| + NB_EPS) steered over the G directions,
    resp = sum_p Re(u_p steer_p); vote is the (first) direction of the largest resp, weight the largest
    minus the mean over the directions, over P."""
    unit = blocks / (np.abs(blocks) + NB_EPS)  # [K, P, B]
    u = unit.transpose(2, 0, 1)  # [B, K, P]
    resp = np.matmul(u.real, steer_re) - np.matmul(u.imag, steer_im)  # [B, K, G]
    vote = np.argmax(resp, axis=2)  # [B, K]
    peak = np.take_along_axis(resp, vote[:, :, None], axis=2)[:, :, 0]  # the maxima
    weight = (peak - resp.mean(axis=2)) / blocks.shape[1]
    return vote.astype(np.int64, copy=False), weight.astype(np.float32, copy=False)
