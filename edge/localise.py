"""Spectra -> Bearings: SRP-PHAT or MUSIC direction of arrival for any array geometry.

The same STFT that feeds the model feeds this stage. Per-frame PHAT cross-spectra of every mic pair
are summed over the frames of interest (an event, a file). Two methods read directions off that sum,
on a grid whose shape follows the array (ARCHITECTURE.md conventions: azimuth counter-clockwise from
+x, elevation up from the x-y plane), in the array profile's DOA band:

- `srp-phat` (default): the sum is turned into GCC-PHAT cross-correlations (upsampled by
  `upsample`) and the steered response power is read off at each direction. Only the lags the array
  can produce (|lag| <= mic distance / c) are ever read, so the cross-correlation is evaluated there
  only: an inverse DFT of the DOA band as one matrix product with a basis built once (shared by the
  localisers of the same geometry, band and grid; the same values as the full inverse FFT of
  `edge.dsp.gcc_phat.gcc`, to rounding).
- `music` / `normmusic`: a per-frame PHAT cross-spectrum X_i X_j^* / |X_i X_j| is the (i, j) entry of
  the rank-1 matrix v v^H with v = X / |X|, so the summed pair cross-spectra, with the frame count on
  the diagonal, are each bin's phase-whitened spatial covariance. Its signal subspace (eigenvalues
  above half the mean, at most `max_sources` and M - 1) gives the MUSIC pseudo-spectrum
  1 / ||E_n^H a||^2 = 1 / (M - ||E_s^H a||^2) per bin; `music` sums the bins, `normmusic` first
  scales each bin's pseudo-spectrum to a maximum of 1 (Salvati et al. 2014), so a few very sharp bins
  cannot dominate. Peaks are compared on a dB scale.

- 3-D arrays: full sphere; azimuth and elevation are reported.
- planar arrays: upper hemisphere (a planar array cannot tell up from down); elevation is searched,
  so elevated sources do not bias the azimuth, but it is not reported (None).
- linear arrays: a half-plane; the mirror image across the array axis is indistinguishable, so each
  bearing is marked `ambiguous`.

Onset weighting (`onset_frames`, default 3; 0 turns it off): in a room, every frame after a sound's
onset also holds its reflections, which arrive from elsewhere and pull the peak off the source. The
direct sound arrives first (the precedence effect), so each time-frequency cell's cross-spectrum is
weighted by how much of its power is new: v = ((power - max of the same bin's power in the previous
`onset_frames` frames) / power)^2, clipped to [0, 1], and w = `onset_floor` + (1 - `onset_floor`) v
(the `onset_weights` DSP kernel, power summed over the channels; the `phat_cross_spectra` kernel
applies the weights). A cell whose bin still rings from earlier frames counts for little; a cell that
rises out of silence or over the tail counts fully. Streams carry the last frames' powers from block
to block (`stream_cross(spectra, history)`), so the weights do not depend on how a stream is cut into
blocks. Measured on simulated rooms (RT60 0.15-0.8 s, the two 4-mic arrays, 60 development scenes of
seed 1, not the benchmark's), SRP-PHAT median azimuth error / share within 10 degrees: unweighted
3.41 / 0.90, floor 0 1.51 / 0.96, floor 0.05 (default) 1.95 / 0.96. The floor is for streams: with
floor 0 the 0.2 s tracker hops inside sustained sounds rest on too few cells, and the sample scene's
dog got no confirmed track; with 0.05 every track is back and the scene's event directions are off by
a median 0.6 degrees (unweighted 1.25). The pipeline's ring keeps frame counts, not weight sums, so
its MUSIC covariance diagonal is the frame count (a diagonal loading: the eigenvectors are the same).

Peaks are refined by a coarse-to-fine local search (for SRP-PHAT one call of the `srp_refine` DSP kernel),
so the answer is not quantised to the coarse grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from boards.profiles import SPEED_OF_SOUND_M_S, ArrayProfile
from edge.dsp import backends
from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec
from edge.dsp.gcc_phat import mic_pairs
from edge.dsp.srp_phat import SrpGrid, gauss_taps, mirrored_steering, profile_sources, srp_lags
from edge.dsp.srp_phat import ang_dist as _ang_dist
from edge.dsp.srp_phat import half_width as _half_width
from edge.dsp.srp_phat import half_width_of as _half_width_of
from edge.dsp.srp_phat import wrap1 as _wrap1
from edge.errors import ConfigError
from edge.messages import Bearing

METHODS = ("srp-phat", "music", "normmusic")
# Each method's default search grid (azimuth, elevation steps in degrees). SRP-PHAT: 3 x 20 against the
# earlier 2 x 10 on the DOA benchmark's rooms (28 Nov): two sources both found 636 against 631 of 720
# (seeds 0-4, 6 planar arrays x 24 scenes each), single sources (seeds 0 and 1) 4-mic median 1.63 and
# 1.29 against 1.75 and 1.41 degrees, the same shares within 10 degrees, and 2.7x fewer directions to
# score (the pipeline on the bundled scene 4 % less CPU). The subspace methods' narrower peaks lost
# with it (NormMUSIC median 2.74 against 2.18 degrees, both found 0.708 against 0.778): they keep 2 x 10.
GRID_DEG = {"srp-phat": (3.0, 20.0), "music": (2.0, 10.0), "normmusic": (2.0, 10.0)}
_MUSIC_EPS = 1e-6  # floor of ||E_n^H a||^2 / M: caps one bin's pseudo-spectrum (clean synthetic data)


@dataclass(frozen=True)
class LocaliserConfig:
    method: str = "srp-phat"
    # the search grid (each peak then refined to refine_step_deg; the vote histogram has one bin per
    # azimuth); 0: the method's (GRID_DEG): SRP-PHAT 3 x 20 degrees, MUSIC and NormMUSIC 2 x 10
    az_step_deg: float = 0.0
    el_step_deg: float = 0.0
    refine_step_deg: float = 0.1
    upsample: int = 16
    max_sources: int = 3
    min_separation_deg: float = 25.0
    min_rel_power: float = 0.5
    hist_min_rel: float = 0.2  # further sources: histogram peak relative to the dominant source's
    onset_frames: int = 3  # onset weighting: compare each cell with this many previous frames (0: off)
    onset_floor: float = 0.05  # every cell's weight is at least this (steady sounds keep some say)
    vote_magnitude_power: float = 1.0  # a cell's vote weight x (sum of |cross-spectrum| over pairs) ** this
    # simultaneous sources (bearings_blocks): rounds of giving each cell to the nearest source within
    # `reassign_window_deg` of its vote and locating each source again from its own cells (0: off)
    reassign_rounds: int = 1
    reassign_window_deg: float = 45.0
    # simultaneous sources: which histogram peaks are the sources, once their number is known. 0: the
    # highest ones; > 0: the set of that many, among the `cover_candidates` highest, that best explains
    # the cells (`Localiser._cover`), with this sharpness of a cell's match to a direction
    cover_sharpness: float = 5.0
    cover_candidates: int = 8
    backend: str = backends.REFERENCE

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"localiser method={self.method!r}: expected one of {', '.join(METHODS)}")
        for name, step in zip(("az_step_deg", "el_step_deg"), GRID_DEG[self.method], strict=True):
            if getattr(self, name) == 0.0:
                object.__setattr__(self, name, step)  # frozen: set once, here
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
        if not 0.0 < self.hist_min_rel <= 1.0:
            raise ConfigError(f"localiser hist_min_rel={self.hist_min_rel!r}: must be in (0, 1]")
        if not 0 <= self.onset_frames <= 50:
            raise ConfigError(f"localiser onset_frames={self.onset_frames!r}: must be in [0, 50] STFT frames")
        if not 0.0 <= self.onset_floor <= 1.0:
            raise ConfigError(f"localiser onset_floor={self.onset_floor!r}: must be in [0, 1]")
        if not 0.0 <= self.vote_magnitude_power <= 4.0:
            raise ConfigError(f"localiser vote_magnitude_power={self.vote_magnitude_power!r}: must be in [0, 4]")
        if not 0 <= self.reassign_rounds <= 10:
            raise ConfigError(f"localiser reassign_rounds={self.reassign_rounds!r}: must be in [0, 10]")
        if not 0.0 < self.reassign_window_deg <= 180.0:
            raise ConfigError(f"localiser reassign_window_deg={self.reassign_window_deg!r}: must be in (0, 180]")
        if not 0.0 <= self.cover_sharpness <= 100.0:
            raise ConfigError(f"localiser cover_sharpness={self.cover_sharpness!r}: must be in [0, 100]")
        if not 2 <= self.cover_candidates <= 32:
            raise ConfigError(f"localiser cover_candidates={self.cover_candidates!r}: must be in [2, 32]")


def unit_vectors(az_deg: npt.ArrayLike, el_deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
    az = np.radians(np.asarray(az_deg, dtype=np.float64))
    el = np.radians(np.asarray(el_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def wrap_deg(a: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Wrap angles to (-180, 180]."""
    w = np.mod(np.asarray(a, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(w == -180.0, 180.0, w)


# steering tables by (mic positions, geometry, frontend, config): shared by the localisers that match
_TABLES: dict[tuple, dict[str, Any]] = {}


class Localiser:
    """SRP-PHAT or MUSIC over a direction grid for one array. Pure: no state between calls."""

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
        self.freqs_hz = np.arange(b0, b1) * hz_per_bin
        self.geometry = array.geometry
        self._axis = self._linear_axis() if self.geometry == "linear" else None
        az, el = self._grid(cfg)
        self.grid_az, self.grid_el = az, el
        # the grid is azimuth-major (ascending azimuth): each azimuth's directions are one run
        self._az_vals = np.unique(az)
        self._az_idx = np.searchsorted(self._az_vals, az)
        self._az_start = np.flatnonzero(np.diff(self._az_idx, prepend=-1))
        assert len(self._az_start) == len(self._az_vals), "grid not sorted by azimuth"
        self._az_stop = np.append(self._az_start[1:], len(az))
        self._az_list: list[float] = self._az_vals.tolist()
        self._hist_taps = gauss_taps(4.0 / float(self._az_vals[1] - self._az_vals[0])) if len(az) > 1 else None
        self._levels = self._refine_levels(cfg)
        # every level's offsets in one run each, for the `srp_refine` kernel
        self._lvl_daz = np.concatenate([a for a, _ in self._levels])
        self._lvl_del = np.concatenate([e for _, e in self._levels])
        self._lvl_sizes = np.array([len(a) for a, _ in self._levels], np.int64)
        self._diff_t = np.ascontiguousarray((self.mics[self.pairs[:, 0]] - self.mics[self.pairs[:, 1]]).T)  # [3, P]
        self._music = cfg.method != "srp-phat"
        # the steering tables are the same for every localiser of this geometry, band and grid: built once
        key = (self.mics.tobytes(), self.geometry, spec, dataclasses.replace(cfg, backend=backends.REFERENCE))
        tables = _TABLES.get(key)
        if tables is None:
            tables = {}
            if cfg.max_sources > 1:  # per-cell votes for further sources (bearings_blocks)
                h = len(self._az_vals) // 2
                opposite = len(self._az_vals) % 2 == 0 and np.allclose(
                    self._az_vals[h:] - self._az_vals[:h], 180.0, rtol=0.0, atol=1e-9
                )
                # a full circle: the second half of the azimuths turns the first by 180 degrees, whose
                # steering is the exact conjugate (the vote kernel computes half the products)
                nb = mirrored_steering(self._nb_steer(self._az_vals[:h])) if opposite else self._nb_steer(self._az_vals)
                tables["nb_re"], tables["nb_im"] = np.ascontiguousarray(nb.real), np.ascontiguousarray(nb.imag)
                tables["nb_mirror"] = np.array(opposite)
            if self._music:
                tables["steer"] = self._steering(az, el)  # [B, M, G]
            else:
                lag0, basis = self._idft_basis()
                tables["idft"] = np.ascontiguousarray(basis, dtype=np.float32)  # float32 products: 2x faster
                tables["lag0"] = np.array(lag0)
                self._lag0, self._lag_scale = lag0, self._scale(lag0)
                tables["lags"] = self._lag_index(az, el)
            if len(_TABLES) >= 8:
                _TABLES.pop(next(iter(_TABLES)))  # the oldest
            _TABLES[key] = tables
        if cfg.max_sources > 1:
            self._nb_re, self._nb_im = tables["nb_re"], tables["nb_im"]
            self._nb_mirror = bool(tables["nb_mirror"])
        if self._music:
            self._steer = tables["steer"]
        else:
            self._lag0, self._idft = int(tables["lag0"]), tables["idft"]
            self._lag_scale = self._scale(self._lag0)
            self._lags = tables["lags"]
            if "srp_grid" not in tables:  # the constant tables of the one-call search (`srp_peaks`)
                tables["srp_grid"] = SrpGrid(
                    self._lags, self._az_start, self._az_vals, az, el, self._axis is None, self._diff_t,
                    self._lag_scale, self._lvl_daz, self._lvl_del, self._lvl_sizes,
                    -90.0 if self.geometry == "3d" else 0.0,
                )  # fmt: skip
            self._srp_grid: SrpGrid = tables["srp_grid"]
        self._cross = backends.get("phat_cross_spectra", cfg.backend)
        self._onset = backends.get("onset_weights", cfg.backend)
        self._cross_blocks = backends.get("cross_blocks", cfg.backend)
        self._srp = backends.get("srp_map", cfg.backend)
        self._srp_peaks = backends.get("srp_peaks", cfg.backend)
        self._vote = backends.get("nb_vote", cfg.backend)
        self._vote_hist = backends.get("vote_hist", cfg.backend)
        self._cover_scores = backends.get("cover_scores", cfg.backend)

    def _scale(self, lag0: int) -> tuple[float, float, float, float]:
        """(c, rate, upsample, lag0): the constants of `srp_lags` for this localiser."""
        return (SPEED_OF_SOUND_M_S, float(self.spec.sample_rate), float(self.config.upsample), float(lag0))

    # --- grid -------------------------------------------------------------------------------
    def _linear_axis(self) -> npt.NDArray[np.float64]:
        _, _, vt = np.linalg.svd(self.mics)
        axis: npt.NDArray[np.float64] = vt[0] / np.linalg.norm(vt[0])
        return axis

    def _grid(self, cfg: LocaliserConfig) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        az1 = np.arange(-180.0 + cfg.az_step_deg, 180.0 + 1e-9, cfg.az_step_deg)
        # no grid point at a pole: there every azimuth is the same direction, whose power would set a
        # floor under every azimuth's profile (and flatten it when sources around the array sum to a
        # peak overhead); the refinement still reaches the pole
        if self.geometry == "3d":
            el1 = np.arange(-90.0, 90.0 - 1e-9, cfg.el_step_deg)[1:]
        elif self.geometry == "planar":
            el1 = np.arange(0.0, 90.0 - 1e-9, cfg.el_step_deg)
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

    def _idft_basis(self) -> tuple[int, npt.NDArray[np.float64]]:
        """(index of lag 0, [2B, D] basis): the upsampled cross-correlation at lags -lag0 .. lag0 + 1
        (samples / upsample) of cross-spectra [P, B] viewed as interleaved floats [P, 2B] is
        their product with the basis; the lags cover every pair's largest delay with a margin."""
        up, length = self.config.upsample, self.spec.n_fft * self.config.upsample
        reach = float(np.max(np.linalg.norm(self._diff_t, axis=0))) / SPEED_OF_SOUND_M_S
        lag0 = int(np.ceil(reach * self.spec.sample_rate * up)) + 2
        lags = np.arange(-lag0, lag0 + 2)
        b = np.arange(self.bins.start, self.bins.stop)
        # irfft of a spectrum that is zero outside the band, times upsample: (2 up / L) Re(X e^{2 pi i b d / L})
        angle = (2.0 * np.pi / length) * (np.outer(b, lags) % length)
        basis = np.empty((2 * len(b), len(lags)), np.float64)
        basis[0::2] = np.cos(angle) * (2.0 * up / length)
        basis[1::2] = -np.sin(angle) * (2.0 * up / length)
        return lag0, basis

    def _lag_index(self, az: npt.ArrayLike, el: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """[G, P] fractional index into the upsampled cross-correlation window (`_gcc_window`) for each
        direction and pair."""
        return srp_lags(np.asarray(az, np.float64), np.asarray(el, np.float64), self._diff_t, self._lag_scale)

    def _gcc_window(self, cross_sum: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.float32]:
        """Summed cross-spectra [P, B] -> GCC-PHAT [P, D] at the lags of `_idft_basis`."""
        x = np.ascontiguousarray(cross_sum, dtype=np.complex64).view(np.float32)  # [P, 2B]: re, im
        return np.asarray(x @ self._idft)

    def _steering(self, az: npt.ArrayLike, el: npt.ArrayLike, precise: bool = False) -> npt.NDArray[np.complexfloating]:
        """[B, M, G] plane-wave steering vectors exp(-j w d_m): d_m the arrival delay at mic m
        relative to the array centre (mics nearer the source hear it earlier)."""
        delay = -(unit_vectors(az, el) @ self.mics.T) / SPEED_OF_SOUND_M_S  # [G, M]
        phase = -2.0 * np.pi * self.freqs_hz[:, None, None] * delay.T[None]
        return np.exp(1j * phase).astype(np.complex128 if precise else np.complex64)

    def mirror(self, az: float) -> float | None:
        """A linear array's other azimuth for the same delays (reflection across its axis in the
        x-y plane); None for other arrays or a vertical line (every azimuth fits it)."""
        if self._axis is None or np.hypot(self._axis[0], self._axis[1]) < 1e-6:
            return None
        axis_az = float(np.degrees(np.arctan2(self._axis[1], self._axis[0])))
        return round(_wrap1(2.0 * axis_az - az), 2)

    # --- estimation -------------------------------------------------------------------------
    def frame_cross(
        self, spectra: npt.NDArray[np.complexfloating], weights: npt.NDArray[np.float32] | None = None
    ) -> npt.NDArray[np.complex64]:
        """[C, F, T] spectra -> [T, P, B] per-frame PHAT cross-spectra in the DOA band, each cell times
        its weight when `weights` [T, B] are given (`cell_weights`)."""
        out: npt.NDArray[np.complex64] = self._cross(spectra, self.pairs, self.bins, weights)
        return out

    def cell_weights(
        self, spectra: npt.NDArray[np.complexfloating], history: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.float32] | None, npt.NDArray[np.float32] | None]:
        """The onset weights [T, B] of consecutive frames [C, F, T] and the history to pass with the
        stream's next frames (None: the stream starts here); (None, None) when onset weighting is off."""
        k = self.config.onset_frames
        if k == 0:
            return None, None
        if history is None:
            history = np.zeros((k, self.bins.stop - self.bins.start), np.float32)
        weights: npt.NDArray[np.float32]
        weights, history = self._onset(spectra, self.bins, history, self.config.onset_floor)
        return weights, history

    def stream_cross(
        self, spectra: npt.NDArray[np.complexfloating], history: npt.NDArray[np.float32] | None = None
    ) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.float32] | None]:
        """`frame_cross` of consecutive frames with their `cell_weights`, and the history to pass with the
        stream's next frames (None: the stream starts here)."""
        weights, history = self.cell_weights(spectra, history)
        return self.frame_cross(spectra, weights), history

    def weighted_cross(
        self,
        spectra: npt.NDArray[np.complexfloating],
        frames: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | None = None,
    ) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.float64]]:
        """Cross-spectra [T', P, B] of the selected `frames` (all when None) of a whole recording, onset
        weighted over all its frames, and each selected frame's weight [T'] (the mean over bins of its
        cells' weights; summed over frames, the `n_frames` of `bearings`: the MUSIC covariance's diagonal)."""
        w, _ = self.cell_weights(spectra)
        # every frame's cross-spectra, then the selected rows: cheaper than gathering the frames of the
        # spectra first (a strided copy), whenever most frames are selected
        cross = self.frame_cross(spectra, w)
        if frames is not None:
            cross = cross[frames]
        if w is None:
            return cross, np.ones(len(cross))
        ws = w if frames is None else w[frames]
        return cross, ws.mean(axis=1, dtype=np.float64)

    def block_cross(
        self,
        spectra: npt.NDArray[np.complexfloating],
        frames: npt.NDArray[np.intp] | npt.NDArray[np.bool_] | None = None,
        block: int | npt.NDArray[np.intp] | None = None,
    ) -> tuple[npt.NDArray[np.complex64], npt.NDArray[np.float64]]:
        """`weighted_cross` of a whole recording summed over consecutive blocks of `block` selected
        frames (all in one block when None; an array: each selected frame's block), without the
        per-frame array: ([K, P, B] sums, each block's summed frame weight [K]). One block's sum and
        weight are `bearings`' cross_sum and n_frames; blocks of BLOCK_FRAMES are `bearings_blocks`'
        input (`edge.dsp.gcc_phat.cross_blocks`)."""
        n = spectra.shape[2]
        sel = np.arange(n) if frames is None else frames
        size = max(n, 1) if block is None else block  # a block of at least N frames: all in one
        cfg = self.config
        out: tuple[npt.NDArray[np.complex64], npt.NDArray[np.float64]]
        out = self._cross_blocks(spectra, self.pairs, self.bins, sel, size, cfg.onset_frames, cfg.onset_floor)
        return out

    def power_map(
        self, cross_sum: npt.NDArray[np.complexfloating], n_frames: float | None = None
    ) -> npt.NDArray[np.float32]:
        """The method's map over the grid (`grid_az`, `grid_el`): SRP power or MUSIC pseudo-spectrum."""
        grid, _ = self._scorer(cross_sum, n_frames)
        return grid.astype(np.float32)

    def _scorer(
        self, cross_sum: npt.NDArray[np.complexfloating], n_frames: float | None
    ) -> tuple[npt.NDArray[np.float64], Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], npt.NDArray]]:
        """(map over the grid, function scoring any directions) for one summed cross-spectrum."""
        if not self._music:
            cc = self._gcc_window(cross_sum)
            return (
                np.asarray(self._srp(cc, self._lags), np.float64),
                lambda a, e: np.asarray(self._srp(cc, self._lag_index(a, e))),
            )
        es64 = self._signal_subspace(cross_sum, n_frames)  # [B, K, M] conjugated signal eigenvectors
        es = es64.astype(np.complex128)  # refinement needs the precision: M - ||E_s^H a||^2 cancels
        m = len(self.mics)
        norm = self.config.method == "normmusic"

        def pseudo(steer: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.float64]:
            proj = np.matmul(es64 if steer.dtype == np.complex64 else es, steer)  # [B, K, G]
            noise = m - np.sum(proj.real**2 + proj.imag**2, axis=1)  # ||E_n^H a||^2, [B, G]
            p = 1.0 / np.maximum(noise / m, _MUSIC_EPS)
            if norm:
                p /= p.max(axis=1, keepdims=True)
            return np.asarray(10.0 * np.log10(p.sum(axis=0)))

        grid = pseudo(self._steer)
        if norm:
            # per-bin scaling uses the grid's maxima, so local refinement must reuse them
            proj = np.matmul(es64, self._steer)
            noise = m - np.sum(proj.real**2 + proj.imag**2, axis=1)
            bin_max = (1.0 / np.maximum(noise / m, _MUSIC_EPS)).max(axis=1, keepdims=True)

            def refine_norm(a: npt.NDArray[np.float64], e: npt.NDArray[np.float64]) -> npt.NDArray:
                proj = np.matmul(es, self._steering(a, e, precise=True))
                noise = m - np.sum(proj.real**2 + proj.imag**2, axis=1)
                p = 1.0 / np.maximum(noise / m, _MUSIC_EPS) / bin_max
                return np.asarray(10.0 * np.log10(p.sum(axis=0)))

            return grid, refine_norm
        return grid, lambda a, e: pseudo(self._steering(a, e, precise=True))

    def _signal_subspace(
        self, cross_sum: npt.NDArray[np.complexfloating], n_frames: float | None
    ) -> npt.NDArray[np.complex64]:
        """Summed PHAT cross-spectra [P, B] -> conjugate-transposed signal eigenvectors [B, K, M] of
        each bin's whitened covariance; unused columns (bins with fewer sources) are zero."""
        m = len(self.mics)
        n_bins = cross_sum.shape[1]
        diag = float(n_frames) if n_frames else float(np.max(np.abs(cross_sum)))
        r = np.zeros((n_bins, m, m), np.complex128)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        r[:, i, j] = cross_sum.T
        r[:, j, i] = np.conj(cross_sum.T)
        r[:, np.arange(m), np.arange(m)] = diag
        w, v = np.linalg.eigh(r)  # ascending eigenvalues
        k_max = max(1, min(self.config.max_sources, m - 1))
        w, v = w[:, ::-1][:, :k_max], v[:, :, ::-1][:, :, :k_max]
        mean = np.trace(r, axis1=1, axis2=2).real / m
        keep = w >= 0.5 * mean[:, None]
        keep[:, 0] = True
        v = v * keep[:, None, :]
        return np.ascontiguousarray(np.conj(v).transpose(0, 2, 1)).astype(np.complex64)

    def bearings(
        self, cross_sum: npt.NDArray[np.complexfloating], n_frames: float | None = None
    ) -> tuple[Bearing, ...]:
        """Summed cross-spectra [P, B] -> up to max_sources bearings, dominant first.

        `n_frames`: how many STFT frames were summed (the MUSIC covariance's diagonal; estimated from
        the cross-spectra when None). SRP-PHAT does not need it.
        """
        cfg = self.config
        if not self._music and self._axis is None:  # the whole search in one kernel call (silence: a flat map)
            cc = self._gcc_window(cross_sum)
            peaks = self._srp_peaks(cc, self._srp_grid, cfg.min_rel_power, cfg.max_sources, cfg.min_separation_deg)
            return tuple(self._bearing(az, el, spread, power) for az, el, spread, power in peaks.tolist())
        if not np.any(cross_sum):
            return ()
        power, score = self._scorer(cross_sum, n_frames)
        az_vals = self._az_vals
        circular = self._axis is None
        norm, chosen = profile_sources(
            power, self._az_start, az_vals, circular, cfg.min_rel_power, cfg.max_sources, cfg.min_separation_deg
        )
        if norm is None:
            return ()
        out = []
        for k in chosen:
            g0 = int(self._az_start[k])
            g = g0 + int(np.argmax(power[g0 : self._az_stop[k]]))
            az, el = self._refine(score, float(self.grid_az[g]), float(self.grid_el[g]))
            spread = _half_width(norm, k, float(az_vals[1] - az_vals[0]), circular)
            out.append(self._bearing(az, el, spread, float(norm[k])))
        return tuple(out)

    def _bearing(self, az: float, el: float, spread: float, power: float) -> Bearing:
        azimuth = round(_wrap1(az), 2)
        return Bearing(
            azimuth=azimuth,
            elevation=round(el, 2) if self.geometry == "3d" else None,
            spread=round(spread, 2),
            power=round(power, 3),
            ambiguous=self.geometry == "linear",
            mirror=self.mirror(azimuth),
        )

    def block_votes(
        self, blocks: npt.NDArray[np.complexfloating]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The cells' votes of `bearings_blocks`: blocks [K, P, B] -> (vote, weight) [B, K] each
        (`edge.dsp.srp_phat.nb_vote`; column k depends on block k only).

        `nb_vote` weighs a cell by how peaked its steered response is; that weight is then multiplied
        by the cell's cross-spectrum magnitude summed over the pairs, to the power `vote_magnitude_power`.
        A block sums PHAT-normalised, onset-weighted frames, so the magnitude is high where the phases
        agree from frame to frame (one source holds the cell) and where new sound arrives, and low in
        cells that two sources or reverberation share, whose directions fall between the sources.
        Measured on development rooms (4-mic arrays, two equal sources >= 45 degrees apart, the number
        of sources given): both found 0.60 -> 0.67 and 0.48 -> 0.56 (two scene sets); single sources
        with the device's defaults: spurious second sources 43 % -> 17 % of scenes, the dominant
        source's error unchanged."""
        vote, weight = self._vote(blocks, self._nb_re, self._nb_im, self._nb_mirror)
        g = self.config.vote_magnitude_power
        if g > 0.0 and weight.size:
            # summed, not averaged, over the pairs: one factor for every cell, so the same histogram peaks
            # for one numpy call less (this runs at every tracker hop); `nb_vote` returns a fresh array
            mag = np.add.reduce(np.abs(blocks), axis=1)  # [K, B]
            if g != 1.0:
                mag **= g
            weight *= mag.T
        return vote, weight

    def bearings_blocks(
        self,
        blocks: npt.NDArray[np.complexfloating],
        n_frames: float | None = None,
        votes: Callable[[], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]] | None = None,
    ) -> tuple[Bearing, ...]:
        """Cross-spectra summed per block of frames [K, P, B] -> up to max_sources bearings.

        Simultaneous sources of a small array blur into one broad peak of the summed map (its maximum
        may lie between them), so the time-frequency cells vote: each (block, bin) cell's narrowband
        steered response over azimuth gives its direction, weighted by how peaked that response is (a
        low bin of a small array hardly points anywhere); the weighted histogram of directions,
        smoothed, has a peak per source (most cells are dominated by one source). Each peak at least
        `min_separation_deg` from the others and at least `hist_min_rel` of the highest is a source,
        re-estimated by the method from the cells that voted for it (the highest, where it agrees with
        the summed map's maximum, keeps that estimate from all cells); `power` is its histogram peak
        relative to the highest. `votes`, when given, returns what `block_votes(blocks)` would (only
        called when the votes are needed).
        """
        cfg = self.config
        total = blocks.sum(axis=0)
        first = self.bearings(total, n_frames)
        if cfg.max_sources == 1 or len(blocks) < 2 or not first:
            return first
        dominant = first[0]
        az_vals = self._az_vals
        # [B, K] each; `votes`: the caller's (it may remember the columns of blocks it has seen)
        vote, weight = votes() if votes is not None else self.block_votes(blocks)
        step = float(az_vals[1] - az_vals[0])
        circular = self._axis is None
        assert self._hist_taps is not None  # a grid of one azimuth has no vote path (len(blocks) >= 2 here)
        hist, peaks = self._vote_hist(vote, weight, len(az_vals), self._hist_taps, circular)
        hl = hist.tolist()  # Python floats from here: the same arithmetic without numpy's per-call cost
        top = max(hl)
        if top <= 0:
            return first
        az_list = self._az_list
        # how many sources: the highest peaks, each far enough from the higher ones kept
        picked: list[int] = []
        for k in peaks:
            if len(picked) >= cfg.max_sources or hl[k] < cfg.hist_min_rel * top:
                break
            if all(_ang_dist(az_list[k], az_list[j]) >= cfg.min_separation_deg for j in picked):
                picked.append(k)
        if len(picked) >= 2 and cfg.cover_sharpness > 0.0:  # which ones: the set that explains the cells best
            picked = self._cover(blocks, weight, hl, peaks, picked, dominant.azimuth)
        chosen: list[float] = []
        out: list[Bearing] = []
        kept_dominant = False
        for k in picked:
            cand = az_list[k]
            if any(_ang_dist(cand, c) < cfg.min_separation_deg for c in chosen):
                continue  # a refined direction came too close to a stronger source's
            if not kept_dominant and _ang_dist(cand, dominant.azimuth) <= cfg.min_separation_deg / 2.0:
                b = dominant  # the source that dominates the sum: its estimate from all cells
                kept_dominant = True
            else:
                b = self._vote_peak(hl, k, circular)
            chosen.append(b.azimuth)
            out.append(
                Bearing(
                    azimuth=b.azimuth,
                    elevation=b.elevation,
                    spread=round(_half_width_of(hl, k, step, circular, hl[k]), 2),
                    power=round(hl[k] / top, 3),
                    ambiguous=b.ambiguous,
                    mirror=b.mirror,
                )
            )
        if len(out) >= 2 and cfg.reassign_rounds > 0:
            return self._reassign(blocks, vote, weight, tuple(out))
        return tuple(out) if out else first

    def _cover(
        self,
        blocks: npt.NDArray[np.complexfloating],
        weight: npt.NDArray[np.float32],
        hist: list[float],
        peaks: list[int],
        picked: list[int],
        dominant_az: float,
    ) -> list[int]:
        """As many histogram peaks as `picked` (the highest ones far enough apart) that together explain
        the cells best (indices, highest first).

        The highest peaks of the vote histogram are not always the sources: in a reverberant room a
        strong source's reflections, or cells that two sources share, can raise a peak above the
        weaker source's. Each candidate (the `cover_candidates` highest peaks down to `hist_min_rel`
        of the highest, the picked ones, and the summed map's maximum) is scored by each cell's narrowband steered
        response there, r in [-1, 1] (`nb_vote`'s response, over the pairs), as exp(sharpness (r - 1));
        a set of candidates explains a cell as well as its best member does, and the set's score is
        the sum over the cells, weighted as their votes are. The best set of n, its members at least
        `min_separation_deg` apart, wins: a reflection's peak explains cells that the source's own
        peak already explains, a second source's peak explains cells no other candidate does.
        Measured on rooms of the DOA benchmark (both found, of 144: 6 planar arrays x 24 scenes of two
        sources >= 45 degrees apart at equal power in 300-4000 Hz, the number of sources given), the
        highest peaks -> this set (sharpness 5, 8 candidates): the benchmark's scenes 121 -> 124,
        development scenes (seeds 1 and 2) 132 -> 132 and 128 -> 132; sharpness 3 and 10 did no better
        on the development scenes."""
        cfg = self.config
        n = len(picked)
        top = hist[peaks[0]]
        cand = [k for k in peaks[: cfg.cover_candidates] if hist[k] >= cfg.hist_min_rel * top]
        dom = int(np.argmin(np.abs(wrap_deg(self._az_vals - dominant_az))))
        cand += [k for k in [*picked, dom] if k not in cand]  # the picked set is always a candidate set
        if len(cand) == n:
            return picked  # the candidates are the picked peaks: no choice to make
        c = np.array(cand)
        az = self._az_vals[c]
        far = np.abs(wrap_deg(az[:, None] - az[None, :])) >= cfg.min_separation_deg  # [N, N]
        # every pair's score in one kernel call (`cover_scores`); more than two: the best pair, then
        # greedily the candidate that adds most (the score is submodular: greedy gets at least 63 % of the
        # best gain)
        pair, m = self._cover_scores(blocks, self._nb_re, self._nb_im, c, weight, cfg.cover_sharpness)
        pair[~far] = -np.inf  # the diagonal too (no candidate is far from itself)
        i, j = np.unravel_index(int(np.argmax(pair)), pair.shape)
        best = [int(i), int(j)]
        ok = far[i] & far[j]
        cover = np.maximum(m[i], m[j])
        while len(best) < n and ok.any():
            rest = np.flatnonzero(ok)
            x = int(rest[int(np.argmax(np.maximum(cover[None, :], m[rest]).sum(axis=1)))])
            best.append(x)
            ok &= far[x]
            cover = np.maximum(cover, m[x])
        if len(best) < n:  # no candidate left far enough from the best pair: keep the count, and the peaks
            return picked
        return sorted((cand[x] for x in best), key=lambda k: -hist[k])

    def _reassign(
        self,
        blocks: npt.NDArray[np.complexfloating],
        vote: npt.NDArray[np.int64],
        weight: npt.NDArray[np.float32],
        found: tuple[Bearing, ...],
    ) -> tuple[Bearing, ...]:
        """Simultaneous sources located again from their own cells, `reassign_rounds` times: each cell
        goes to the source nearest its vote (if within `reassign_window_deg`), and each source's
        direction becomes the method's strongest direction (`_top_bearing`) of the sum of its cells'
        cross-spectra, weighted as their votes are, if that lies within twice the window of it.

        A peak of the summed map, or of the vote histogram, is pulled toward a second source whose
        cells and reverberation overlap it; the cells a source owns alone are not. Measured on rooms of
        the DOA benchmark (6 planar arrays, two equal sources >= 45 degrees apart, 24 scenes each; the
        number of sources given; SRP-PHAT), both found, of 144, without / 1 / 2 / 3 rounds: development
        scenes (seed 1) 98 / 111 / 113 / 113, the benchmark's own scenes (seed 0) 95 / 109 / 107 / 105;
        windows of 20, 30 and 45 degrees (3 rounds, development) 110, 111, 113. One round is the
        default: as good as more on those scenes, and each round costs one SRP search per source (0.34
        ms a call on a 4-mic array on the SED benchmark's scenes here, 0.55 ms per audio second there;
        the pipeline localises at every tracker hop). Two white-noise sources, which share every cell,
        keep improving with more rounds (tests/test_localise.py). Rounds stop early once no source
        moves. A source whose new direction comes within `min_separation_deg` of a stronger one keeps
        its earlier direction; `power` and `spread` stay the histogram's."""
        cfg = self.config
        by_bin = np.ascontiguousarray(blocks.transpose(2, 1, 0))  # [B, P, K]
        sources = np.arange(len(found))
        limit = 2.0 * cfg.reassign_window_deg
        cur = list(found)
        for _ in range(cfg.reassign_rounds):
            # owners per azimuth of the vote grid, then per cell through its vote (no [S, B, K] distances)
            az = np.array([b.azimuth for b in cur])
            dist = np.abs((self._az_vals[None, :] - az[:, None] + 180.0) % 360.0 - 180.0)  # [S, A]
            owner = np.where(dist.min(axis=0) <= cfg.reassign_window_deg, dist.argmin(axis=0), -1)[vote]  # [B, K]
            own = (owner[:, :, None] == sources) * weight[:, :, None]  # [B, K, S]
            crosses = np.matmul(by_bin, own.astype(np.complex64))  # [B, P, S]: each source's own cells summed
            nxt: list[Bearing] = []
            for s, b in enumerate(cur):
                got = self._top_bearing(np.ascontiguousarray(crosses[:, :, s].T)) if own[:, :, s].any() else ()
                est = got[0] if got and _ang_dist(got[0].azimuth, b.azimuth) <= limit else None
                if est is not None and all(_ang_dist(est.azimuth, o.azimuth) >= cfg.min_separation_deg for o in nxt):
                    b = dataclasses.replace(b, azimuth=est.azimuth, elevation=est.elevation, mirror=est.mirror)
                nxt.append(b)
            moved = max(_ang_dist(a.azimuth, b.azimuth) for a, b in zip(cur, nxt, strict=True))
            cur = nxt
            if moved < 2.0 * cfg.refine_step_deg:  # settled: another round would give the same cells
                break
        return tuple(cur)

    def _top_bearing(self, cross: npt.NDArray[np.complexfloating]) -> tuple[Bearing, ...]:
        """The method's strongest direction of summed cross-spectra (`bearings` with one source)."""
        cfg = self.config
        if not self._music and self._axis is None:
            cc = self._gcc_window(cross)
            peaks = self._srp_peaks(cc, self._srp_grid, cfg.min_rel_power, 1, cfg.min_separation_deg)
            return tuple(self._bearing(az, el, spread, power) for az, el, spread, power in peaks.tolist())
        return self.bearings(cross)[:1]

    def _vote_peak(self, hist: list[float], k: int, circular: bool) -> Bearing:
        """The histogram peak at index k, refined to the weighted mean direction of its +/- 3 bins (in
        Python floats, each sum in numpy's order for these few terms: the first term plus the sequential
        sum of the rest)."""
        n = len(hist)
        idx = [(i % n) for i in range(k - 3, k + 4)] if circular else [i for i in range(k - 3, k + 4) if 0 <= i < n]
        az = self._az_list
        w = [hist[i] for i in idx]
        wo = [wi * _wrap1(az[i] - az[k]) for wi, i in zip(w, idx, strict=True)]
        num = wo[0] + sum(wo[1:])
        den = w[0] + sum(w[1:])
        azimuth = round(_wrap1(az[k] + num / max(den, 1e-12)), 2)
        return Bearing(
            azimuth=azimuth,
            elevation=None,
            spread=0.0,
            power=0.0,
            ambiguous=self.geometry == "linear",
            mirror=self.mirror(azimuth),
        )

    def _nb_steer(self, az: npt.NDArray[np.float64]) -> npt.NDArray[np.complex64]:
        """[B, P, G] narrowband pair steering exp(+j w tdoa) for azimuths in the array plane."""
        u = unit_vectors(az, np.zeros_like(az))
        diff = self.mics[self.pairs[:, 0]] - self.mics[self.pairs[:, 1]]
        tdoa = -(u @ diff.T) / SPEED_OF_SOUND_M_S  # [G, P]
        phase = 2.0 * np.pi * self.freqs_hz[:, None, None] * tdoa.T[None]
        return np.exp(1j * phase).astype(np.complex64)

    def _refine_levels(self, cfg: LocaliserConfig) -> list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        """The (azimuth, elevation) offsets of each level of `_refine`, coarse to fine."""
        r = cfg.refine_step_deg
        r_el = max(r, cfg.el_step_deg / 10.0)
        span_az, span_el = cfg.az_step_deg, (0.0 if self.geometry == "linear" else cfg.el_step_deg)
        levels = []
        while True:
            step_az, step_el = max(r, span_az / 2.0), max(r_el, span_el / 2.0)
            daz = np.arange(-span_az, span_az + 1e-9, step_az)
            del_ = np.arange(-span_el, span_el + 1e-9, step_el) if span_el > 0 else np.array([0.0])
            a2, e2 = np.meshgrid(daz, del_, indexing="ij")
            levels.append((a2.ravel(), e2.ravel()))
            if step_az <= r and (span_el == 0.0 or step_el <= r_el):
                return levels
            span_az = step_az
            span_el = step_el if span_el > 0.0 else 0.0

    def _refine(
        self,
        score: Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]], npt.NDArray],
        az: float,
        el: float,
    ) -> tuple[float, float]:
        """Local search around a grid peak, coarse to fine: +/- one grid step in steps of half of it,
        then +/- that step, ..., down to `refine_step_deg` in azimuth and a tenth of the elevation grid
        step (25 directions a level instead of one fine local grid; the levels' offsets are built
        once, `_refine_levels`)."""
        lim_lo = -90.0 if self.geometry == "3d" else 0.0
        for daz, del_ in self._levels:
            a = az + daz
            e = np.minimum(np.maximum(el + del_, lim_lo), 90.0)
            if self._axis is not None:
                keep = self._in_half_plane(a)
                if keep.any():
                    a, e = a[keep], e[keep]
            best = int(np.argmax(score(a, e)))
            az, el = float(a[best]), float(e[best])
        return az, el


def frame_energy(spectra: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.floating]:
    """Each frame's energy summed over channels and bins, spectra [C, F, T] -> [T]: re^2 + im^2 of the
    interleaved floats in one pass (no |X| square root, no temporary [C, F, T] array)."""
    x = np.asarray(spectra)
    if x.ndim != 3 or x.dtype not in (np.complex64, np.complex128):
        return np.asarray(np.sum(np.abs(x) ** 2, axis=(0, 1)))
    x = np.ascontiguousarray(x)
    f: npt.NDArray[np.floating] = x.view(np.float32 if x.dtype == np.complex64 else np.float64)
    f = f.reshape(x.shape[0] * x.shape[1], -1)
    return np.asarray(np.einsum("ij,ij->j", f, f).reshape(-1, 2).sum(axis=1))


def active_frames(spectra: npt.NDArray[np.complexfloating], range_db: float = 20.0) -> npt.NDArray[np.bool_]:
    """Frames whose energy (all channels) is within `range_db` of the loudest frame."""
    return _loud(frame_energy(spectra), range_db)


def _loud(e: npt.NDArray[np.floating], range_db: float) -> npt.NDArray[np.bool_]:
    """`active_frames` of frame energies `e`."""
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
    cut into segments of `segment_frames`; each segment's sources are found (`bearings_blocks`, on
    blocks of BLOCK_FRAMES frames, so simultaneous sources are found too), directions within
    `merge_deg` of each other are merged, and a merged source is estimated again from the summed
    cross-spectra of its own segments (when no other source shares them; otherwise it keeps the
    energy-weighted circular mean of its segments' directions). `power` is each source's share of
    the loudest source's energy (a segment's energy split by its sources' powers).
    """
    energy = frame_energy(spectra)
    idx = np.flatnonzero(_loud(energy, range_db))
    if idx.size == 0:
        return ()
    # the loud frames' cross-spectra summed per block of BLOCK_FRAMES within each segment, in one kernel
    # call: a quarter of the memory of the per-frame [T, P, B] array (for a minute of an 8-mic array,
    # 42 MB instead of 168 MB), and no copies of its rows
    per_seg = -(-segment_frames // BLOCK_FRAMES)  # blocks of a full segment
    pos = np.arange(idx.size)
    blocks, block_w = localiser.block_cross(spectra, idx, (pos // segment_frames) * per_seg
                                            + (pos % segment_frames) // BLOCK_FRAMES)  # fmt: skip
    n_segs = -(-idx.size // segment_frames)
    seg_blocks = [np.arange(n * per_seg, min((n + 1) * per_seg, len(blocks))) for n in range(n_segs)]
    seg_energy = [float(energy[idx[n * segment_frames : (n + 1) * segment_frames]].sum()) for n in range(n_segs)]
    found: list[tuple[float, float, int]] = []  # (azimuth, energy, segment index)
    for n, sb in enumerate(seg_blocks):
        bs = localiser.bearings_blocks(blocks[sb], n_frames=float(block_w[sb].sum()))
        share = sum(b.power for b in bs)
        for b in bs:
            found.append((b.azimuth, seg_energy[n] * b.power / share, n))
    clusters: list[list[tuple[float, float, int]]] = []
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
    owners: dict[int, int] = {}
    for cl in clusters:
        for n in {n for _, _, n in cl}:
            owners[n] = owners.get(n, 0) + 1
    out: list[Bearing] = []
    for k in order:
        seg_ids = sorted({n for _, _, n in clusters[k]})
        own = np.concatenate([seg_blocks[n] for n in seg_ids])
        power = round(total[k] / total[order[0]], 3)
        alone = localiser.bearings(blocks[own].sum(axis=0), n_frames=float(block_w[own].sum()))
        if alone and all(owners[n] == 1 for n in seg_ids):
            out.append(dataclasses.replace(alone[0], power=power))
            continue
        w = np.array([e for _, e, _ in clusters[k]])
        rad = np.radians([a for a, _, _ in clusters[k]])
        mean = float(np.degrees(np.arctan2(np.sum(w * np.sin(rad)), np.sum(w * np.cos(rad)))))
        near = localiser.bearings_blocks(blocks[own], n_frames=float(block_w[own].sum()))
        template = min(near, key=lambda x: _ang_dist(x.azimuth, mean)) if near else None
        azimuth = round(_wrap1(mean), 2)
        out.append(
            Bearing(
                azimuth=azimuth,
                elevation=None if template is None else template.elevation,
                spread=0.0 if template is None else template.spread,
                power=power,
                ambiguous=localiser.geometry == "linear",
                mirror=localiser.mirror(azimuth),
            )
        )
    return tuple(out)


BLOCK_FRAMES = 4  # STFT frames per block of `bearings_blocks` (the pipeline's 40 ms output frame)


def _blocks(cross: npt.NDArray[np.complexfloating]) -> npt.NDArray[np.complexfloating]:
    """Per-frame cross-spectra [T, P, B] -> sums over consecutive blocks of BLOCK_FRAMES frames."""
    k = -(-len(cross) // BLOCK_FRAMES)
    pad = k * BLOCK_FRAMES - len(cross)
    if pad:
        cross = np.concatenate([cross, np.zeros((pad, *cross.shape[1:]), cross.dtype)])
    return np.asarray(cross.reshape(k, BLOCK_FRAMES, *cross.shape[1:]).sum(axis=1))
