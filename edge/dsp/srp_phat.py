"""GCC-PHAT cross-correlations -> SRP-PHAT steered response power over a direction grid; the
coarse-to-fine search of a peak off the grid; the map's sources (azimuth profile peaks, refined);
narrowband votes of time-frequency cells (the localiser's multi-source histogram)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register
from edge.errors import InputError

F64 = npt.NDArray[np.float64]


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


def wrap1(a: float) -> float:
    """An angle in degrees wrapped to (-180, 180] (Python's float %, as np.mod, without numpy's per-call cost)."""
    w = (float(a) + 180.0) % 360.0 - 180.0
    return 180.0 if w == -180.0 else w


def ang_dist(a: float, b: float) -> float:
    """Absolute angular distance of two azimuths, degrees."""
    return abs(wrap1(float(a) - float(b)))


def local_maxima(v: npt.NDArray[np.float64], circular: bool) -> list[int]:
    """Indices k with v[k] >= its left neighbour and v[k] > its right one (a plateau counts once, at its
    right end); outside a non-circular profile is -inf. Fewer than 3 values: the first maximum."""
    n = len(v)
    if n < 3:
        return [int(np.argmax(v))]
    if circular:
        left, right = np.concatenate([v[-1:], v[:-1]]), np.concatenate([v[1:], v[:1]])
    else:
        left = np.concatenate([[-np.inf], v[:-1]])
        right = np.concatenate([v[1:], [-np.inf]])
    peaks: list[int] = np.flatnonzero((v >= left) & (v > right)).tolist()
    return peaks


def peaks_highest_first(v: npt.NDArray[np.float64], circular: bool) -> list[int]:
    """`local_maxima` of v, highest first (ties in index order)."""
    vl = v.tolist()
    return sorted(local_maxima(v, circular), key=lambda k: -vl[k])


def half_width(norm: npt.NDArray[np.float64], k: int, step: float, circular: bool) -> float:
    """Half the width (degrees) of the peak at k where it stays above half its height."""
    return half_width_of(norm.tolist(), k, step, circular)  # Python floats: no per-element numpy cost


def half_width_of(v: list[float], k: int, step: float, circular: bool, scale: float = 1.0) -> float:
    """`half_width` of the values `v / scale` (each divided as numpy would, only where visited)."""
    n = len(v)
    half = v[k] / scale / 2.0
    width = 0
    for direction in (-1, 1):
        j = k
        for _ in range(n // 2):
            nj = j + direction
            if not circular and not 0 <= nj < n:
                break
            nj %= n
            if v[nj] / scale < half:
                break
            j = nj
            width += 1
    return (width + 1) * step / 2.0


@dataclass(frozen=True, eq=False)
class SrpGrid:
    """The constant tables of `srp_peaks` for one localiser, checked once and kept as read-only copies:
    the grid's fractional lags `lag_index` [G, P] (sorted by azimuth: `az_start` [A] is each azimuth's
    first grid index, `az_vals` [A] its azimuth, ascending), the grid directions `grid_az`, `grid_el` [G],
    whether the azimuth profile wraps around (`circular`), and the refinement's constants (`srp_refine`'s
    diff_t [3, P], scale, daz, del_, sizes, el_min)."""

    lag_index: npt.NDArray[np.float64]
    az_start: npt.NDArray[np.int64]
    az_vals: npt.NDArray[np.float64]
    grid_az: npt.NDArray[np.float64]
    grid_el: npt.NDArray[np.float64]
    circular: bool
    diff_t: npt.NDArray[np.float64]
    scale: tuple[float, float, float, float]
    daz: npt.NDArray[np.float64]
    del_: npt.NDArray[np.float64]
    sizes: npt.NDArray[np.int64]
    el_min: float

    def __post_init__(self) -> None:
        def frozen(name: str, dtype: type) -> npt.NDArray[Any]:
            a: npt.NDArray[Any] = np.array(getattr(self, name), dtype=dtype, order="C", copy=True)
            a.flags.writeable = False
            object.__setattr__(self, name, a)
            return a

        lag = frozen("lag_index", np.float64)
        starts, vals = frozen("az_start", np.int64), frozen("az_vals", np.float64)
        gaz, gel = frozen("grid_az", np.float64), frozen("grid_el", np.float64)
        d, da, de, sz = (
            frozen("diff_t", np.float64),
            frozen("daz", np.float64),
            frozen("del_", np.float64),
            frozen("sizes", np.int64),
        )
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "el_min", float(self.el_min))
        object.__setattr__(self, "circular", bool(self.circular))
        if lag.ndim != 2 or lag.shape[0] < 1:
            raise InputError(f"SrpGrid: lag_index must be [directions, pairs], got shape {lag.shape}")
        g, p = lag.shape
        if gaz.shape != (g,) or gel.shape != (g,):
            raise InputError(f"SrpGrid: grid {gaz.shape}/{gel.shape} does not match {g} directions")
        a = len(starts)
        if starts.ndim != 1 or a == 0 or vals.shape != (a,) or starts[0] != 0 or np.any(np.diff(starts) < 1):
            raise InputError(f"SrpGrid: azimuth runs {starts.shape} must start at 0 and rise, one azimuth each")
        if starts[-1] >= g:
            raise InputError(f"SrpGrid: azimuth runs start beyond the {g} grid directions")
        if a > 1 and np.any(np.diff(vals) <= 0):
            raise InputError("SrpGrid: azimuths must be ascending")
        if d.shape != (3, p) or da.shape != de.shape or da.ndim != 1 or sz.ndim != 1 or len(self.scale) != 4:
            raise InputError(f"SrpGrid: diff {d.shape}, offsets {da.shape}/{de.shape} do not match {p} pairs")
        if sz.size and (sz.min() < 1 or int(sz.sum()) != da.size):
            raise InputError(f"SrpGrid: level sizes {sz.tolist()} do not add up to {da.size} offsets")


def profile_sources(
    power: F64,
    az_start: npt.NDArray[np.int64],
    az_vals: F64,
    circular: bool,
    min_rel: float,
    max_sources: int,
    min_sep: float,
) -> tuple[F64 | None, list[int]]:
    """A map over a grid sorted by azimuth (`az_start`: each azimuth's first index) -> (its azimuth
    profile, each azimuth's best direction, scaled to [0, 1]; the chosen azimuth indices): the profile's
    local maxima highest first, each at least `min_rel` high and `min_sep` degrees from the chosen ones,
    at most `max_sources`. A flat profile: (None, [])."""
    profile = np.maximum.reduceat(power, az_start)
    lo, hi = float(profile.min()), float(profile.max())
    if not hi - lo > 1e-12:
        return None, []
    norm = (profile - lo) / (hi - lo)
    nl = norm.tolist()
    chosen: list[int] = []
    for k in peaks_highest_first(norm, circular):
        if nl[k] < min_rel or len(chosen) >= max_sources:
            break
        if all(ang_dist(az_vals[k], az_vals[c]) >= min_sep for c in chosen):
            chosen.append(k)
    return norm, chosen


@register(REFERENCE, "srp_peaks")
def srp_peaks(
    cc: npt.NDArray[np.floating], grid: SrpGrid, min_rel_power: float, max_sources: int, min_separation_deg: float
) -> npt.NDArray[np.float64]:
    """The sources of an SRP-PHAT map, the localiser's whole single-map search: the map `srp_map(cc,
    grid.lag_index)`; the azimuth profile (each azimuth's best elevation), scaled to [0, 1] (a flat
    profile: no source); its local maxima (`local_maxima`), highest first (ties in azimuth order), each at
    least `min_rel_power` and `min_separation_deg` from the chosen ones, at most `max_sources`; each
    refined from its (first) best grid direction by `srp_refine`.
    -> [S, 4]: refined azimuth and elevation, half width of the profile peak (`half_width`, degrees),
    relative power; dominant first."""
    n_pairs, length = np.shape(cc)
    if n_pairs != grid.lag_index.shape[1] or length < 2:
        raise InputError(f"srp_peaks: cc of shape {np.shape(cc)} does not fit {grid.lag_index.shape[1]} pairs")
    power = np.asarray(srp_map(cc, grid.lag_index), np.float64)
    norm, chosen = profile_sources(power, grid.az_start, grid.az_vals, grid.circular, min_rel_power, max_sources,
                                   min_separation_deg)  # fmt: skip
    if norm is None:
        return np.zeros((0, 4), np.float64)
    stops = np.append(grid.az_start[1:], len(power))
    vals = grid.az_vals
    step = float(vals[1] - vals[0]) if len(vals) > 1 else 0.0
    out = np.zeros((len(chosen), 4), np.float64)
    for i, k in enumerate(chosen):
        g0 = int(grid.az_start[k])
        g = g0 + int(np.argmax(power[g0 : stops[k]]))
        az, el = srp_refine(
            cc, grid.diff_t, grid.scale, grid.daz, grid.del_, grid.sizes,
            float(grid.grid_az[g]), float(grid.grid_el[g]), grid.el_min,
        )  # fmt: skip
        out[i] = (az, el, half_width(norm, k, step, grid.circular), norm[k])
    return out


@functools.lru_cache(maxsize=16)
def gauss_taps(sigma: float) -> npt.NDArray[np.float64]:
    """The normalised Gaussian smoothing kernel of `vote_hist` (sigma in bins): 2 ceil(3 sigma) + 1 taps."""
    half = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= k.sum()
    k.flags.writeable = False
    return k


def check_votes(
    vote: npt.NDArray[np.int64], weight: npt.NDArray[np.floating], n_dirs: int, taps: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """`vote_hist`'s arguments as contiguous int64 votes and float32 weights of one shape (InputError if
    they differ, or if `taps` is not an odd number of at most `n_dirs`)."""
    v = np.ascontiguousarray(vote, dtype=np.int64)
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if v.shape != w.shape:
        raise InputError(f"vote_hist: votes {v.shape} and weights {w.shape} differ")
    if np.ndim(taps) != 1 or len(taps) % 2 != 1 or len(taps) > n_dirs:
        raise InputError(f"vote_hist: {np.size(taps)} taps: need an odd number, at most the {n_dirs} directions")
    return v, w


@register(REFERENCE, "vote_hist")
def vote_hist(
    vote: npt.NDArray[np.int64],
    weight: npt.NDArray[np.floating],
    n_dirs: int,
    taps: npt.NDArray[np.float64],
    circular: bool,
) -> tuple[npt.NDArray[np.float64], list[int]]:
    """The cells' votes (`nb_vote`: direction index and weight per cell, any shape) -> (their weighted
    histogram over `n_dirs` directions smoothed with the odd, symmetric `taps` (wrapping around when
    `circular`, else zero outside), its local maxima (`local_maxima`) highest first, ties in direction
    order). A vote outside 0 .. n_dirs - 1 is an InputError."""
    v, w = check_votes(vote, weight, n_dirs, taps)
    if v.size and (int(v.min()) < 0 or int(v.max()) >= n_dirs):
        raise InputError(f"vote_hist: votes span {int(v.min())}..{int(v.max())}, outside 0..{n_dirs - 1}")
    hist = np.bincount(v.ravel(), weights=w.ravel(), minlength=n_dirs).astype(np.float64)
    half = len(taps) // 2
    if circular:
        hist = np.convolve(np.concatenate([hist[-half:], hist, hist[:half]]) if half else hist, taps, mode="valid")
    else:
        hist = np.convolve(hist, taps, mode="same")
    return hist, peaks_highest_first(hist, circular)


NB_EPS = 1e-12  # |x| floor of the unit cross-spectra in nb_vote


def mirrored_steering(half: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.complex64]:
    """Steering [B, P, H] of H directions -> [B, P, 2H]: those directions, then the same turned by 180
    degrees in the array plane, whose pair delays are the negatives: exactly the conjugates (what
    `nb_vote(..., mirror=True)` may rely on)."""
    h = np.asarray(half, np.complex64)
    return np.ascontiguousarray(np.concatenate([h, np.conj(h)], axis=2))


@register(REFERENCE, "nb_vote")
def nb_vote(
    blocks: npt.NDArray[np.complexfloating],
    steer_re: npt.NDArray[np.floating],
    steer_im: npt.NDArray[np.floating],
    mirror: bool = False,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """blocks [K, P, B] cross-spectra (summed per block of frames); steer_re, steer_im [B, P, G] real and
    imaginary parts of a narrowband pair steering -> (vote [B, K], weight [B, K]): each (bin, block)
    cell's unit cross-spectra u = x / (|x| + NB_EPS) steered over the G directions,
    resp = sum_p Re(u_p steer_p); vote is the (first) direction of the largest resp, weight the largest
    minus the mean over the directions, over P.

    `mirror`: the caller's promise that G is even and directions g + G/2 have the conjugate steering of
    directions g (the opposite azimuths in the array plane: `mirrored_steering`); a backend may then
    compute half the products (the native one does). The reference computes them all."""
    unit = blocks / (np.abs(blocks) + NB_EPS)  # [K, P, B]
    u = unit.transpose(2, 0, 1)  # [B, K, P]
    resp = np.matmul(u.real, steer_re) - np.matmul(u.imag, steer_im)  # [B, K, G]
    vote = np.argmax(resp, axis=2)  # [B, K]
    peak = np.take_along_axis(resp, vote[:, :, None], axis=2)[:, :, 0]  # the maxima
    weight = (peak - resp.mean(axis=2)) / blocks.shape[1]
    return vote.astype(np.int64, copy=False), weight.astype(np.float32, copy=False)


def check_cover(
    blocks: npt.NDArray[np.complexfloating],
    steer_re: npt.NDArray[np.floating],
    steer_im: npt.NDArray[np.floating],
    cand: npt.ArrayLike,
    weight: npt.NDArray[np.floating],
) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64],
           npt.NDArray[np.float32]]:  # fmt: skip
    """`cover_scores`' inputs as contiguous arrays of its types; InputError naming what does not fit."""
    x = np.ascontiguousarray(blocks, dtype=np.complex64)
    sr = np.ascontiguousarray(steer_re, dtype=np.float32)
    si = np.ascontiguousarray(steer_im, dtype=np.float32)
    c = np.ascontiguousarray(cand, dtype=np.int64).reshape(-1)
    w = np.ascontiguousarray(weight, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"cover_scores: blocks of shape {x.shape}, expected [blocks, pairs, bins]")
    k, p, b = x.shape
    if sr.ndim != 3 or sr.shape[:2] != (b, p) or si.shape != sr.shape:
        raise InputError(f"cover_scores: steering of shapes {sr.shape}, {si.shape} does not match blocks {x.shape}")
    if c.size and (int(c.min()) < 0 or int(c.max()) >= sr.shape[2]):
        raise InputError(f"cover_scores: candidates span {int(c.min())}..{int(c.max())}, outside 0..{sr.shape[2] - 1}")
    if w.shape != (b, k):
        raise InputError(f"cover_scores: weights of shape {w.shape}, expected ({b}, {k})")
    return x, sr, si, c, w


@register(REFERENCE, "cover_scores")
def cover_scores(
    blocks: npt.NDArray[np.complexfloating],
    steer_re: npt.NDArray[np.floating],
    steer_im: npt.NDArray[np.floating],
    cand: npt.ArrayLike,
    weight: npt.NDArray[np.floating],
    sharpness: float,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """How well candidate directions explain the cells (`Localiser._cover`): blocks [K, P, B] cross-spectra,
    steer_re, steer_im [B, P, G] (as `nb_vote`'s), cand [N] direction indices, weight [B, K] the cells'
    vote weights -> (pair [N, N], match [N, B K]): match[n, b K + k] = weight[b, k] exp(sharpness (r - 1))
    with r = sum_p Re(u_p steer_p[cand[n]]) / P the cell's response at the candidate (u = x / (|x| +
    NB_EPS)); pair[i, j] = the sum over the cells of max(match[i], match[j]) (the diagonal: match[i]'s
    sum)."""
    x, sr, si, c, w = check_cover(blocks, steer_re, steer_im, cand, weight)
    k, p, b = x.shape
    n = len(c)
    if n == 0 or k == 0 or b == 0:
        return np.zeros((n, n), np.float64), np.zeros((n, b * k), np.float32)
    u = (x / (np.abs(x) + NB_EPS)).transpose(2, 0, 1)  # [B, K, P]
    resp = np.matmul(u.real, sr[:, :, c]) - np.matmul(u.imag, si[:, :, c])  # [B, K, N]
    r = np.ascontiguousarray(resp.transpose(2, 0, 1)).reshape(n, -1)  # [N, cells]
    m = (np.exp(np.float32(sharpness) * (r / np.float32(p) - np.float32(1.0))) * w.reshape(1, -1)).astype(np.float32)
    pair = np.maximum(m[:, None, :], m[None, :, :]).sum(axis=2, dtype=np.float64)
    return pair, m
