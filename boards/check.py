"""Recording of a source at a known direction + array profile -> calibration verdict.

A wrong channel order or a wrong geometry does not stop a localiser: it silently returns wrong
angles. This check measures every mic pair's time difference of arrival (GCC-PHAT over the loud
frames, 16x upsampled, parabolic peak) and compares it with what the profile predicts for the known
direction. Hypotheses, each fitted to the measured delays:

- `ok`:        the profile as it is;
- `swapped`:   two channels exchanged (every pair of channels is tried);
- `permuted`:  any channel order (all M! orders for M <= 8 mics);
- `rotated`:   the array turned about z by some angle (1 degree steps), i.e. its +x axis is elsewhere;
- `mirrored`:  the array reflected (y -> -y, then any rotation): a handedness error in the profile;
- `scaled`:    positions off by a common factor (a wrong radius or spacing; least squares).

For a planar or linear array every hypothesis may also shrink all delays by a factor in [0.7, 1]: a
source seen out of the array plane (floor and ceiling reflections do that in a room) shrinks them by
cos(elevation), so a planar profile's radius too large by up to that factor cannot be told from it.
The full channel-order search runs only when neither the profile nor a single swap fits.

The residual of each is the RMS difference, in samples at 16 kHz, between measured and predicted
delays. A hypothesis fits when its residual is within `tolerance` and within twice the best residual
(+0.05 samples); the verdict is the simplest that fits (in the order above, so a swap is reported as
a swap even where some larger permutation also fits) and the others are listed as equally
consistent; if none fits, the verdict is `mismatch`. A swap the known direction cannot reveal (two mics
at the same distance from the source) is named in the message. With a single known direction some
faults look alike (on a square array, exchanging two opposite-corner channels is the same as a mirror
image); a second recording from another direction (`--az` once per file) separates them. Several
recordings are pooled.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from boards.profiles import SPEED_OF_SOUND_M_S, ArrayProfile
from edge.dsp import backends
from edge.dsp.frontend import DEFAULT_FRONTEND, stft
from edge.dsp.gcc_phat import mic_pairs
from edge.errors import InputError

UPSAMPLE = 16
MAX_PERMUTATION_MICS = 8
DEFAULT_TOLERANCE_SAMPLES = 0.3
PLANAR_SHRINK = 0.7  # cos(45 deg): how far reflections may pull a planar array's apparent elevation
CLOSE_SAMPLES = 0.05  # a hypothesis within 2 x the best residual + this is as good as the best
SCALE_SEARCH = 2.0  # measured delays are searched up to this factor beyond the profile's largest
KINDS = ("ok", "swapped", "permuted", "rotated", "mirrored", "scaled")


@dataclass(frozen=True)
class Hypothesis:
    kind: str
    detail: str
    residual: float  # RMS delay error, samples
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "detail": self.detail, "residual_samples": round(self.residual, 3), **self.params}


@dataclass(frozen=True)
class CheckResult:
    array: str
    verdict: str
    message: str
    residual: float  # of the profile as it is
    tolerance: float
    hypotheses: tuple[Hypothesis, ...]  # every one that fits, simplest first
    best: tuple[Hypothesis, ...]  # the best fit of each kind
    measured: npt.NDArray[np.float64]  # [R, P] delays, samples, per recording and pair
    pairs: npt.NDArray[np.intp]

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "array": self.array,
            "verdict": self.verdict,
            "ok": self.ok,
            "message": self.message,
            "residual_samples": round(self.residual, 3),
            "tolerance_samples": self.tolerance,
            "consistent": [h.to_dict() for h in self.hypotheses],
            "best_fits": [h.to_dict() for h in self.best],
            "pairs": self.pairs.tolist(),
            "measured_tdoa_samples": np.round(self.measured, 3).tolist(),
        }


def _unit(az_deg: float, el_deg: float) -> npt.NDArray[np.float64]:
    a, e = math.radians(az_deg), math.radians(el_deg)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def _rot_z(deg: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """[..., 3, 3] rotation matrices about z."""
    r = np.radians(np.asarray(deg, dtype=np.float64))
    c, s = np.cos(r), np.sin(r)
    z, o = np.zeros_like(r), np.ones_like(r)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def measure_tdoa(x: npt.NDArray[np.floating], array: ArrayProfile) -> npt.NDArray[np.float64]:
    """[M, N] audio -> [P] measured delays (samples at 16 kHz) of every pair (i < j): arrival at i minus
    arrival at j. Searched up to SCALE_SEARCH times the largest physically possible delay."""
    from edge.localise import active_frames

    spec = DEFAULT_FRONTEND
    spectra = stft(x, spec)
    if spectra.shape[2] == 0:
        raise InputError(f"recording shorter than one analysis frame ({spec.win} samples)")
    mask = active_frames(spectra)
    if not mask.any():
        raise InputError("recording is silent: no frame to measure delays on")
    pairs = mic_pairs(array.n_mics)
    hz_per_bin = spec.sample_rate / spec.n_fft
    lo, hi = array.doa_band_hz
    bins = slice(max(1, math.ceil(lo / hz_per_bin)), min(spec.n_bins, math.floor(hi / hz_per_bin) + 1))
    cross = backends.get("phat_cross_spectra")(spectra[:, :, mask], pairs, bins).sum(axis=0)
    cc = np.asarray(backends.get("gcc")(cross, bins, spec.n_fft, UPSAMPLE), np.float64)
    centre = cc.shape[1] // 2
    mics = np.asarray(array.mics, np.float64)
    out = np.zeros(len(pairs))
    for p, (i, j) in enumerate(pairs):
        dist = float(np.linalg.norm(mics[i] - mics[j]))
        reach = math.ceil((SCALE_SEARCH * dist / SPEED_OF_SOUND_M_S * spec.sample_rate + 1.0) * UPSAMPLE)
        lo_k, hi_k = max(1, centre - reach), min(cc.shape[1] - 2, centre + reach)
        k = lo_k + int(np.argmax(cc[p, lo_k : hi_k + 1]))
        y0, y1, y2 = cc[p, k - 1], cc[p, k], cc[p, k + 1]
        den = y0 - 2.0 * y1 + y2
        frac = 0.5 * (y0 - y2) / den if den < 0 else 0.0
        out[p] = (k + frac - centre) / UPSAMPLE
    return out


def _delays(mics: npt.NDArray[np.float64], dirs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """mics [..., M, 3], dirs [R, 3] -> arrival delay of each mic relative to the centre, samples,
    [..., R, M] (mics nearer the source hear it earlier)."""
    centred = mics - mics.mean(axis=-2, keepdims=True)
    d = -np.einsum("...mk,rk->...rm", centred, dirs) / SPEED_OF_SOUND_M_S * DEFAULT_FRONTEND.sample_rate
    return np.asarray(d)


def _pair_tdoa(d: npt.NDArray[np.float64], pairs: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
    return np.asarray(d[..., pairs[:, 0]] - d[..., pairs[:, 1]])


def _rms(
    a: npt.NDArray[np.float64], measured: npt.NDArray[np.float64], shrink: float = 1.0
) -> npt.NDArray[np.float64]:
    """RMS over the last two axes (recordings, pairs) of predicted `a` minus `measured`.

    With `shrink` < 1 the prediction may first be scaled by the best factor in [shrink, 1]: in a
    planar or linear array's plane, a source seen higher or lower than given (floor and ceiling
    reflections pull the apparent elevation away from the plane) shrinks every delay by cos(el)."""
    if shrink < 1.0:
        num = np.sum(a * measured, axis=(-2, -1), keepdims=True)
        den = np.sum(a * a, axis=(-2, -1), keepdims=True)
        k = np.clip(num / np.where(den > 0, den, 1.0), shrink, 1.0)
        a = a * k
    return np.asarray(np.sqrt(np.mean((a - measured) ** 2, axis=(-2, -1))))


def check_recordings(
    recordings: Sequence[npt.NDArray[np.floating]],
    directions: Sequence[tuple[float, float]],
    array: ArrayProfile,
    tolerance: float = DEFAULT_TOLERANCE_SAMPLES,
) -> CheckResult:
    """Recordings [M, N] of a source at known (azimuth, elevation) degrees -> the verdict."""
    if len(recordings) != len(directions) or not recordings:
        raise InputError(f"{len(recordings)} recording(s) for {len(directions)} direction(s): give one --az per file")
    if not tolerance > 0:
        raise InputError(f"tolerance {tolerance!r}: must be > 0 samples")
    for n, x in enumerate(recordings):
        if x.ndim != 2 or x.shape[0] != array.n_mics:
            raise InputError(
                f"recording {n + 1} has {x.shape[0] if x.ndim == 2 else '?'} channels but the array "
                f"{array.name!r} has {array.n_mics} mics"
            )
    for az, el in directions:
        if not (math.isfinite(az) and math.isfinite(el) and -90.0 <= el <= 90.0):
            raise InputError(f"direction az={az!r} el={el!r}: azimuth must be finite, elevation in [-90, 90]")
    measured = np.stack([measure_tdoa(x, array) for x in recordings])  # [R, P]
    dirs = np.stack([_unit(az, el) for az, el in directions])  # [R, 3]
    mics = np.asarray(array.mics, np.float64)
    pairs = mic_pairs(array.n_mics)
    d0 = _delays(mics, dirs)  # [R, M]
    expected = _pair_tdoa(d0, pairs)
    shrink = 1.0 if array.geometry == "3d" else PLANAR_SHRINK
    residual = float(_rms(expected, measured, shrink))
    best: list[Hypothesis] = [Hypothesis("ok", "the profile as it is", residual)]

    # channel orders: channel c carries mic perm[c]
    m = array.n_mics
    swaps = list(itertools.combinations(range(m), 2))
    swap_perms = []
    for a, b in swaps:
        perm = list(range(m))
        perm[a], perm[b] = b, a
        swap_perms.append(perm)
    sp = np.array(swap_perms)
    r_swap = _rms(_pair_tdoa(d0[:, sp].transpose(1, 0, 2), pairs), measured, shrink)
    k = int(np.argmin(r_swap))
    a, b = swaps[k]
    best.append(Hypothesis("swapped", f"channels {a} and {b} are exchanged", float(r_swap[k]), {"channels": [a, b]}))
    if m <= MAX_PERMUTATION_MICS and min(residual, float(r_swap.min())) > tolerance:
        perms = np.array(list(itertools.permutations(range(m))))
        r_perm = _rms(_pair_tdoa(d0[:, perms].transpose(1, 0, 2), pairs), measured, shrink)
        k = int(np.argmin(r_perm))
        perm = perms[k].tolist()
        best.append(
            Hypothesis(
                "permuted",
                f"channel c carries the profile's mic {perm} [c]; fix: channel_map {_fixed_map(array, perm)}",
                float(r_perm[k]),
                {"order": perm, "channel_map": _fixed_map(array, perm)},
            )
        )

    # geometric: rotation about z, mirror image, common scale
    angles = np.arange(0.0, 360.0, 1.0)
    rot = _rot_z(angles)  # [A, 3, 3]
    rotated = np.einsum("aij,mj->ami", rot, mics)
    r_rot = _rms(_pair_tdoa(_delays(rotated, dirs), pairs), measured, shrink)
    r_rot[0] = np.inf  # no rotation is the `ok` hypothesis
    k = int(np.argmin(r_rot))
    deg = float(_signed(angles[k]))
    best.append(
        Hypothesis(
            "rotated",
            f"the array is turned by {deg:+.0f} degrees about z (its +x axis points to azimuth {deg:+.0f})",
            float(r_rot[k]),
            {"rotation_deg": deg},
        )
    )
    flipped = mics * np.array([1.0, -1.0, 1.0])
    mirrored = np.einsum("aij,mj->ami", rot, flipped)
    r_mir = _rms(_pair_tdoa(_delays(mirrored, dirs), pairs), measured, shrink)
    k = int(np.argmin(r_mir))
    axis = float(_signed(angles[k] / 2.0))
    best.append(
        Hypothesis(
            "mirrored",
            f"the array is the mirror image of the profile (reflected across the line at azimuth {axis:+.1f})",
            float(r_mir[k]),
            {"mirror_axis_deg": axis},
        )
    )
    e = expected.ravel()
    scale = float(np.dot(e, measured.ravel()) / np.dot(e, e)) if np.dot(e, e) > 0 else 1.0
    best.append(
        Hypothesis(
            "scaled",
            f"mic positions are {scale:.3f} x the profile's (a wrong radius or spacing)",
            float(_rms(expected * scale, measured)),
            {"scale": round(scale, 4)},
        )
    )
    # a hypothesis fits when it is within the tolerance and about as good as the best one
    r_min = min(h.residual for h in best)
    fits = [h for h in best if h.residual <= min(tolerance, 2.0 * r_min + CLOSE_SAMPLES)]
    # within 5 % is noise; a planar array's delays shrunk by up to PLANAR_SHRINK are an elevation
    fits = [h for h in fits if not (h.kind == "scaled" and shrink * 0.95 < scale < 1.05)]
    if fits and fits[0].kind == "swapped":  # the same order found again is no alternative
        fits = [h for h in fits if not (h.kind == "permuted" and h.params["order"] == _swap_perm(m, fits[0]))]
    blind = [
        f"{a} and {b}"
        for (a, b), r in zip(swaps, _rms(_pair_tdoa(d0[:, sp].transpose(1, 0, 2), pairs), expected), strict=True)
        if r <= tolerance
    ]
    if fits:
        verdict = fits[0]
        message = (
            f"{array.name}: OK (delays match the profile within {residual:.2f} samples)"
            if verdict.kind == "ok"
            else f"{array.name}: {verdict.detail} (residual {verdict.residual:.2f} samples; "
            f"the profile as it is: {residual:.2f})"
        )
        others = [h.kind for h in fits[1:] if verdict.kind != "ok"]
        if others:
            message += "; equally consistent: " + ", ".join(others) + " (a recording from another direction tells)"
        if blind and verdict.kind == "ok":
            message += (
                "; from this direction an exchange of channels " + ", ".join(blind) + " would not show: "
                "check once more from another direction"
            )
        kind = verdict.kind
    else:
        kind = "mismatch"
        nearest = min(best, key=lambda h: h.residual)
        message = (
            f"{array.name}: the delays do not match the profile (residual {residual:.2f} samples, tolerance "
            f"{tolerance:g}) nor a channel swap, channel order, rotation, mirror image or scale; nearest: "
            f"{nearest.kind} ({nearest.residual:.2f}). Check the direction given, the recording (one source, "
            "little reverberation) and the geometry"
        )
    return CheckResult(
        array=array.name,
        verdict=kind,
        message=message,
        residual=residual,
        tolerance=tolerance,
        hypotheses=tuple(fits),
        best=tuple(best),
        measured=measured,
        pairs=pairs,
    )


def _swap_perm(m: int, h: Hypothesis) -> list[int]:
    a, b = h.params["channels"]
    perm = list(range(m))
    perm[a], perm[b] = b, a
    return perm


def _signed(deg: float) -> float:
    w = (deg + 180.0) % 360.0 - 180.0
    return 180.0 if w == -180.0 else w


def _fixed_map(array: ArrayProfile, perm: Sequence[int]) -> list[int]:
    """The channel_map that undoes `perm` (channel c carries mic perm[c])."""
    fixed = [0] * len(perm)
    for c, mic in enumerate(perm):
        fixed[mic] = array.channel_map[c]
    return fixed
