#!/usr/bin/env python3
"""DSP kernels side by side in one run: Tympan's backends (numpy reference, native C, tinygrad on the
CPU) against librosa, torch and pyroomacoustics, plus the whole edge pipeline per audio second.

Tasks (all single-threaded; CPU time is process time, median of --repeats):

    logmel4    log-mel of each channel of 4-channel audio (the bundled 10 s scene): STFT (25 ms Hann,
               10 ms hop, 512 FFT, magnitude) -> 64 HTK mel bands 125-7500 Hz -> log(x + 0.001); Tympan's
               backends run it as their `logmel_batch` of the 4 channels as mono recordings
    frontend   Tympan's own front end: STFT of 4 channels + log-mel of their mean (what `listen` runs)
    srp        one SRP-PHAT direction estimate from 0.5 s of a 4-mic ReSpeaker recording (50 STFT frames
               given) on the same grid (2 deg azimuth x 10 deg elevation, 300-6000 Hz)
    pipeline   the whole edge pipeline (SED + DOA + tracking), per backend and model runtime, and the
               part of it that is not the model; the configurations run round-robin (each once per
               round, max(5, --repeats) rounds) so that the host's drift during the run hits them alike

Instruction counts (valgrind callgrind, only the measured call instrumented) stand beside the times
because this machine is shared and noisy. The torch peer is torch.stft + a mel matrix product
(torchaudio 2.13.0, matching torch 2.13.0, has no wheel), with Tympan's mel matrix.

    .venv/bin/python benchmarks/bench_dsp.py [--repeats 7] [--no-callgrind] [--only-pipeline] [--only-task T]

Writes benchmarks/results/dsp.md and dsp.json. `--only-pipeline` measures again only the DSP stages and
the whole pipeline (and their targets), keeping the kernel rows of the last full run in dsp.json;
`--only-task logmel4` (repeatable) measures again only that task's kernel rows (and the targets on them).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib import resources  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from edge.bench import host_cpu, median_cpu  # noqa: E402  (median_cpu: a warm-up run, then the median of process CPU time)

HERE = os.path.dirname(os.path.abspath(__file__))
FS = 16000
SRP_AZ_DEG = 60.0  # the simulated source of the srp task
TARGETS = [
    ("log-mel (4 ch) >= 3x faster than librosa", "logmel4", "native", "librosa", 3.0),
    ("log-mel (4 ch) >= 1.5x faster than the numpy reference", "logmel4", "native", "numpy", 1.5),
    ("SRP-PHAT >= 10x faster than pyroomacoustics", "srp", "native", "pyroomacoustics", 10.0),
]

Workload = Callable[[], Any]


# --- inputs ---------------------------------------------------------------------------------------
def scene_audio() -> np.ndarray:
    from edge.sources import read_audio

    return read_audio(str(resources.files("edge").joinpath("data", "sample_scene.flac")))


def plane_wave_recording(az_deg: float, seconds: float = 0.5) -> np.ndarray:
    """White noise from azimuth `az_deg` at the ReSpeaker 4-mic array (fractional delays by FFT)."""
    from boards.profiles import SPEED_OF_SOUND_M_S, load_array

    mics = load_array("respeaker-4mic-hat").mics
    n = int(seconds * FS) + 400
    sig = np.random.default_rng(0).standard_normal(n)
    u = np.array([np.cos(np.radians(az_deg)), np.sin(np.radians(az_deg)), 0.0])
    delays = -(mics @ u) / SPEED_OF_SOUND_M_S  # arrival time relative to the centre
    f = np.fft.rfftfreq(n, 1.0 / FS)
    spec = np.fft.rfft(sig)
    x = np.stack([np.fft.irfft(spec * np.exp(-2j * np.pi * f * d), n) for d in delays])
    return (0.1 * x / np.max(np.abs(x))).astype(np.float32)


# --- workloads: (task, impl) -> a zero-argument callable, set up and warmed ------------------------
def make_workload(task: str, impl: str, seconds: float | None = None) -> tuple[Workload, float, Any]:
    """Returns (run, audio seconds per run, output for the agreement check)."""
    from edge.dsp import backends, frontend

    spec = frontend.DEFAULT_FRONTEND
    if task in ("logmel4", "frontend"):
        x = scene_audio()
        if seconds is not None:
            x = np.ascontiguousarray(x[:, : int(seconds * FS)])
        dur = x.shape[1] / FS
        if impl in ("numpy", "native", "tinygrad"):
            stft = backends.get("stft", impl)
            logmel = backends.get("logmel_from_spectra", impl)
            if task == "logmel4":
                # the channels as a batch of mono recordings, through the backend's batch front end (the
                # reference: STFT then log-mel of each; native: one fused call that never writes spectra)
                batch = backends.get("logmel_batch", impl)
                mono = x[:, None, :]

                def run() -> Any:
                    return list(batch(mono, spec))
            else:

                def run() -> Any:
                    return logmel(stft(x, spec), spec)

        elif impl == "librosa" and task == "logmel4":
            import librosa

            # a peer centres a short window inside n_fft; Tympan's frames start at the window's start, so
            # give the peers the 400-sample Hann zero-padded to 512 and pad the signal's end to match
            win512 = np.zeros(spec.n_fft, np.float32)
            win512[: spec.win] = frontend.periodic_hann(spec.win)
            xp = np.pad(x, ((0, 0), (0, spec.n_fft - spec.win)))

            def run() -> Any:
                m = librosa.feature.melspectrogram(
                    y=xp, sr=FS, n_fft=spec.n_fft, hop_length=spec.hop, win_length=spec.n_fft, window=win512,
                    center=False, power=1.0, n_mels=spec.n_mels, fmin=spec.fmin_hz, fmax=spec.fmax_hz,
                    htk=True, norm=None,
                )  # fmt: skip
                return list(np.log(m + spec.log_offset).transpose(0, 2, 1))

        elif impl == "torch" and task == "logmel4":
            import torch

            torch.set_num_threads(1)
            xt = torch.from_numpy(np.pad(x, ((0, 0), (0, spec.n_fft - spec.win))))
            win = torch.zeros(spec.n_fft)
            win[: spec.win] = torch.from_numpy(frontend.periodic_hann(spec.win))
            mel = torch.from_numpy(frontend.mel_matrix(spec))

            def run() -> Any:
                with torch.no_grad():
                    s = torch.stft(xt, spec.n_fft, spec.hop, spec.n_fft, win, center=False, return_complex=True)
                    out = torch.log(s.abs().transpose(1, 2) @ mel + spec.log_offset)
                return list(out.numpy())

        else:
            raise ValueError(f"no {impl} workload for {task}")
    elif task == "srp":
        from boards.profiles import load_array
        from edge.localise import Localiser, LocaliserConfig

        array = load_array("respeaker-4mic-hat")
        x = plane_wave_recording(SRP_AZ_DEG)
        s = frontend.stft(x, spec)[:, :, :50]
        dur = 0.5
        if impl in ("numpy", "native", "tinygrad"):
            loc = Localiser(array, spec, LocaliserConfig(backend=impl))

            def run() -> Any:
                b = loc.bearings(loc.frame_cross(s).sum(axis=0))
                return b[0].azimuth if b else None

        elif impl == "pyroomacoustics":
            import pyroomacoustics as pra

            az = np.radians(np.arange(-178.0, 180.0 + 1e-9, 2.0))
            mics = (array.mics - array.mics.mean(axis=0)).T
            # pyroomacoustics treats a planar array as 2-D and searches azimuth only (180 directions);
            # Tympan searches 120 azimuths x 5 elevations and refines the peak to 0.1 degree
            doa = pra.doa.algorithms["SRP"](mics[:2], FS, spec.n_fft, c=343.0, num_src=1, azimuth=az)
            band = [300.0, 6000.0]

            def run() -> Any:
                doa.locate_sources(s, num_src=1, freq_range=band)
                return float(np.degrees(doa.azimuth_recon[0]))

        else:
            raise ValueError(f"no {impl} workload for {task}")
    else:
        raise ValueError(f"unknown task {task}")
    out = run()  # warm-up (tinygrad compiles here; caches fill)
    return run, dur, out


# --- callgrind ------------------------------------------------------------------------------------
CG_HELPER = r"""
#include <valgrind/callgrind.h>
void cg_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void cg_stop(void) { CALLGRIND_DUMP_STATS_AT("measured"); CALLGRIND_STOP_INSTRUMENTATION; }
"""


def callgrind_worker(task: str, impl: str, helper: str) -> None:
    import ctypes

    run, _, _ = make_workload(task, impl, seconds=1.0)
    lib = ctypes.CDLL(helper)
    lib.cg_start()
    run()
    lib.cg_stop()


def callgrind_count(task: str, impl: str, workdir: str, timeout_s: float) -> tuple[float | None, str]:
    """Instructions of one run of the workload (1 s of audio for log-mel), or None and why."""
    valgrind = shutil.which("valgrind")
    cc = shutil.which("cc") or shutil.which("gcc")
    if valgrind is None or cc is None or not os.path.exists("/usr/include/valgrind/callgrind.h"):
        return None, "valgrind (with its headers) or a C compiler missing"
    helper = os.path.join(workdir, "cg_helper.so")
    if not os.path.exists(helper):
        src = os.path.join(workdir, "cg_helper.c")
        with open(src, "w") as f:
            f.write(CG_HELPER)
        subprocess.run([cc, "-O1", "-shared", "-fPIC", src, "-o", helper], check=True)
    out = os.path.join(workdir, f"cg.{task}.{impl}")
    cmd = [
        valgrind, "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
        sys.executable, os.path.abspath(__file__), "--callgrind-worker", task, impl, helper,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None, f"not counted: the run did not finish under valgrind in {timeout_s:.0f} s"
    for name in sorted(os.listdir(workdir)):
        if not name.startswith(os.path.basename(out)):
            continue
        text = open(os.path.join(workdir, name)).read()
        if "measured" in text:
            m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            if m:
                return float(m.group(1)), ""
    last = proc.stderr.strip().splitlines()[-1:] or [""]
    return None, f"no callgrind dump (exit {proc.returncode}: {last[0][:80]})"


# --- the pipeline ---------------------------------------------------------------------------------
def pipeline_rows(repeats: int) -> list[dict[str, Any]]:
    from boards.profiles import load_array
    from edge.inference import RUNTIMES, Model
    from edge.messages import Block
    from edge.pipeline import EdgePipeline, PipelineConfig, run
    from edge.sources import FileSource

    scene = str(resources.files("edge").joinpath("data", "sample_scene.flac"))
    array = load_array("respeaker-4mic-hat")
    audio = scene_audio()
    dur = audio.shape[1] / FS
    # the same audio as a microphone source delivers it: 100 ms blocks already in memory (no file decoding)
    mic_blocks = [Block(np.ascontiguousarray(audio[:, i : i + 1600]), i / FS, k, FS)
                  for k, i in enumerate(range(0, audio.shape[1], 1600))]  # fmt: skip
    models: dict[str, Any] = {}
    for rt in RUNTIMES:
        try:
            models[rt] = Model(None, runtime=rt, threads=1)
        except Exception as e:  # a runtime that is not installed is reported, not fatal
            print(f"skip {rt}: {e}")
    spent = [0.0]

    def timed(_p: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
        def call(window: np.ndarray) -> np.ndarray:
            t = time.process_time()
            out = _p(window)
            spent[0] += time.process_time() - t
            return out

        return call

    for model in models.values():
        # the model's share: the full window's calls and the streaming model's (what LiteRT runs)
        model.predict = timed(model.predict)  # type: ignore[method-assign]
        model.predict_stream = timed(model.predict_stream)  # type: ignore[method-assign]
    configs = [(rt, backend, source) for rt in models
               for backend, source in (("numpy", "file"), ("native", "file"), ("native", "memory"))]  # fmt: skip
    totals: dict[tuple[str, str, str], list[float]] = {c: [] for c in configs}
    model_s: dict[tuple[str, str, str], list[float]] = {c: [] for c in configs}
    # round-robin: every configuration once per round, so the host's drift during the run hits all rows alike
    for _ in range(max(5, repeats)):
        for rt, backend, source in configs:
            spent[0] = 0.0
            t = time.process_time()
            blocks = FileSource(scene, block_size=1600, expected_channels=4) if source == "file" else mic_blocks
            list(run(iter(blocks), EdgePipeline(models[rt], array, PipelineConfig(dsp_backend=backend))))
            totals[rt, backend, source].append(time.process_time() - t)
            model_s[rt, backend, source].append(spent[0])
    rows = []
    for rt, backend, source in configs:
        total, mod = statistics.median(totals[rt, backend, source]), statistics.median(model_s[rt, backend, source])
        rows.append({"runtime": rt, "backend": backend, "source": source, "total_ms_per_s": 1000 * total / dur,
                     "model_ms_per_s": 1000 * mod / dur, "rest_ms_per_s": 1000 * (total - mod) / dur,
                     "x_real_time": dur / total, "rest_x_real_time": dur / max(total - mod, 1e-9),
                     "runs": len(totals[rt, backend, source])})  # fmt: skip
    return rows


# --- main -----------------------------------------------------------------------------------------
IMPLS = {
    "logmel4": ["numpy", "native", "tinygrad", "librosa", "torch"],
    "frontend": ["numpy", "native", "tinygrad"],
    "srp": ["numpy", "native", "tinygrad", "pyroomacoustics"],
}
# librosa is left out: importing it (numba, LLVM) under valgrind did not finish in 300 s here
CALLGRIND_IMPLS = {
    "logmel4": ["numpy", "native", "torch"],
    "srp": ["numpy", "native", "pyroomacoustics"],
}


def agreement(task: str, out: Any, ref: Any) -> str:
    if task == "srp":
        return f"azimuth {out:.1f} deg (true {SRP_AZ_DEG:.0f})" if out is not None else "no estimate"
    a = np.concatenate([np.asarray(o) for o in out]) if isinstance(out, list) else np.asarray(out)
    b = np.concatenate([np.asarray(o) for o in ref]) if isinstance(ref, list) else np.asarray(ref)
    return f"max |diff| {float(np.max(np.abs(a - b))):.1e} vs numpy"


def measure_rows(tasks: list[str], repeats: int) -> list[dict[str, Any]]:
    """The kernel rows of `tasks`: every implementation available here, timed, checked against numpy."""
    from edge.dsp import backends

    have = backends.backends()
    rows: list[dict[str, Any]] = []
    for task in tasks:
        ref_out = None
        for impl in IMPLS[task]:
            if impl in backends.KNOWN_BACKENDS and impl not in have:
                print(f"skip {task}/{impl}: {backends.unavailable().get(impl)}")
                continue
            try:
                fn, dur, out = make_workload(task, impl)
            except ImportError as e:
                print(f"skip {task}/{impl}: {e}")
                continue
            if impl == "numpy":
                ref_out = out
            t = median_cpu(fn, repeats)
            check = agreement(task, out, ref_out) if ref_out is not None else ""
            row = {"task": task, "impl": impl, "cpu_ms": 1000 * t, "audio_s": dur,
                   "ms_per_audio_s": 1000 * t / dur, "x_real_time": dur / t, "check": check}  # fmt: skip
            rows.append(row)
            print(f"{task:9s} {impl:16s} {row['cpu_ms']:9.2f} ms  x{row['x_real_time']:.0f} real time  {row['check']}")
    return rows


def count_instructions(rows: list[dict[str, Any]], tasks: list[str]) -> None:
    """Callgrind instruction counts into the rows of `tasks` (the implementations CALLGRIND_IMPLS names)."""
    with tempfile.TemporaryDirectory() as wd:
        for task, impls in CALLGRIND_IMPLS.items():
            if task not in tasks:
                continue
            for impl in impls:
                n, why = callgrind_count(task, impl, wd, timeout_s=300)
                for r in rows:
                    if r["task"] == task and r["impl"] == impl:
                        r["instructions_per_run_1s" if task == "logmel4" else "instructions_per_run"] = n
                        r["callgrind_note"] = why
                print(f"callgrind {task}/{impl}: {n if n is not None else why}")


def kernel_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets on the kernel rows (TARGETS)."""

    def t_of(task: str, impl: str) -> float | None:
        return next((r["cpu_ms"] for r in rows if r["task"] == task and r["impl"] == impl), None)

    def i_of(task: str, impl: str) -> float | None:
        for r in rows:
            if r["task"] == task and r["impl"] == impl:
                return r.get("instructions_per_run_1s", r.get("instructions_per_run"))
        return None

    targets = []
    for name, task, ours, peer, want in TARGETS:
        a, b = t_of(task, ours), t_of(task, peer)
        ia, ib = i_of(task, ours), i_of(task, peer)
        speed = b / a if a and b else None
        ispeed = ib / ia if ia and ib else None
        targets.append({"target": name, "speedup_cpu_time": speed, "speedup_instructions": ispeed, "want": want,
                        "pass": speed is not None and speed >= want})  # fmt: skip
    return targets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--only-pipeline", action="store_true", help="only the DSP stages and the whole pipeline")
    ap.add_argument(
        "--only-task", action="append", choices=list(IMPLS), help="only this kernel task's rows (repeatable)"
    )
    ap.add_argument("--callgrind-worker", nargs=3, metavar=("TASK", "IMPL", "HELPER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.callgrind_worker:
        callgrind_worker(*args.callgrind_worker)
        return
    if args.only_pipeline:
        update_pipeline(args.repeats)
        return
    if args.only_task:
        update_tasks(args.only_task, args.repeats, callgrind=not args.no_callgrind)
        return
    from edge.dsp import native

    rows = measure_rows(list(IMPLS), args.repeats)
    if not args.no_callgrind:
        count_instructions(rows, list(IMPLS))
    pipe = pipeline_rows(args.repeats)
    from edge.bench import run_bench

    # the DSP stages alone, as `tympan bench` measures them (10 s, one SRP estimate per audio second)
    dsp_only = run_bench(None, None, "numpy,native", 10.0, args.repeats, with_model=False)["rows"]
    targets = kernel_targets(rows) + pipeline_targets(pipe, dsp_only)
    try:
        simd = native.library().variant
    except native.NativeUnavailable:
        simd = "not built"
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), {host_cpu()}",
        "python": platform.python_version(),
        "native_simd": simd,
        "timer": "process CPU time, median of repeats, one thread",
        "repeats": args.repeats,
        "rows": rows,
        "pipeline": pipe,
        "dsp_stages": dsp_only,
        "targets": targets,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    _write(os.path.join(HERE, "results", "dsp.json"), result)


def update_tasks(tasks: list[str], repeats: int, callgrind: bool) -> None:
    """--only-task: the rows of `tasks` measured again (instruction counts too unless --no-callgrind; else
    the last ones are kept), the other rows, the pipeline and the DSP stages from dsp.json."""
    path = os.path.join(HERE, "results", "dsp.json")
    with open(path) as f:
        res = json.load(f)
    new = measure_rows(tasks, repeats)
    if callgrind:
        count_instructions(new, tasks)
    else:
        for r in new:
            old = next((o for o in res["rows"] if o["task"] == r["task"] and o["impl"] == r["impl"]), {})
            for key in ("instructions_per_run_1s", "instructions_per_run", "callgrind_note"):
                if key in old:
                    r[key] = old[key]
    order = list(IMPLS)
    rows = [r for r in res["rows"] if r["task"] not in tasks] + new
    res["rows"] = sorted(rows, key=lambda r: order.index(r["task"]))  # tasks in the order of IMPLS
    kernel_names = {name for name, *_ in TARGETS}
    res["targets"] = kernel_targets(res["rows"]) + [t for t in res["targets"] if t["target"] not in kernel_names]
    again = f"the {', '.join(tasks)} rows measured again (--only-task)"
    res["note"] = f"{res['note']}; then {again}" if res.get("note") else f"{again}; the other rows from an earlier run"
    _write(path, res)


def _write(path: str, res: dict[str, Any]) -> None:
    """dsp.json and dsp.md from the results, and the markdown to stdout."""
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    md = render(res)
    with open(os.path.join(HERE, "results", "dsp.md"), "w") as f:
        f.write(md)
    print(md)


def pipeline_targets(pipe: list[dict[str, Any]], dsp_only: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets on the whole pipeline and the DSP stages (best native row)."""
    targets = []
    # from the FLAC file, as `tympan listen --input` reads it (decoding included): the stricter measure
    file_rows = [p for p in pipe if p["backend"] == "native" and p.get("source", "file") == "file"]
    best = max(file_rows, key=lambda p: p["x_real_time"], default=None)
    if best is not None:
        targets.append({"target": "whole pipeline >= 200x real time (one core)",
                        "speedup_cpu_time": best["x_real_time"], "speedup_instructions": None, "want": 200.0,
                        "pass": best["x_real_time"] >= 200.0})  # fmt: skip
        targets.append({"target": "pipeline without the model (DSP + SED + DOA + tracking) >= 200x real time",
                        "speedup_cpu_time": best["rest_x_real_time"], "speedup_instructions": None, "want": 200.0,
                        "pass": best["rest_x_real_time"] >= 200.0})  # fmt: skip
    dsp_native = next((r for r in dsp_only if r["stage"] == "DSP total" and r["backend"] == "native"), None)
    if dsp_native is not None:
        targets.append({"target": "DSP stages alone (DC blocker, STFT, log-mel, PHAT, SRP, level) >= 200x real time",
                        "speedup_cpu_time": dsp_native["x_real_time"], "speedup_instructions": None, "want": 200.0,
                        "pass": dsp_native["x_real_time"] >= 200.0})  # fmt: skip
    return targets


def update_pipeline(repeats: int) -> None:
    """--only-pipeline: the DSP stages and the whole pipeline again, the kernel rows from dsp.json."""
    from edge.bench import run_bench

    path = os.path.join(HERE, "results", "dsp.json")
    with open(path) as f:
        res = json.load(f)
    res["pipeline"] = pipeline_rows(repeats)
    res["dsp_stages"] = run_bench(None, None, "numpy,native", 10.0, repeats, with_model=False)["rows"]
    kernel_targets = {name for name, *_ in TARGETS}
    res["targets"] = [t for t in res["targets"] if t["target"] in kernel_targets]
    res["targets"] += pipeline_targets(res["pipeline"], res["dsp_stages"])
    res["note"] = "DSP stages and whole pipeline measured again (--only-pipeline); kernel rows from the last full run"
    _write(path, res)


def render(res: dict[str, Any]) -> str:
    def fmt_i(v: Any) -> str:
        return f"{v / 1e6:.1f} M" if isinstance(v, float) else "-"

    lines = [
        "# DSP kernels: Tympan's backends and peers, side by side",
        "",
        f"`benchmarks/bench_dsp.py`, {res['machine']}; native build: {res['native_simd']}; {res['timer']} "
        f"({res['repeats']}). The machine is shared and noisy: the instruction counts (callgrind, the measured "
        "call only, 1 s of audio for log-mel) are the steadier comparison."
        + (f" {res['note']}." if res.get("note") else ""),
        "",
        "## Targets",
        "",
        "| target | measured (CPU time) | instructions | result |",
        "|---|---:|---:|---|",
    ]
    for t in res["targets"]:
        s = f"{t['speedup_cpu_time']:.1f}x" if t["speedup_cpu_time"] else "-"
        i = f"{t['speedup_instructions']:.1f}x" if t["speedup_instructions"] else "-"
        lines.append(f"| {t['target']} | {s} | {i} | {'PASS' if t['pass'] else 'FAIL'} |")
    lines += [
        "",
        "## Kernels",
        "",
        "logmel4: log-mel of each of 4 channels, 10 s; frontend: Tympan's STFT of 4 channels + log-mel of their "
        "mean, 10 s; srp: one direction estimate from 0.5 s (50 frames given), 2 x 10 degree grid.",
        "",
        "| task | implementation | CPU ms per run | ms per audio s | x real time | instructions per run | check |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        inst = r.get("instructions_per_run_1s", r.get("instructions_per_run"))
        note = f" ({r['callgrind_note']})" if r.get("callgrind_note") else ""
        lines.append(
            f"| {r['task']} | {r['impl']} | {r['cpu_ms']:.2f} | {r['ms_per_audio_s']:.2f} | {r['x_real_time']:.0f} | "
            f"{fmt_i(inst)}{note} | {r['check']} |"
        )
    lines += [
        "",
        "## DSP stages alone (`tympan bench` on 10 s; SRP-PHAT: one estimate per audio second)",
        "",
        "| stage | backend | CPU ms per audio s | x real time |",
        "|---|---|---:|---:|",
    ]
    for r in res["dsp_stages"]:
        lines.append(f"| {r['stage']} | {r['backend']} | {r['ms_per_audio_s']:.3f} | {r['x_real_time']:.0f} |")
    lines += [
        "",
        "## Whole edge pipeline (bundled 10 s 4-channel scene, 0.1 s blocks, SED + DOA + tracking)",
        "",
        "Source: the FLAC file through `FileSource` (decoding included; the targets use these rows), or the "
        "same audio as 100 ms blocks already in memory, as a microphone source delivers them. The rows run "
        f"round-robin, one run of each per round, {res['pipeline'][0].get('runs', '?')} rounds; median per row.",
        "",
        "| model runtime | DSP backend | source | CPU ms per audio s | of which model | "
        "rest (DSP, SED, DOA, tracking) | x real time | rest x real time |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for p in res["pipeline"]:
        lines.append(
            f"| {p['runtime']} | {p['backend']} | {p.get('source', 'file')} | {p['total_ms_per_s']:.1f} | "
            f"{p['model_ms_per_s']:.1f} | {p['rest_ms_per_s']:.1f} | {p['x_real_time']:.0f} | "
            f"{p['rest_x_real_time']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
