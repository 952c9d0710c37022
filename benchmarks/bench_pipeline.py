#!/usr/bin/env python3
"""Edge pipeline cost per audio second, per stage and per model runtime, on one thread.

Runs the bundled 4-channel sample scene (10 s) through each stage and through the whole pipeline with
each model runtime installed (LiteRT, ONNX Runtime), side by side in one run, repeating each
measurement and reporting the median. The whole pipeline is measured from the FLAC file (decoding
included) in 1 s blocks (as `tympan listen --input` reads a file) and in 100 ms blocks, and from 100 ms
audio blocks already in memory (as a microphone delivers them) with and without the tracker
(`PipelineConfig.tracking`). The events are the same whatever the block size (tests/test_pipeline.py).
Writes `benchmarks/results/pipeline.md` and `.json`.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 7]
"""

from __future__ import annotations

import os

# one thread for numpy's BLAS too (set before numpy loads): process CPU time would count its spinning
# worker threads otherwise (measured: the SED benchmark's pipeline 10.2 instead of 4-5 ms per audio s)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib import resources  # noqa: E402

import numpy as np  # noqa: E402

from boards.profiles import load_array  # noqa: E402
from edge.bench import host_cpu  # noqa: E402
from edge.bench import median_cpu as median_time  # a warm-up run, then the median of process CPU time  # noqa: E402
from edge.cli import FILE_BLOCK_MS, LIVE_BLOCK_MS  # noqa: E402
from edge.dsp.frontend import logmel_from_spectra, stft  # noqa: E402
from edge.inference import RUNTIMES, Model  # noqa: E402
from edge.localise import Localiser, active_frames  # noqa: E402
from edge.messages import Block  # noqa: E402
from edge.pipeline import EdgePipeline, PipelineConfig, run  # noqa: E402
from edge.sources import FileSource, read_audio  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    scene = str(resources.files("edge").joinpath("data", "sample_scene.flac"))
    array = load_array("respeaker-4mic-hat")
    x = read_audio(scene, expected_channels=array.n_mics)
    dur = x.shape[1] / 16000
    live, file_block = round(LIVE_BLOCK_MS * 16), round(FILE_BLOCK_MS * 16)  # samples at 16 kHz
    blocks = [Block(np.ascontiguousarray(x[:, i : i + live]), i / 16000, k, 16000)
              for k, i in enumerate(range(0, x.shape[1], live))]  # fmt: skip
    rows: list[dict[str, object]] = []

    def add(stage: str, runtime: str, seconds: float) -> None:
        rows.append(
            {
                "stage": stage,
                "runtime": runtime,
                "cpu_s_per_audio_s": seconds / dur,
                "x_real_time": dur / seconds if seconds > 0 else float("inf"),
            }
        )

    spectra = stft(x)
    add("stft (4 ch)", "numpy", median_time(lambda: stft(x), args.repeats))
    add("log-mel", "numpy", median_time(lambda: logmel_from_spectra(spectra), args.repeats))
    loc = Localiser(array)
    mask = active_frames(spectra)
    add("PHAT cross-spectra (6 pairs)", "numpy", median_time(lambda: loc.frame_cross(spectra), args.repeats))
    cross = loc.frame_cross(spectra[:, :, mask]).sum(axis=0)
    add("SRP-PHAT map + peaks (one estimate)", "numpy", median_time(lambda: loc.bearings(cross), args.repeats) * dur)
    for rt in RUNTIMES:
        try:
            model = Model(None, runtime=rt, threads=1)
        except Exception as e:  # a runtime that is not installed is reported, not fatal
            print(f"skip {rt}: {e}")
            continue
        window = np.full((model.window_frames, 64), -5.0, np.float32)
        per_window = median_time(lambda m=model, w=window: [m.predict(w) for _ in range(50)], args.repeats) / 50
        windows_per_s = 1.0 / (12 * 0.01)
        add("model window (hop 0.12 s)", rt, per_window * windows_per_s * dur)
        ws = model.stream_window_for(12)
        if ws is not None:  # what the pipeline runs with this runtime: the streaming model's window
            short = window[-ws:]
            calls = lambda m=model, w=short: [m.predict_stream(w) for _ in range(50)]  # noqa: E731
            per_short = median_time(calls, args.repeats) / 50
            add(f"model streaming window ({ws} frames, hop 0.12 s)", rt, per_short * windows_per_s * dur)

        def whole(m: Model = model, size: int = file_block) -> None:
            list(run(FileSource(scene, block_size=size, expected_channels=4), EdgePipeline(m, array)))

        def whole_run(stage: str, fn: Callable[[], object], rt: str = rt) -> None:
            add(stage, rt, median_time(fn, max(3, args.repeats // 2)))

        whole_run(
            f"whole pipeline (4 ch: SED + DOA + tracking) from the file, {FILE_BLOCK_MS / 1000:g} s blocks "
            "(`tympan listen --input`)",
            whole,
        )
        whole_run(f"whole pipeline from the file, {LIVE_BLOCK_MS:g} ms blocks", lambda: whole(size=live))

        # as a microphone source delivers it (no file decoding), with and without the tracker (issue 6)
        def on_blocks(m: Model = model, tracking: bool = True) -> None:
            list(run(iter(blocks), EdgePipeline(m, array, PipelineConfig(tracking=tracking))))

        whole_run(f"pipeline on {LIVE_BLOCK_MS:g} ms audio blocks (SED + DOA + tracking)", on_blocks)
        whole_run(
            f"pipeline on {LIVE_BLOCK_MS:g} ms audio blocks (SED + DOA, no tracker)", lambda: on_blocks(tracking=False)
        )
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {host_cpu()}",
        "python": platform.python_version(),
        "audio_s": dur,
        "repeats": args.repeats,
        "timer": "process CPU time, median of repeats, one thread",
        "rows": rows,
    }
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "pipeline.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [
        "# Edge pipeline cost per audio second",
        "",
        f"`benchmarks/bench_pipeline.py`, {result['machine']}; {result['timer']}; the bundled 10 s "
        "4-channel sample scene.",
        "",
        "| stage | runtime | CPU ms per audio s | x real time |",
        "|---|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['runtime']} | {1000 * float(r['cpu_s_per_audio_s']):.2f} | "
            f"{float(r['x_real_time']):.0f} |"
        )
    with open(os.path.join(out, "pipeline.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
