"""`tympan evaluate doa`: direction of arrival in simulated rooms, Tympan vs pyroomacoustics.

Scenes (pyroomacoustics image-source shoebox rooms, seeded):
- rooms 4-8 x 3-6 x 2.5-3.5 m, RT60 uniform in [0.15, 0.8] s (Sabine inversion, full image order);
- the array centre at 0.8-1.6 m height, at least 1 m from the walls; every board array sits at the
  same centre in the same room (one simulation per scene serves all arrays), in the room's frame;
- sources 0.8-3 m from the array centre (near <= 1.5 m, far >= 2 m), elevation -30..45 degrees
  (above and below the array plane), azimuth uniform, at least 0.4 m from the walls;
- source signals: real recordings, 1.5 s of an ESC-50 clip (its loudest part) from
  `<data>/esc50/audio` (default `../shared/data`, relative to the working directory), of the clips
  with at least a quarter of that energy in 300-4000 Hz, the band where the arrays localise
  (`SCENE_BAND_HZ`, `MIN_BAND_SHARE`);
- white sensor noise at an SNR uniform in [5, 30] dB (relative to the reverberant source at mic 0).
Two-source scenes put two different clips, simultaneously and at equal power in 300-4000 Hz at the
array (their direct sound), >= 45 degrees apart in azimuth.

Methods, on the same STFT frames (the edge's 25 ms / 10 ms STFT, its loud frames, the array's DOA
band): Tympan `srp-phat`, `music`, `normmusic` (`edge.localise`, on the DSP backend the device would
pick, `backends.resolve`: the native kernels where built) and pyroomacoustics `SRP`, `MUSIC`,
`NormMUSIC` (`pra.doa`, azimuth grid of 1 degree, 2-D: the plane of the array; Tympan searches azimuth
x elevation, 600 directions on a planar array: 120 azimuths x 5 elevations, none at the pole). CPU
time per audio second is process time (each recording's median of `--cpu-repeats` calls), medians over
scenes, of the DOA stage given the STFT (both get
the same frames: Tympan's PHAT cross-spectra, map and refinement; pyroomacoustics' `locate_sources`);
the STFT's own time, which on the device is shared with the sound event detector, is reported apart
(`stft_per_audio_s`).

Scores: absolute azimuth error (for a linear array the smaller of the errors of the estimate and its
mirror image: it cannot tell them apart); median, 90th percentile, share within 10 degrees; two-source
scenes: share where both sources are found within 10 degrees (one estimate each, optimal matching),
over every array and over the planar and 3-D ones (the target row: a linear array cannot tell a source's
azimuth from its mirror image's, nor, off the array plane, from its elevation).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError, InputError

FS = 16000
CLIP_S = 1.5
DEFAULT_DATA = "../shared/data"
TYMPAN_METHODS = ("srp-phat", "music", "normmusic")
PRA_METHODS = ("SRP", "MUSIC", "NormMUSIC")
WITHIN_DEG = 10.0
MIN_SEPARATION_DEG = 45.0
FOUR_MIC = ("respeaker-4mic-hat", "respeaker-usb-4mic-v2")
GIVEN_COUNT_MIN_REL = 0.05  # Tympan's hist_min_rel when the number of sources is given
# The band where the bundled arrays localise (their DOA bands span 300 Hz to 2.9-6 kHz). A clip with less
# than MIN_BAND_SHARE of its energy there is not used as a source, and simultaneous sources are set to equal
# power there: with equal power over the whole band, a source whose energy lies below 300 Hz or above
# the arrays' band (an airplane's or a washing machine's rumble, a mouse click) sat 10-17 dB under the
# other one, or under the sensor noise, where any of the arrays can hear a direction.
SCENE_BAND_HZ = (300.0, 4000.0)
MIN_BAND_SHARE = 0.25


@dataclass(frozen=True)
class Source:
    az: float
    el: float
    dist: float
    clip: str


@dataclass(frozen=True)
class Scene:
    room: tuple[float, float, float]
    rt60: float
    snr_db: float
    centre: tuple[float, float, float]
    sources: tuple[Source, ...]
    seed: int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=DEFAULT_DATA, help=f"data folder with esc50/ (default {DEFAULT_DATA})")
    # 48 scenes: the 4-mic median over 2 x 24 scenes moved by 0.8 degrees between noise realisations
    p.add_argument("--scenes", type=int, default=48, help="single-source scenes (default 48)")
    p.add_argument("--two-source-scenes", type=int, default=24, help="two-source scenes (default 24)")
    p.add_argument("--arrays", nargs="+", metavar="NAME", help="array profiles (default: every bundled array)")
    p.add_argument("--no-peers", action="store_true", help="Tympan's methods only (no pyroomacoustics DOA)")
    p.add_argument("--cpu-repeats", type=int, default=3,
                   help="calls of each method per recording; its CPU time is their median (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="PREFIX", help="write PREFIX.json and PREFIX.md")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _clips(data: Path, rng: np.random.Generator, n: int) -> list[Path]:
    meta = data / "esc50" / "esc50_meta.csv"
    audio = data / "esc50" / "audio"
    if not meta.is_file() or not audio.is_dir():
        raise InputError(f"{data}: no esc50/esc50_meta.csv and esc50/audio (give --data, the shared data folder)")
    names = [line.split(",")[0] for line in meta.read_text().splitlines()[1:] if line.strip()]
    names = [x for x in names if (audio / x).is_file()]
    if not names:
        raise InputError(f"{audio}: none of the clips listed in esc50_meta.csv is there")
    return [audio / names[i] for i in rng.choice(len(names), size=min(n, len(names)), replace=False)]


def _loudest(path: Path, seconds: float) -> npt.NDArray[np.float64] | None:
    """The loudest `seconds` of a clip, unit RMS; None for a clip that is nearly silent, or that has less
    than MIN_BAND_SHARE of its energy in SCENE_BAND_HZ."""
    from edge.sources import read_audio

    x = read_audio(str(path))[0].astype(np.float64)
    n = int(seconds * FS)
    if len(x) < n:
        return None
    c = np.concatenate([[0.0], np.cumsum(x**2)])
    e = c[n:] - c[:-n]  # energy of every n-sample window
    start = int(np.argmax(e[:: FS // 100])) * (FS // 100)
    seg = x[start : start + n]
    active = np.mean(np.abs(seg) > 0.1 * np.abs(seg).max())
    rms = float(np.sqrt(np.mean(seg**2)))
    if rms < 1e-4 or active < 0.05 or _band_rms(seg) ** 2 < MIN_BAND_SHARE * rms**2:
        return None
    return seg / rms


def make_scenes(n: int, n_sources: int, rng: np.random.Generator, clips: Sequence[Path]) -> list[Scene]:
    scenes: list[Scene] = []
    k = 0
    while len(scenes) < n:
        room = (float(rng.uniform(4, 8)), float(rng.uniform(3, 6)), float(rng.uniform(2.5, 3.5)))
        centre = (
            float(rng.uniform(1.0, room[0] - 1.0)),
            float(rng.uniform(1.0, room[1] - 1.0)),
            float(rng.uniform(0.8, 1.6)),
        )
        srcs: list[Source] = []
        for _ in range(200):
            if len(srcs) == n_sources:
                break
            az = float(rng.uniform(-180.0, 180.0))
            if any(abs((az - s.az + 180.0) % 360.0 - 180.0) < MIN_SEPARATION_DEG for s in srcs):
                continue
            el, dist = float(rng.uniform(-30.0, 45.0)), float(rng.uniform(0.8, 3.0))
            pos = np.array(centre) + dist * _unit(az, el)
            if np.all(pos >= 0.4) and np.all(pos <= np.array(room) - 0.4):
                clip = str(clips[(k + len(srcs)) % len(clips)])
                srcs.append(Source(az, el, dist, clip))
        k += n_sources
        if len(srcs) == n_sources:
            rt60 = float(rng.uniform(0.15, 0.8))
            snr = float(rng.uniform(5.0, 30.0))
            scenes.append(Scene(room, rt60, snr, centre, tuple(srcs), int(rng.integers(1 << 30))))
    return scenes


def _unit(az: float, el: float) -> npt.NDArray[np.float64]:
    a, e = math.radians(az), math.radians(el)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def _band_rms(x: npt.NDArray[np.float64]) -> float:
    """RMS of x within SCENE_BAND_HZ (Parseval on one FFT of the whole signal)."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / FS)
    sel = (f >= SCENE_BAND_HZ[0]) & (f <= SCENE_BAND_HZ[1])
    power = 2.0 * float(np.sum(np.abs(spec[sel]) ** 2)) / len(x) ** 2
    return max(math.sqrt(power), 1e-9)


def render(scene: Scene, arrays: Sequence[Any], signals: Sequence[npt.NDArray[np.float64]]) -> list[npt.NDArray]:
    """The scene recorded by every array (all at the scene's centre): [M, N] float32 each."""
    import pyroomacoustics as pra

    e_abs, order = pra.inverse_sabine(scene.rt60, list(scene.room))
    room = pra.ShoeBox(list(scene.room), fs=FS, materials=pra.Material(e_abs), max_order=order)
    centre = np.array(scene.centre)
    if len(signals) > 1:  # simultaneous sources: equal power in SCENE_BAND_HZ (one source: any level will do)
        signals = [sig / _band_rms(sig) for sig in signals]
    for src, sig in zip(scene.sources, signals, strict=True):
        room.add_source((centre + src.dist * _unit(src.az, src.el)).tolist(), signal=sig * src.dist)
    mics = np.concatenate([np.asarray(a.mics) for a in arrays]) + centre
    room.add_microphone_array(pra.MicrophoneArray(mics.T, FS))
    room.simulate()
    y = room.mic_array.signals[:, : int(CLIP_S * FS) + int(0.1 * FS)]
    rng = np.random.default_rng(scene.seed)
    p = float(np.mean(y[0] ** 2))
    y = y + rng.normal(0.0, math.sqrt(p * 10 ** (-scene.snr_db / 10)), y.shape)
    y = (0.3 * y / np.abs(y).max()).astype(np.float32)
    out, i = [], 0
    for a in arrays:
        out.append(y[i : i + a.n_mics])
        i += a.n_mics
    return out


# --- estimators: audio [M, N] -> azimuths (degrees), CPU seconds of the DOA stage and of the STFT ---------
Estimator = Callable[[npt.NDArray[np.float32], int], tuple[list[float], float, float]]


def tympan_estimator(array: Any, method: str) -> Estimator:
    from edge.dsp import backends
    from edge.dsp.frontend import stft
    from edge.localise import BLOCK_FRAMES, Localiser, LocaliserConfig, active_frames

    backend = backends.resolve(None)  # as on the device: the native kernels where they are built
    # the number of sources is given, as pyroomacoustics is given num_src: the n highest peaks, down to
    # GIVEN_COUNT_MIN_REL of the highest (the device's default, 0.2, is for an unknown count)
    locs = {
        n: Localiser(array, config=LocaliserConfig(
            method=method, max_sources=n, backend=backend, hist_min_rel=GIVEN_COUNT_MIN_REL))
        for n in (1, 2)
    }  # fmt: skip

    def est(x: npt.NDArray[np.float32], n_src: int) -> tuple[list[float], float, float]:
        loc = locs[n_src]
        t = time.process_time()
        s = stft(x)
        t_stft = time.process_time() - t
        t = time.process_time()
        mask = active_frames(s)
        # the loud frames' cross-spectra summed in one kernel call: all of them for one source, per block
        # of BLOCK_FRAMES for the votes that find two (`Localiser.block_cross`)
        cross, frame_w = loc.block_cross(s, mask, None if n_src == 1 else BLOCK_FRAMES)
        n = float(frame_w.sum())
        if not len(cross):
            b: tuple[Any, ...] = ()
        else:
            b = loc.bearings(cross[0], n_frames=n) if n_src == 1 else loc.bearings_blocks(cross, n)
        cpu = time.process_time() - t
        return [x.azimuth for x in b], cpu, t_stft

    return est


def pra_estimator(array: Any, name: str) -> Estimator:
    import pyroomacoustics as pra

    from edge.dsp.frontend import stft
    from edge.localise import active_frames

    mics = np.asarray(array.mics) - np.mean(array.mics, axis=0)
    grid = np.radians(np.arange(0.0, 360.0, 1.0))
    doas = {
        n: pra.doa.algorithms[name](mics[:, :2].T, FS, 512, c=343.0, num_src=n, azimuth=grid) for n in (1, 2)
    }
    band = list(array.doa_band_hz)

    def est(x: npt.NDArray[np.float32], n_src: int) -> tuple[list[float], float, float]:
        t = time.process_time()
        s = stft(x)
        t_stft = time.process_time() - t
        frames = s[:, :, active_frames(s)]
        doa = doas[n_src]
        t = time.process_time()
        doa.locate_sources(frames, num_src=n_src, freq_range=band)
        cpu = time.process_time() - t
        return [float(np.degrees(a)) for a in np.atleast_1d(doa.azimuth_recon)], cpu, t_stft

    return est


def _err(est: float, truth: float, mirror: Callable[[float], float | None]) -> float:
    e = abs((est - truth + 180.0) % 360.0 - 180.0)
    m = mirror(est)
    if m is not None:
        e = min(e, abs((m - truth + 180.0) % 360.0 - 180.0))
    return float(e)


def _mirror_fn(array: Any) -> Callable[[float], float | None]:
    if array.geometry != "linear":
        return lambda az: None
    axis = np.asarray(array.mics[-1]) - np.asarray(array.mics[0])
    axis_az = math.degrees(math.atan2(axis[1], axis[0]))
    return lambda az: 2.0 * axis_az - az


def _both_found(ests: list[float], truths: list[float], mirror: Callable[[float], float | None]) -> bool:
    if len(ests) < 2:
        return False
    a = _err(ests[0], truths[0], mirror) <= WITHIN_DEG and _err(ests[1], truths[1], mirror) <= WITHIN_DEG
    b = _err(ests[0], truths[1], mirror) <= WITHIN_DEG and _err(ests[1], truths[0], mirror) <= WITHIN_DEG
    return a or b


def _stats(errs: Sequence[float]) -> dict[str, float | int | None]:
    if not errs:
        return {"n": 0, "median_deg": None, "p90_deg": None, "within_10": None}
    e = np.asarray(errs)
    return {
        "n": len(e),
        "median_deg": round(float(np.median(e)), 2),
        "p90_deg": round(float(np.percentile(e, 90)), 2),
        "within_10": round(float(np.mean(e <= WITHIN_DEG)), 3),
    }


def evaluate(
    data: Path,
    array_names: Sequence[str] | None,
    n_single: int,
    n_two: int,
    peers: bool,
    seed: int,
    progress: Callable[[str], None] | None = None,
    cpu_repeats: int = 3,
) -> dict[str, Any]:
    from boards.profiles import list_profiles, load_array

    names = list(array_names) if array_names else [n for k, n, _ in list_profiles() if k == "array"]
    arrays = [load_array(n) for n in names]
    rng = np.random.default_rng(seed)
    clip_paths = _clips(data, rng, 4 * (n_single + 2 * n_two) + 20)
    cache: dict[str, npt.NDArray[np.float64] | None] = {}

    def signal(p: str) -> npt.NDArray[np.float64] | None:
        if p not in cache:
            cache[p] = _loudest(Path(p), CLIP_S)
        return cache[p]

    usable = [p for p in clip_paths if signal(str(p)) is not None]
    if len(usable) < 2:
        raise InputError(f"{data}: fewer than 2 usable clips")
    methods = [("tympan", m) for m in TYMPAN_METHODS] + ([("pra", m) for m in PRA_METHODS] if peers else [])
    estimators = {
        (a.name, f"{kind}-{m}"): (tympan_estimator(a, m) if kind == "tympan" else pra_estimator(a, m))
        for a in arrays
        for kind, m in methods
    }
    rows: list[dict[str, Any]] = []
    t_start = time.time()
    for n_src, count in ((1, n_single), (2, n_two)):
        for i, scene in enumerate(make_scenes(count, n_src, rng, usable)):
            sigs = [signal(s.clip) for s in scene.sources]
            recs = render(scene, arrays, [s for s in sigs if s is not None])
            for a, x in zip(arrays, recs, strict=True):
                mirror = _mirror_fn(a)
                truth = [s.az for s in scene.sources]
                for (aname, mname), est in estimators.items():
                    if aname != a.name:
                        continue
                    # each method's CPU: the median of `cpu_repeats` calls on the same recording (the
                    # Tympan stage takes about 1 ms a scene, where the shared host's hiccups weigh)
                    runs = [est(x, n_src) for _ in range(max(1, cpu_repeats))]
                    azs = runs[0][0]
                    cpu = statistics.median(r[1] for r in runs)
                    cpu_stft = statistics.median(r[2] for r in runs)
                    row: dict[str, Any] = {
                        "array": a.name, "linear": a.geometry == "linear", "method": mname, "sources": n_src,
                        "rt60": round(scene.rt60, 3),
                        "snr_db": round(scene.snr_db, 1), "dist": round(scene.sources[0].dist, 2),
                        "el": round(scene.sources[0].el, 1), "cpu_per_audio_s": cpu / (x.shape[1] / FS),
                        "stft_per_audio_s": cpu_stft / (x.shape[1] / FS),
                    }  # fmt: skip
                    if n_src == 1:
                        row["err_deg"] = _err(azs[0], truth[0], mirror) if azs else 180.0
                    else:
                        row["both_found"] = _both_found(azs, truth, mirror)
                    rows.append(row)
            if progress is not None:
                progress(f"{n_src}-source scene {i + 1}/{count} ({time.time() - t_start:.0f} s)")
    return summarise(rows, names, [f"{k}-{m}" for k, m in methods])


def summarise(rows: list[dict[str, Any]], arrays: Sequence[str], methods: Sequence[str]) -> dict[str, Any]:
    single = [r for r in rows if r["sources"] == 1]
    two = [r for r in rows if r["sources"] == 2]

    def cpu(rs: list[dict[str, Any]], key: str = "cpu_per_audio_s") -> float | None:
        return round(statistics.median(r[key] for r in rs), 5) if rs else None

    table = []
    for a in arrays:
        for m in methods:
            rs = [r for r in single if r["array"] == a and r["method"] == m]
            ts = [r for r in two if r["array"] == a and r["method"] == m]
            table.append(
                {"array": a, "method": m, **_stats([r["err_deg"] for r in rs]),
                 "both_found": round(float(np.mean([r["both_found"] for r in ts])), 3) if ts else None,
                 "cpu_per_audio_s": cpu(rs + ts)}
            )  # fmt: skip
    overall = []
    for m in methods:
        rs = [r for r in single if r["method"] == m]
        ts = [r for r in two if r["method"] == m]
        four = [r for r in rs if r["array"] in FOUR_MIC]
        # a linear array measures only the angle to its axis: it cannot tell a source from its mirror
        # image, nor, for a source above or below the array plane, the azimuth from the elevation
        plane = [r for r in ts if not r.get("linear")]
        overall.append(
            {"method": m, **_stats([r["err_deg"] for r in rs]),
             "four_mic": _stats([r["err_deg"] for r in four]),
             "both_found": round(float(np.mean([r["both_found"] for r in ts])), 3) if ts else None,
             "both_found_planar": round(float(np.mean([r["both_found"] for r in plane])), 3) if plane else None,
             "cpu_per_audio_s": cpu(rs + ts), "stft_per_audio_s": cpu(rs + ts, "stft_per_audio_s"),
             "cpu_single": cpu(rs), "cpu_two": cpu(ts)}
        )  # fmt: skip
    by: dict[str, Any] = {}
    bins: dict[str, list[tuple[float, float]]] = {
        "rt60": [(0.15, 0.35), (0.35, 0.55), (0.55, 0.81)],
        "snr_db": [(5, 12), (12, 20), (20, 30.1)],
        "dist": [(0.8, 1.5), (1.5, 2.0), (2.0, 3.01)],
        "el": [(-30, -5), (-5, 5), (5, 45.1)],
    }
    for key, edges in bins.items():
        by[key] = {
            m: {
                f"{lo:g}-{hi:g}": _stats([r["err_deg"] for r in single if r["method"] == m and lo <= r[key] < hi])
                for lo, hi in edges
            }
            for m in methods
        }
    return {"arrays": list(arrays), "methods": list(methods), "table": table, "overall": overall, "by": by,
            "n_single_rows": len(single), "n_two_rows": len(two)}  # fmt: skip


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as PASS/FAIL rows (Tympan SRP-PHAT, the default method)."""
    ov = {o["method"]: o for o in summary["overall"]}
    out: list[dict[str, Any]] = []
    t = ov.get("tympan-srp-phat")
    if t is None:
        return out
    fm = t["four_mic"]
    if fm["n"]:
        out.append({"target": "4-mic median azimuth error <= 2 deg", "value": fm["median_deg"],
                    "pass": fm["median_deg"] <= 2.0})  # fmt: skip
        out.append({"target": "4-mic share within 10 deg >= 95%", "value": fm["within_10"],
                    "pass": fm["within_10"] >= 0.95})  # fmt: skip
    if t["both_found"] is not None:
        # over the arrays that resolve azimuth (not linear ones) where the run has any, else over all
        key = "both_found_planar" if t.get("both_found_planar") is not None else "both_found"
        mine = [o for o in summary["overall"] if o["method"].startswith("tympan")]
        best2 = max((o.get(key) or 0.0, o["method"]) for o in mine)
        where = "planar and 3-D arrays" if key == "both_found_planar" else "all arrays"
        out.append({"target": "two sources >= 45 deg apart both found >= 90% (Tympan SRP-PHAT)",
                    "value": t[key], "pass": t[key] >= 0.9,
                    "note": f"{where}; every array, linear ones too: {t['both_found']}; "
                            f"best Tympan method: {best2[1]} {best2[0]}"})  # fmt: skip
    p = ov.get("pra-SRP")
    if p is not None and p["cpu_per_audio_s"] and t["cpu_per_audio_s"]:
        ratio = p["cpu_per_audio_s"] / t["cpu_per_audio_s"]
        acc = t["median_deg"] <= p["median_deg"] and t["within_10"] >= p["within_10"]
        out.append({"target": ">= 10x faster than pyroomacoustics SRP-PHAT at equal or better accuracy",
                    "value": round(ratio, 1), "pass": ratio >= 10.0 and acc,
                    "note": f"DOA stage given the STFT; {_kind_ratios(p, t)}with Tympan's STFT too: "
                            f"{p['cpu_per_audio_s'] / (t['cpu_per_audio_s'] + t['stft_per_audio_s']):.1f}x; "
                            f"accuracy median {t['median_deg']} vs {p['median_deg']} deg, within 10 "
                            f"{t['within_10']} vs {p['within_10']}"})  # fmt: skip
    return out


def _kind_ratios(peer: dict[str, Any], mine: dict[str, Any]) -> str:
    """'single-source scenes Ax, two-source Bx; ' (medians of each kind of scene), or '' without them."""
    parts = []
    for key, label in (("cpu_single", "single-source scenes"), ("cpu_two", "two-source")):
        if peer.get(key) and mine.get(key):
            parts.append(f"{label} {peer[key] / mine[key]:.1f}x")
    return "; ".join(parts) + "; " if parts else ""


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# DOA: Tympan vs pyroomacoustics in simulated rooms", ""]
    lines += [f"{meta['description']}", ""]
    lines += ["Machine: " + meta["machine"] + "; " + meta["caveat"], "", "## Targets", ""]
    lines += ["| target | measured | pass |", "|---|---|---|"]
    for t in targets(summary):
        note = f" ({t['note']})" if t.get("note") else ""
        lines.append(f"| {t['target']} | {t['value']}{note} | {'PASS' if t['pass'] else 'FAIL'} |")
    lines += ["", "## All arrays, single source", ""]
    lines += ["| method | n | median deg | p90 deg | within 10 | 4-mic median | 4-mic within 10 | two found "
              "| two found, not linear | DOA CPU s / audio s | one source | two sources | (STFT) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for o in summary["overall"]:
        lines.append(f"| {o['method']} | {o['n']} | {o['median_deg']} | {o['p90_deg']} | {o['within_10']} | "
                     f"{o['four_mic']['median_deg']} | {o['four_mic']['within_10']} | {o['both_found']} | "
                     f"{o.get('both_found_planar')} | "
                     f"{o['cpu_per_audio_s']} | {o.get('cpu_single')} | {o.get('cpu_two')} | "
                     f"{o['stft_per_audio_s']} |")  # fmt: skip
    lines += ["", "## Per array", ""]
    lines += ["| array | method | n | median deg | p90 deg | within 10 | two found | CPU s / audio s |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in summary["table"]:
        lines.append(f"| {r['array']} | {r['method']} | {r['n']} | {r['median_deg']} | {r['p90_deg']} | "
                     f"{r['within_10']} | {r['both_found']} | {r['cpu_per_audio_s']} |")  # fmt: skip
    for key, label in (("rt60", "RT60 s"), ("snr_db", "SNR dB"), ("dist", "distance m"), ("el", "elevation deg")):
        lines += ["", f"## By {label} (all arrays; median deg / within 10)", ""]
        cols = list(next(iter(summary["by"][key].values())))
        lines += ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for m, d in summary["by"][key].items():
            lines.append(f"| {m} | " + " | ".join(f"{d[c]['median_deg']} / {d[c]['within_10']} (n={d[c]['n']})"
                                                   for c in cols) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    try:
        import pyroomacoustics  # noqa: F401
    except ImportError:
        raise ConfigError("tympan evaluate doa needs pyroomacoustics: install the eval extra") from None
    if args.scenes < 0 or args.two_source_scenes < 0 or args.scenes + args.two_source_scenes == 0:
        raise InputError(f"--scenes {args.scenes} --two-source-scenes {args.two_source_scenes}: need some scenes")
    if args.cpu_repeats < 1:
        raise InputError(f"--cpu-repeats {args.cpu_repeats}: need at least 1")
    summary = evaluate(Path(args.data), args.arrays, args.scenes, args.two_source_scenes, not args.no_peers,
                       args.seed, progress=lambda s: print(s, file=__import__("sys").stderr),
                       cpu_repeats=args.cpu_repeats)  # fmt: skip
    from edge.bench import host_cpu

    meta = {
        "description": (
            f"{args.scenes} single-source and {args.two_source_scenes} two-source scenes (seed {args.seed}) per "
            "array; rooms RT60 0.15-0.8 s, SNR 5-30 dB, distance 0.8-3 m, elevation -30..45 deg; ESC-50 "
            "clips as sources (see edge/evaluation/doa_eval.py)."
        ),
        "machine": f"{platform.machine()}, {host_cpu()}, Python {platform.python_version()}",
        "caveat": (f"CPU time is process time (each recording's median of {args.cpu_repeats} calls of each method) "
                   "on a shared, noisy machine; compare methods within this run only."),
    }
    result = {"meta": meta, "targets": targets(summary), **summary}
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(result, indent=1))
        Path(args.out + ".md").write_text(markdown(summary, meta))
    if args.json:
        print(json.dumps(result))
    else:
        print(markdown(summary, meta))
    return 0
