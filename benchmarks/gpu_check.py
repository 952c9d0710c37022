#!/usr/bin/env python3
"""GPU check of the tinygrad DSP backend: correctness against the numpy reference and batch speed.

Prepared for a session that has a GPU machine (none was available when the backend was written, so its
CUDA path is untested until this runs). Needs `pip install -e '.[gpu]'` (tinygrad) and a CUDA driver;
runs in well under a minute:

    TYMPAN_TINYGRAD_DEVICE=CUDA .venv/bin/python benchmarks/gpu_check.py [--batch 64]

1. Every tinygrad kernel on the device equals the numpy reference within the tolerances of
   tests/test_backends.py (random 4-channel audio, 1 s).
2. Batch work, where a GPU should win: the log-mel front end (STFT + log-mel) of `--batch` 4-channel
   10 s recordings stacked along the channel axis, on the device vs the native backend on one CPU
   core (wall time, median of 5, after a warm-up run that compiles the kernels).

Writes benchmarks/results/gpu_check.md and .json; exit status 1 if a kernel disagrees.
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64, help="recordings per batch (default 64)")
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

    batch = np.tile((rng.standard_normal((4, 160000)) * 0.1).astype(np.float32), (args.batch, 1))
    timing: dict[str, float] = {}

    def tg_frontend() -> None:
        spectra = tg["stft"](batch, spec)
        for b in range(args.batch):
            tg["logmel_from_spectra"](spectra[4 * b : 4 * b + 4], spec)

    tg_frontend()  # compile
    timing["tinygrad_" + dev] = wall(tg_frontend)
    if "native" in backends.backends():
        nat_stft, nat_lm = backends.get("stft", "native"), backends.get("logmel_from_spectra", "native")

        def native_frontend() -> None:
            spectra = nat_stft(batch, spec)
            for b in range(args.batch):
                nat_lm(spectra[4 * b : 4 * b + 4], spec)

        native_frontend()
        timing["native_cpu"] = wall(native_frontend)
    audio_s = args.batch * 10.0
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "device": dev,
        "checks": {k: {"error": e, "tolerance": t, "ok": e <= t} for k, (e, t) in checks.items()},
        "batch_recordings": args.batch,
        "batch_audio_s": audio_s,
        "frontend_wall_s": timing,
        "frontend_x_real_time": {k: audio_s / v for k, v in timing.items()},
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [
        "# tinygrad DSP backend on a GPU",
        "",
        f"`benchmarks/gpu_check.py` on {result['machine']}, tinygrad device {dev}.",
        "",
        "| kernel | error | tolerance | ok |",
        "|---|---:|---:|---|",
        *[f"| {k} | {e:.2e} | {t:.0e} | {'yes' if e <= t else 'NO'} |" for k, (e, t) in checks.items()],
        "",
        f"Front end (STFT + log-mel) of {args.batch} 4-channel 10 s recordings:",
        "",
        "| backend | wall s | x real time |",
        "|---|---:|---:|",
        *[f"| {k} | {v:.3f} | {audio_s / v:.0f} |" for k, v in timing.items()],
    ]
    with open(os.path.join(HERE, "results", "gpu_check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
