"""Spectra -> Bearings: SRP-PHAT direction of arrival for any array geometry.

The same STFT that feeds the model feeds this stage. Per-frame PHAT cross-spectra of every mic pair
are summed over the frames of interest (an event, a file); the sum is turned into GCC-PHAT
cross-correlations, and the steered response power is read off at each direction of a grid whose
shape follows the array (ARCHITECTURE.md conventions: azimuth counter-clockwise from +x, elevation up
from the x-y plane):

- 3-D arrays: full sphere; azimuth and elevation are reported.
- planar arrays: upper hemisphere (a planar array cannot tell up from down); elevation is searched,
  so elevated sources do not bias the azimuth, but it is not reported (None).
- linear arrays: a half-plane; the mirror image across the array axis is indistinguishable, so each
  bearing is marked `ambiguous`.

Peaks are refined on a fine local grid, so the answer is not quantised to the coarse grid.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from boards.profiles import SPEED_OF_SOUND_M_S, ArrayProfile
from edge.dsp import backends
from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec
from edge.dsp.gcc_phat import mic_pairs
from edge.errors import ConfigError
from edge.messages import Bearing


@dataclass(frozen=True)
class LocaliserConfig:
    az_step_deg: float = 2.0
    el_step_deg: float = 10.0
    refine_step_deg: float = 0.1
    upsample: int = 16
    max_sources: int = 3
    min_separation_deg: float = 25.0
    min_rel_power: float = 0.5
    backend: str = backends.REFERENCE

    def __post_init__(self) -> None:
        for name in ("az_step_deg", "el_step_deg", "refine_step_deg"):
            v = getattr(self, name)
            if not 0.0 < v <= 30.0:
                raise ConfigError(f"localiser {name}={v!r}: must be in (0, 30] degrees")
        if not 1 <= self.upsample <= 64:
            raise ConfigError(f"localiser upsample={self.upsample!r}: must be in [1, 64]")
        if self.max_sources < 1:
            raise ConfigError(f"localiser max_sources={self.max_sources!r}: must be >= 1")
        if not 0.0 < self.min_rel_power <= 1.0:
            raise ConfigError(f"localiser min_rel_power={self.min_rel_power!r}: must be in (0, 1]")


def unit_vectors(az_deg: npt.ArrayLike, el_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
    az = np.radians(np.asarray(az_deg, dtype=np.float64))
    el = np.radians(np.asarray(el_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def wrap_deg(a: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Wrap angles to (-180, 180]."""
    w = np.mod(np.asarray(a, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(w == -180.0, 180.0, w)


class Localiser:
    """SRP-PHAT over a direction grid for one array. Pure: no state between calls."""

    def __init__(
        self,
        array: ArrayProfile,
        spec: FrontendSpec = DEFAULT_FRONTEND,
        config: LocaliserConfig | None = None,
    ) -> None:
        self.array = array
        self.spec = spec
        self.config = config or LocaliserConfig()
        cfg = self.config
        self.mics = np.asarray(array.mics, dtype=np.float64) - np.mean(array.mics, axis=0)
        self.pairs = mic_pairs(len(self.mics))
        lo, hi = array.doa_band_hz
        hz_per_bin = spec.sample_rate / spec.n_fft
        b0 = max(1, int(np.ceil(lo / hz_per_bin)))
        b1 = min(spec.n_bins, int(np.floor(hi / hz_per_bin)) + 1)
        if b1 <= b0:
            raise ConfigError(f"array {array.name!r}: DOA band {lo}-{hi} Hz holds no FFT bin")
        self.bins = slice(b0, b1)
        self.geometry = array.geometry
        self._axis = self._linear_axis() if self.geometry == "linear" else None
        az, el = self._grid(cfg)
        self.grid_az, self.grid_el = az, el
        self._lags = self._lag_index(az, el)
        self._cross = backends.get("phat_cross_spectra", cfg.backend)
        self._gcc = backends.get("gcc", cfg.backend)
        self._srp = backends.get("srp_map", cfg.backend)

    # --- grid -------------------------------------------------------------------------------
    def _linear_axis(self) -> npt.NDArray[np.float64]:
        _, _, vt = np.linalg.svd(self.mics)
        axis: npt.NDArray[np.float64] = vt[0] / np.linalg.norm(vt[0])
        return axis

    def _grid(self, cfg: LocaliserConfig) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        az1 = np.arange(-180.0 + cfg.az_step_deg, 180.0 + 1e-9, cfg.az_step_deg)
        if self.geometry == "3d":
            el1 = np.arange(-90.0, 90.0 + 1e-9, cfg.el_step_deg)
        elif self.geometry == "planar":
            el1 = np.arange(0.0, 90.0 + 1e-9, cfg.el_step_deg)
        else:
            el1 = np.array([0.0])
        az, el = np.meshgrid(az1, el1, indexing="ij")
        az, el = az.ravel(), el.ravel()
        if self._axis is not None:
            keep = self._in_half_plane(az)
            az, el = az[keep], el[keep]
        return az, el

    def _in_half_plane(self, az: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """For a linear array: directions on one side of the array axis (the other side mirrors it)."""
        assert self._axis is not None
        normal = np.cross([0.0, 0.0, 1.0], self._axis)
        if np.linalg.norm(normal) < 1e-6:  # a vertical line array: every azimuth is the same
            return np.asarray(np.abs(az) < 1e-9) | np.asarray(az == az.min())
        u = unit_vectors(az, np.zeros_like(az))
        return np.asarray(u @ normal >= -1e-9)

    def _lag_index(self, az: npt.ArrayLike, el: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """[G, P] fractional index into the upsampled cross-correlation for each direction and pair."""
        u = unit_vectors(az, el)
        diff = self.mics[self.pairs[:, 0]] - self.mics[self.pairs[:, 1]]  # [P, 3]
        tdoa = -(u @ diff.T) / SPEED_OF_SOUND_M_S  # arrival at i minus arrival at j
        length = self.spec.n_fft * self.config.upsample
        return np.asarray(tdoa * self.spec.sample_rate * self.config.upsample + length // 2)

    # --- estimation -------------------------------------------------------------------------
    def frame_cross(self, spectra: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.complex64]:
        """[C, F, T] spectra -> [T, P, B] per-frame PHAT cross-spectra in the DOA band."""
        out: npt.NDArray[np.complex64] = self._cross(spectra, self.pairs, self.bins)
        return out

    def power_map(self, cross_sum: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.float32]:
        cc = self._gcc(cross_sum, self.bins, self.spec.n_fft, self.config.upsample)
        out: npt.NDArray[np.float32] = self._srp(cc, self._lags)
        return out

    def bearings(self, cross_sum: npt.NDArray[np.complexfloating]) -> tuple[Bearing, ...]:
        """Summed cross-spectra [P, B] -> up to max_sources bearings, dominant first."""
        if not np.any(cross_sum):
            return ()
        cfg = self.config
        cc = self._gcc(cross_sum, self.bins, self.spec.n_fft, cfg.upsample)
        power = self._srp(cc, self._lags)
        az_vals = np.unique(self.grid_az)
        # azimuth profile: best elevation for each azimuth
        idx = np.searchsorted(az_vals, self.grid_az)
        profile = np.full(len(az_vals), -np.inf)
        np.maximum.at(profile, idx, power)
        lo, hi = float(profile.min()), float(profile.max())
        if hi - lo <= 1e-12:
            return ()
        norm = (profile - lo) / (hi - lo)
        circular = self._axis is None
        peaks = _local_maxima(norm, circular)
        peaks = sorted(peaks, key=lambda k: -norm[k])
        chosen: list[int] = []
        for k in peaks:
            if norm[k] < cfg.min_rel_power or len(chosen) >= cfg.max_sources:
                break
            if all(_ang_dist(az_vals[k], az_vals[c]) >= cfg.min_separation_deg for c in chosen):
                chosen.append(k)
        out = []
        for k in chosen:
            g = int(np.argmax(np.where(idx == k, power, -np.inf)))
            az, el = self._refine(cc, float(self.grid_az[g]), float(self.grid_el[g]))
            spread = _half_width(norm, k, float(az_vals[1] - az_vals[0]), circular)
            out.append(
                Bearing(
                    azimuth=round(float(wrap_deg(az)), 2),
                    elevation=round(el, 2) if self.geometry == "3d" else None,
                    spread=round(spread, 2),
                    power=round(float(norm[k]), 3),
                    ambiguous=self.geometry == "linear",
                )
            )
        return tuple(out)

    def _refine(self, cc: npt.NDArray[np.float32], az: float, el: float) -> tuple[float, float]:
        cfg = self.config
        r = cfg.refine_step_deg
        daz = np.arange(-cfg.az_step_deg, cfg.az_step_deg + 1e-9, r)
        if self.geometry == "linear":
            del_ = np.array([0.0])
        else:
            del_ = np.arange(-cfg.el_step_deg, cfg.el_step_deg + 1e-9, max(r, cfg.el_step_deg / 10))
        a2, e2 = np.meshgrid(az + daz, el + del_, indexing="ij")
        a, e = a2.ravel(), e2.ravel()
        lim_lo = -90.0 if self.geometry == "3d" else 0.0
        e = np.clip(e, lim_lo, 90.0)
        if self._axis is not None:
            keep = self._in_half_plane(a)
            if keep.any():
                a, e = a[keep], e[keep]
        p = self._srp(cc, self._lag_index(a, e))
        best = int(np.argmax(p))
        return float(a[best]), float(e[best])


def _ang_dist(a: float, b: float) -> float:
    return float(abs(wrap_deg(a - b)))


def _local_maxima(v: npt.NDArray[np.float64], circular: bool) -> list[int]:
    n = len(v)
    if n < 3:
        return [int(np.argmax(v))]
    if circular:
        left, right = np.roll(v, 1), np.roll(v, -1)
    else:
        left = np.concatenate([[-np.inf], v[:-1]])
        right = np.concatenate([v[1:], [-np.inf]])
    return [int(k) for k in np.flatnonzero((v >= left) & (v > right))]


def _half_width(norm: npt.NDArray[np.float64], k: int, step: float, circular: bool) -> float:
    """Half the width (degrees) of the peak at k where it stays above half its height."""
    n = len(norm)
    half = norm[k] / 2.0
    width = 0
    for direction in (-1, 1):
        j = k
        for _ in range(n // 2):
            nj = j + direction
            if not circular and not 0 <= nj < n:
                break
            nj %= n
            if norm[nj] < half:
                break
            j = nj
            width += 1
    return (width + 1) * step / 2.0


def active_frames(spectra: npt.NDArray[np.complexfloating], range_db: float = 20.0) -> npt.NDArray[np.bool_]:
    """Frames whose energy (all channels) is within `range_db` of the loudest frame."""
    e = np.sum(np.abs(spectra) ** 2, axis=(0, 1))
    if e.size == 0 or e.max() <= 0:
        return np.zeros(e.shape, bool)
    return np.asarray(10 * np.log10(e / e.max() + 1e-30) > -range_db)


def locate_recording(
    spectra: npt.NDArray[np.complexfloating],
    localiser: Localiser,
    segment_frames: int = 50,
    range_db: float = 20.0,
    merge_deg: float = 15.0,
) -> tuple[Bearing, ...]:
    """The sources of a whole recording, dominant (most energy) first.

    Sources that take turns would blur into one peak if all frames were summed, so the loud frames are
    cut into segments of `segment_frames`; each segment's dominant direction is found, directions
    within `merge_deg` of each other are merged, and each merged source is estimated again from the
    summed cross-spectra of its own segments. `power` is each source's share of the loudest source's
    energy.
    """
    mask = active_frames(spectra, range_db)
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return ()
    energy = np.sum(np.abs(spectra) ** 2, axis=(0, 1))
    cross = localiser.frame_cross(spectra[:, :, idx])
    segs = [np.arange(i, min(i + segment_frames, idx.size)) for i in range(0, idx.size, segment_frames)]
    found: list[tuple[float, float, npt.NDArray[np.intp]]] = []  # (azimuth, energy, segment frames)
    for seg in segs:
        b = localiser.bearings(cross[seg].sum(axis=0))
        if b:
            found.append((b[0].azimuth, float(energy[idx[seg]].sum()), seg))
    clusters: list[list[tuple[float, float, npt.NDArray[np.intp]]]] = []
    for item in sorted(found, key=lambda f: -f[1]):
        for cl in clusters:
            if _ang_dist(item[0], cl[0][0]) <= merge_deg:
                cl.append(item)
                break
        else:
            clusters.append([item])
    if not clusters:
        return ()
    total = [sum(e for _, e, _ in cl) for cl in clusters]
    order = np.argsort(total)[::-1][: localiser.config.max_sources]
    out = []
    for k in order:
        frames = np.concatenate([seg for _, _, seg in clusters[k]])
        b = localiser.bearings(cross[frames].sum(axis=0))
        if b:
            out.append(dataclasses.replace(b[0], power=round(total[k] / total[order[0]], 3)))
    return tuple(out)
