#!/usr/bin/env python3
"""Make the bundled sample scene `edge/data/sample_scene.flac` (+ `sample_scene.json`, ground truth).

A 4-channel, 10 s scene as heard by the ReSpeaker 4-mic HAT in a simulated room (pyroomacoustics image
source model, RT60 about 0.3 s): three ESC-10 clips (CC BY 3.0 subset of ESC-50, fold 5, which the
default model does not train on) from three directions over low background noise. Credits go to
`edge/data/SAMPLE_CREDITS.md`. Run from the project root (needs the dev extra and ../shared/data):

    .venv/bin/python scripts/make_sample_scene.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re

import numpy as np
import pyroomacoustics as pra
import soundfile as sf

from boards.profiles import load_array

FS = 16000
SCENE_S = 10.0
ARRAY = "respeaker-4mic-hat"
# (ESC-50 category, azimuth deg, start s, length s)
EVENTS = [("dog", 60.0, 1.0, 2.0), ("rooster", -120.0, 3.8, 2.2), ("crying_baby", 150.0, 6.8, 2.4)]
ROOM = [6.0, 5.0, 2.8]
CENTRE = np.array([3.0, 2.4, 1.0])
DISTANCE = 1.6
RT60 = 0.3
SEED = 7


def active_start(x: np.ndarray, below_peak_db: float = 25.0) -> int:
    env = np.sqrt(np.convolve(x**2, np.ones(320) / 320, "same"))
    db = 20 * np.log10(env + 1e-9)
    return int(np.argmax(db > db.max() - below_peak_db))


def credit(lines: list[str], stem: str) -> str:
    for ln in lines:
        if f"[{stem}.ogg]" in ln:
            return re.sub(r"^- \[[^]]+\]: ", "", ln.strip())
    raise SystemExit(f"no licence line for {stem}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join("..", "shared", "data"))
    ap.add_argument("--out", default=os.path.join("edge", "data"))
    args = ap.parse_args()
    esc = os.path.join(args.data, "esc50")
    meta = list(csv.DictReader(open(os.path.join(esc, "esc50_meta.csv"))))
    lic = open(os.path.join(esc, "LICENSE_ESC50.txt"), encoding="utf-8").read().splitlines()
    array = load_array(ARRAY)
    mics = np.asarray(array.mics).T + CENTRE[:, None]

    e_abs, order = pra.inverse_sabine(RT60, ROOM)
    room = pra.ShoeBox(ROOM, fs=FS, materials=pra.Material(e_abs), max_order=order)
    truth, credits = [], []
    for cat, az, start, length in EVENTS:
        # the first fold-5 CC BY clip of the category whose licence line says CC-BY or CC0
        rows = [r for r in meta if r["category"] == cat and r["fold"] == "5" and r["esc10"] == "True"]
        for r in rows:
            stem = r["filename"].rsplit(".", 1)[0].rsplit("-", 1)[0]
            c = credit(lic, stem)
            x, sr = sf.read(os.path.join(esc, "audio", r["filename"]), dtype="float64")
            assert sr == FS
            s0 = active_start(x)
            if len(x) - s0 >= length * FS:
                break
        x = x[s0 : s0 + int(length * FS)]
        x = x / np.max(np.abs(x)) * 0.5
        fade = int(0.02 * FS)
        x[-fade:] *= np.linspace(1, 0, fade)
        pos = CENTRE + DISTANCE * np.array([np.cos(np.radians(az)), np.sin(np.radians(az)), 0.0])
        room.add_source(pos.tolist(), signal=x, delay=start)
        truth.append(
            {
                "label": cat,
                "clip": r["filename"],
                "onset": start,
                "offset": start + length,
                "azimuth_deg": az,
                "elevation_deg": 0.0,
                "distance_m": DISTANCE,
            }
        )
        credits.append(f"- `{r['filename']}` ({cat}, ESC-50 fold 5): {c}")
    room.add_microphone_array(pra.MicrophoneArray(mics, FS))
    room.simulate()
    y = room.mic_array.signals[:, : int(SCENE_S * FS)]
    rng = np.random.default_rng(SEED)
    noise = rng.normal(0, 1, y.shape)
    noise = np.cumsum(noise, axis=1) * 0.02 + noise  # reddish, uncorrelated across mics
    noise -= noise.mean(axis=1, keepdims=True)
    y = y / np.max(np.abs(y)) * 0.7
    y += noise / np.sqrt(np.mean(noise**2)) * 10 ** (-55 / 20)
    # propagation delay: direct path at DISTANCE
    delay = DISTANCE / 343.0
    for t in truth:
        t["onset"] = round(t["onset"] + delay, 3)
        t["offset"] = round(t["offset"] + delay, 3)
    os.makedirs(args.out, exist_ok=True)
    sf.write(os.path.join(args.out, "sample_scene.flac"), y.T, FS, subtype="PCM_16")
    json.dump(
        {"array": ARRAY, "sample_rate": FS, "duration_s": SCENE_S, "rt60_s": RT60, "room_m": ROOM, "events": truth},
        open(os.path.join(args.out, "sample_scene.json"), "w"),
        indent=1,
    )
    with open(os.path.join(args.out, "SAMPLE_CREDITS.md"), "w", encoding="utf-8") as f:
        f.write(
            "# Credits for the bundled sample scene\n\n"
            "`sample_scene.flac` is made by `scripts/make_sample_scene.py` from these clips of ESC-10, the\n"
            "CC BY 3.0 subset of ESC-50 (K. J. Piczak, ESC: Dataset for Environmental Sound Classification,\n"
            "ACM MM 2015; https://creativecommons.org/licenses/by/3.0/). The clips were cut, scaled and\n"
            "spatialised in a simulated room; the scene is shared under CC BY 3.0 as well.\n\n"
            + "\n".join(credits)
            + "\n"
        )
    print("wrote", args.out, [t["clip"] for t in truth])


if __name__ == "__main__":
    main()
