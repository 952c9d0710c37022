"""`tympan bench`: what this device achieves, per DSP stage and per backend (x real time, CPU ms per
audio second), so an operator can see the headroom of a board before deploying.

Audio: the bundled 4-channel sample scene (its first `--seconds`), with channels repeated or dropped
to match the array of `--board`/`--array`. Timer: process CPU time, median of `--repeats`; the model
runtime runs on one thread. Stages:

    stft            causal STFT of all channels
    log-mel         log-mel of the channel mean from the STFT
    PHAT cross      per-frame PHAT cross-spectra of every mic pair in the DOA band
    SRP-PHAT        GCC + steered response over the direction grid + peak refinement, one estimate
                    per audio second (what `listen` spends per event direction)
    level           per-frame power (the level meter)
    DSP total       the sum of the above
    model           the int8 model's windows (one per 0.12 s), default runtime
    whole pipeline  `listen`'s pipeline end to end (SED + DOA + tracking), with that backend
    ... low latency the same with `listen --latency low` (the model every 40 ms), on the backend `listen`
                    picks (if benchmarked, else the first one)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.dsp.dcblock import DEFAULT_DC_BLOCK_HZ, dc_block_pole, dc_block_state
from edge.dsp.frontend import DEFAULT_FRONTEND, SAMPLE_RATE
from edge.errors import InputError

DEFAULT_SECONDS = 2.0
DEFAULT_REPEATS = 5


def host_cpu() -> str:
    """The CPU in a few words, for benchmark headers: its model name and the int8 dot-product
    instructions it has (they decide how fast, and on x86-64 how exactly, int8 models run), e.g.
    "Intel(R) Xeon(R) Processor; int8 dot products: avx512_vnni, avx_vnni, amx_int8"."""
    name, flags = "", set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "hardware", "cpu model") and not name:
                    name = value.strip()
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    dot = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm") if f in flags]
    if not flags:
        return name
    return f"{name}; int8 dot products: {', '.join(dot) if dot else 'none'}"


@dataclass(frozen=True)
class BenchRow:
    stage: str
    backend: str
    ms_per_audio_s: float
    x_real_time: float


def add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="DSP and pipeline speed on this device, per stage and per backend")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--board", metavar="NAME", help="board or array profile (default respeaker-4mic-hat)")
    g.add_argument("--array", metavar="FILE", help="array JSON file")
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated DSP backends (numpy, native, tinygrad; default: numpy and native; "
        "'all' adds tinygrad, whose first run compiles kernels)",
    )
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="audio seconds per run (default 2)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="median of this many runs (default 5)")
    p.add_argument("--no-model", action="store_true", help="DSP stages only (no model, no whole pipeline)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    p.set_defaults(func=cmd_bench)


def median_cpu(fn: Callable[[], object], repeats: int) -> float:
    """Median process CPU seconds of `fn` over `repeats` runs (one untimed warm-up run first)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def _audio(n_mics: int, seconds: float) -> npt.NDArray[np.float32]:
    from edge.sources import read_audio

    scene = str(resources.files("edge").joinpath("data", "sample_scene.flac"))
    x = read_audio(scene)
    n = min(x.shape[1], round(seconds * SAMPLE_RATE))
    x = x[:, :n]
    reps = -(-n_mics // x.shape[0])
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:n_mics], dtype=np.float32)


def _dc_block_run(kernel: Callable[..., object], x: npt.NDArray[np.float32], pole: float) -> object:
    """One DC-blocker pass over x from a fresh state (as a stream starts)."""
    return kernel(x, pole, dc_block_state(x[:, 0]))


def _choose_backends(spec: str | None) -> list[str]:
    from edge.dsp import backends

    have = backends.backends()
    if spec is None:
        return [b for b in ("numpy", "native") if b in have]
    wanted = [b for b in backends.KNOWN_BACKENDS if b in have] if spec == "all" else spec.split(",")
    for b in wanted:
        if b not in backends.KNOWN_BACKENDS:
            raise InputError(f"--backends: unknown DSP backend {b!r}; known: {', '.join(backends.KNOWN_BACKENDS)}")
        if b not in have:
            raise InputError(f"--backends: {b!r} is not available here: {backends.unavailable().get(b, '?')}")
    return wanted


def run_bench(
    array_name: str | None,
    array_file: str | None,
    backend_spec: str | None,
    seconds: float,
    repeats: int,
    with_model: bool,
) -> dict[str, Any]:
    from boards.profiles import kind_of, load_board, resolve
    from edge.dsp import backends
    from edge.dsp.level import parseval_weights
    from edge.localise import Localiser, LocaliserConfig

    if not 0.5 <= seconds <= 10.0:
        raise InputError(f"--seconds {seconds}: must be in [0.5, 10] (the bundled scene is 10 s)")
    if not 1 <= repeats <= 100:
        raise InputError(f"--repeats {repeats}: must be in [1, 100]")
    if array_name is None and array_file is None:
        array_name = "respeaker-4mic-hat"
    array = resolve(array_name, array_file)
    preference = load_board(array_name).dsp_backend if array_name and kind_of(array_name) == "board" else None
    chosen = _choose_backends(backend_spec)
    x = _audio(array.n_mics, seconds)
    dur = x.shape[1] / SAMPLE_RATE
    spec = DEFAULT_FRONTEND
    rows: list[BenchRow] = []

    def add(stage: str, backend: str, cpu_s: float) -> None:
        rows.append(BenchRow(stage, backend, 1000.0 * cpu_s / dur, dur / cpu_s if cpu_s > 0 else float("inf")))

    weights = parseval_weights(spec)
    for b in chosen:
        stft = backends.get("stft", b)
        dc_block = backends.get("dc_block", b)
        dc_pole = dc_block_pole(DEFAULT_DC_BLOCK_HZ, spec.sample_rate)
        logmel = backends.get("logmel_from_spectra", b)
        power = backends.get("frame_power", b)
        loc = Localiser(array, spec, LocaliserConfig(backend=b))
        spectra = stft(x, spec)
        cross_sum = loc.stream_cross(spectra)[0].sum(axis=0)
        parts = [
            median_cpu(partial(_dc_block_run, dc_block, x, dc_pole), repeats),
            median_cpu(partial(stft, x, spec), repeats),
            median_cpu(partial(logmel, spectra, spec), repeats),
            median_cpu(partial(loc.stream_cross, spectra), repeats),  # onset weights + PHAT cross
            median_cpu(partial(loc.bearings, cross_sum), repeats) * dur,  # one estimate per audio second
            median_cpu(partial(power, spectra, weights), repeats),
        ]
        names = ["DC blocker", f"stft ({array.n_mics} ch)", "log-mel", f"PHAT cross ({len(loc.pairs)} pairs)"]
        names += ["SRP-PHAT", "level"]
        for name, t in zip(names, parts, strict=True):
            add(name, b, t)
        add("DSP total", b, sum(parts))
    if with_model:
        rows.extend(_model_rows(array, x, chosen, repeats, dur, backends.resolve(None, preference)))
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {host_cpu()}",
        "native_simd": _native_simd(),
        "audio_s": dur,
        "channels": array.n_mics,
        "array": array.name,
        "repeats": repeats,
        "timer": "process CPU time, median of repeats; model runtime on one thread",
        "selected_backend": backends.resolve(None, preference),
        "board_preference": preference,
        "rows": [asdict(r) for r in rows],
    }


def _native_simd() -> str | None:
    from edge.dsp import native

    try:
        return native.library().variant
    except native.NativeUnavailable:
        return None


def _model_rows(
    array: Any, x: npt.NDArray[np.float32], chosen: list[str], repeats: int, dur: float, selected: str
) -> list[BenchRow]:
    from edge.inference import Model
    from edge.messages import Block
    from edge.pipeline import EdgePipeline, PipelineConfig, latency_config

    model = Model(None, threads=1)
    rows = []
    window = np.full((model.window_frames, model.frontend.n_mels), -5.0, np.float32)
    n_windows = max(1, round(dur / (12 * model.frontend.hop_s)))
    ws = model.stream_window_for(PipelineConfig().model_hop_frames)
    if ws is None:
        t = median_cpu(lambda: [model.predict(window) for _ in range(n_windows)], repeats)
        name = f"model ({model.runtime_name})"
    else:  # what the pipeline runs: the streaming model's shorter window
        t = median_cpu(lambda: [model.predict_stream(window[-ws:]) for _ in range(n_windows)], repeats)
        name = f"model ({model.runtime_name}, {ws}-frame stream window)"
    rows.append(BenchRow(name, "-", 1000.0 * t / dur, dur / t if t > 0 else float("inf")))
    block = 1600
    blocks = [
        Block(samples=x[:, i : i + block], t=i / SAMPLE_RATE, seq=k, sample_rate=SAMPLE_RATE)
        for k, i in enumerate(range(0, x.shape[1], block))
    ]
    runs = [("whole pipeline", b, PipelineConfig(dsp_backend=b)) for b in chosen]
    b_low = selected if selected in chosen else chosen[0]
    low = latency_config("low", model.output_hop_frames, PipelineConfig(dsp_backend=b_low))
    runs.append(("... low latency", b_low, low))
    for stage, b, cfg in runs:

        def whole(cfg: PipelineConfig = cfg) -> None:
            p = EdgePipeline(model, array, cfg)
            for blk in blocks:
                p.process(blk)
            p.flush()

        t = median_cpu(whole, max(1, repeats // 2))
        rows.append(BenchRow(stage, b, 1000.0 * t / dur, dur / t if t > 0 else float("inf")))
    return rows


def format_table(result: dict[str, Any]) -> str:
    lines = [
        f"tympan bench: {result['machine']}; native SIMD: {result['native_simd'] or 'not built'}; "
        f"backend that `listen` picks: {result['selected_backend']}",
        f"{result['channels']} ch ({result['array']}), {result['audio_s']:.1f} s of audio; {result['timer']}",
        "",
        f"{'stage':<26} {'backend':<9} {'ms / audio s':>13} {'x real time':>12}",
    ]
    for r in result["rows"]:
        lines.append(f"{r['stage']:<26} {r['backend']:<9} {r['ms_per_audio_s']:>13.3f} {r['x_real_time']:>12.0f}")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    result = run_bench(args.board, args.array, args.backends, args.seconds, args.repeats, not args.no_model)
    if args.json:
        print(json.dumps(result))
    else:
        print(format_table(result))
    sys.stdout.flush()
    return 0
