#!/usr/bin/env python3
"""GPU check of the tinygrad DSP backend: correctness against the numpy reference and batch speed.

Run on a machine with a GPU (CI has none; the suite tests tinygrad's CPU path). Needs
`pip install -e '.[gpu]'` (tinygrad) and a CUDA driver; runs in about a minute:

    TYMPAN_TINYGRAD_DEVICE=CUDA .venv/bin/python benchmarks/gpu_check.py [--batches 1,16,64,256]

1. Every tinygrad kernel on the device equals the numpy reference within the tolerances of
   tests/test_backends.py (random 4-channel audio, 1 s).
2. Batch work, where a GPU should win: the log-mel front end of `--batches` batches of 4-channel 10 s
   recordings: the fused `logmel_batch` kernel on the device, the per-kernel path (STFT, then log-mel
   per recording, spectra crossing to the host), and the native backend on one CPU core (wall time,
   median of 5, after a warm-up call that compiles the kernels).

3. The streaming edge pipeline (the bundled 10 s 4-channel scene in 100 ms blocks, SED + DOA +
   tracking, the model on one thread) with the tinygrad backend against the native one: its events
   compared (label, onset, offset; direction within 2 deg) and its cost per audio second (wall time
   and process CPU time, median of 3 after a warm-up run). The kernels tinygrad lacks (the DOA
   votes) run native (`backends.get`). `--scene-npy` gives the scene as a float32 [4, N] .npy where
   soundfile is not installed.

Writes benchmarks/results/gpu_check.md and .json; exit status 1 if a kernel or an event disagrees.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = {"spectra": 2e-5, "logmel": 1e-3, "phat": 1e-5, "gcc": 2e-5, "srp": 1e-5, "power": 1e-5}


def wall(fn: Any, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gpu_name() -> str:
    """The GPU's name as nvidia-smi reports it ("unknown GPU" where there is no nvidia-smi)."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown GPU"
    names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return ", ".join(names) if out.returncode == 0 and names else "unknown GPU"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="1,16,64,256", help="batch sizes to time (default %(default)s)")
    ap.add_argument("--scene-npy", help="the bundled scene as float32 [4, N] .npy (default: decode the FLAC)")
    args = ap.parse_args()
    os.environ.setdefault("TYMPAN_TINYGRAD_DEVICE", "CUDA")
    from edge.dsp import backends, frontend, tinygrad_backend
    from edge.dsp.gcc_phat import mic_pairs
    from edge.dsp.level import parseval_weights

    dev = tinygrad_backend.device()
    spec = frontend.DEFAULT_FRONTEND
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 16000)) * 0.1).astype(np.float32)
    ref = {k: backends.get(k) for k in backends.KERNELS}
    tg = tinygrad_backend.KERNELS
    bins = slice(10, 193)
    pairs = mic_pairs(4)
    s = ref["stft"](x, spec)
    c = ref["phat_cross_spectra"](s, pairs, bins)
    cc = ref["gcc"](c.sum(axis=0), bins, spec.n_fft, 16)
    lag = rng.uniform(-10.0, cc.shape[1] + 10.0, (1800, len(pairs)))
    w = parseval_weights(spec)

    def rel(a: Any, b: Any) -> float:
        return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(float(np.max(np.abs(b))), 1e-30))

    checks = {
        "stft": (rel(tg["stft"](x, spec), s), TOL["spectra"]),
        "logmel_from_spectra": (
            float(np.max(np.abs(tg["logmel_from_spectra"](s, spec) - ref["logmel_from_spectra"](s, spec)))),
            TOL["logmel"],
        ),
        "phat_cross_spectra": (float(np.max(np.abs(tg["phat_cross_spectra"](s, pairs, bins) - c))), TOL["phat"]),
        "gcc": (rel(tg["gcc"](c.sum(axis=0), bins, spec.n_fft, 16), cc), TOL["gcc"]),
        "srp_map": (rel(tg["srp_map"](cc, lag), ref["srp_map"](cc, lag)), TOL["srp"]),
        "frame_power": (rel(tg["frame_power"](s, w), ref["frame_power"](s, w)), TOL["power"]),
    }
    ok = all(err <= tol for err, tol in checks.values())
    for k, (err, tol) in checks.items():
        print(f"{k:22s} error {err:.2e} (tolerance {tol:.0e}) {'ok' if err <= tol else 'MISMATCH'}")

    xb = np.stack([x, 0.5 * x[::-1], np.zeros_like(x)])
    checks["logmel_batch"] = (
        float(np.max(np.abs(tg["logmel_batch"](xb, spec) - ref["logmel_batch"](xb, spec)))),
        TOL["logmel"],
    )
    ok = all(err <= tol for err, tol in checks.values())
    print(f"{'logmel_batch':22s} error {checks['logmel_batch'][0]:.2e}")

    batches = [int(v) for v in args.batches.split(",")]
    timing: dict[str, dict[int, float]] = {"tinygrad_fused": {}, "tinygrad_unfused": {}}
    have_native = "native" in backends.backends()
    if have_native:
        timing["native_cpu"] = {}
    for nb in batches:
        batch = (rng.standard_normal((nb, 4, 160000)) * 0.1).astype(np.float32)
        flat = batch.reshape(nb * 4, -1)

        def unfused(flat: Any = flat, nb: int = nb) -> None:  # the per-kernel path: spectra go back to the host
            spectra = tg["stft"](flat, spec)
            for i in range(nb):
                tg["logmel_from_spectra"](spectra[4 * i : 4 * i + 4], spec)

        runs = {"tinygrad_fused": lambda batch=batch: tg["logmel_batch"](batch, spec), "tinygrad_unfused": unfused}
        if have_native:
            nat = backends.get("logmel_batch", "native")
            runs["native_cpu"] = lambda batch=batch, nat=nat: nat(batch, spec)
        for name, fn in runs.items():
            fn()  # warm-up: tinygrad compiles its kernels per shape
            timing[name][nb] = wall(fn)
            print(f"batch {nb:4d} {name:18s} {timing[name][nb]:.4f} s", flush=True)
    stream = streaming_pipeline(args.scene_npy)
    ok = ok and stream["events_match"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "device": dev,
        "gpu": gpu_name(),
        "checks": {k: {"error": e, "tolerance": t, "ok": e <= t} for k, (e, t) in checks.items()},
        "recording": "4 channels x 10 s at 16 kHz",
        "frontend_wall_s": {k: {str(nb): v for nb, v in d.items()} for k, d in timing.items()},
        "frontend_x_real_time": {k: {str(nb): nb * 10.0 / v for nb, v in d.items()} for k, d in timing.items()},
        "streaming_pipeline": stream,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [
        "# tinygrad DSP backend on a GPU",
        "",
        f"`benchmarks/gpu_check.py` on {result['machine']}, {result['gpu']}, tinygrad device {dev}.",
        "",
        "| kernel | error | tolerance | ok |",
        "|---|---:|---:|---|",
        *[f"| {k} | {e:.2e} | {t:.0e} | {'yes' if e <= t else 'NO'} |" for k, (e, t) in checks.items()],
        "",
        "Front end (STFT + log-mel, `logmel_batch`) of a batch of 4-channel 10 s recordings, wall time (median of",
        "5 after a warm-up call), and x real time (audio seconds per wall second). `tinygrad_fused`: the",
        "backend's `logmel_batch` (audio up once, log-mel back); `tinygrad_unfused`: its `stft` then",
        "`logmel_from_spectra` per recording (spectra cross to the host); `native_cpu`: the native",
        "backend on one core of the same machine.",
        "",
        "| backend | " + " | ".join(f"batch {nb}" for nb in batches) + " |",
        "|---|" + "---:|" * len(batches),
        *[
            f"| {k} | " + " | ".join(f"{d[nb]:.4f} s ({nb * 10.0 / d[nb]:.0f}x)" for nb in batches) + " |"
            for k, d in timing.items()
        ],
        "",
        f"Streaming pipeline (bundled scene, {stream['audio_s']:.1f} s in 100 ms blocks, model runtime "
        f"{stream['runtime']}, one thread): the events with the tinygrad backend "
        f"{'equal' if stream['events_match'] else 'DIFFER FROM'} the native backend's ({stream['events']} "
        "event phases: label, onset, offset; direction within 2 deg). Cost per audio second, median of 3 runs "
        "after a warm-up run:",
        "",
        "| DSP backend | wall ms per audio s | process CPU ms per audio s | x real time (wall) |",
        "|---|---:|---:|---:|",
        *[
            f"| {b} | {r['wall_ms_per_s']:.2f} | {r['cpu_ms_per_s']:.2f} | {1000.0 / r['wall_ms_per_s']:.0f} |"
            for b, r in stream["backends"].items()
        ],
    ]
    with open(os.path.join(HERE, "results", "gpu_check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


def streaming_pipeline(scene_npy: str | None) -> dict[str, Any]:
    """The edge pipeline on the bundled scene with the native and the tinygrad DSP backends."""
    from importlib import resources

    from boards.profiles import load_array
    from edge.inference import Model
    from edge.messages import Block
    from edge.pipeline import EdgePipeline, PipelineConfig, run

    if scene_npy:
        audio = np.load(scene_npy).astype(np.float32)
    else:
        from edge.sources import read_audio

        audio = read_audio(str(resources.files("edge").joinpath("data", "sample_scene.flac")))
    blocks = [Block(np.ascontiguousarray(audio[:, i : i + 1600]), i / 16000, k, 16000)
              for k, i in enumerate(range(0, audio.shape[1], 1600))]  # fmt: skip
    model = Model(None, threads=1)
    array = load_array("respeaker-4mic-hat")
    dur = audio.shape[1] / 16000
    events: dict[str, list[Any]] = {}
    costs: dict[str, dict[str, float]] = {}
    for backend in ("native", "tinygrad"):
        def once(backend: str = backend) -> tuple[list[Any], float, float]:
            w, c = time.perf_counter(), time.process_time()
            evs = list(run(iter(blocks), EdgePipeline(model, array, PipelineConfig(dsp_backend=backend))))
            return evs, time.perf_counter() - w, time.process_time() - c

        evs, _, _ = once()  # warm-up: tinygrad compiles its kernels per shape
        runs = [once() for _ in range(3)]
        events[backend] = evs
        costs[backend] = {
            "wall_ms_per_s": 1000.0 * statistics.median(r[1] for r in runs) / dur,
            "cpu_ms_per_s": 1000.0 * statistics.median(r[2] for r in runs) / dur,
        }
        print(f"pipeline {backend:9s} {costs[backend]['wall_ms_per_s']:.2f} ms per audio s (wall)", flush=True)

    def key(e: Any) -> tuple[Any, ...]:
        return (e.phase, e.label, e.onset, e.offset)

    a, b = events["native"], events["tinygrad"]
    def near(x: Any, y: Any) -> bool:  # the dominant directions within 2 deg (or both without one)
        if not x.bearings or not y.bearings:
            return not x.bearings and not y.bearings
        return abs((x.bearings[0].azimuth - y.bearings[0].azimuth + 180.0) % 360.0 - 180.0) <= 2.0

    same = [key(x) for x in a] == [key(y) for y in b] and all(near(x, y) for x, y in zip(a, b, strict=False))
    print(f"pipeline events: {len(a)} native, {len(b)} tinygrad, {'equal' if same else 'DIFFERENT'}", flush=True)
    return {"audio_s": dur, "runtime": model.runtime_name, "events": len(a), "events_match": same, "backends": costs}


if __name__ == "__main__":
    sys.exit(main())
