"""`tympan evaluate anomaly`: AUC of the per-device model of normal (edge.anomaly) on injected faults.

Devices are real machine recordings: every UrbanSound8K fold-3 recording (one `fsID`) of an
air conditioner, idling engine, jackhammer or drill with at least `MIN_SLICES` 4 s slices, and ESC-50
vacuum cleaner and washing machine clips (5 s each; their first 3 s train, the rest tests). For a
recording, the first half of its slices (in slice order) is the normal training audio; the other half,
cut into 2 s segments, is the normal test audio, and each test segment also gets each fault below.
Fault parameters are drawn at random per segment (seeded) from realistic ranges:

- bearing: a train of impulses at a defect rate of 60-160 Hz (an outer-race defect at ~3.5 x a
  17-45 Hz shaft rate), each a decaying 2.5-6 kHz resonance (decay 1-2 ms), with 10 % jitter,
  at -12 dB re the machine's RMS;
- imbalance: amplitude modulation of the machine's sound at a shaft rate of 5-30 Hz, depth 0.3-0.5;
- harmonic shift: the machine running 4-8 % faster or slower (resampling: every tonal component moves)
  plus a new tonal component at 1.5 x a spectral peak of the machine (a loose part's sub/inter-harmonic)
  at -14 dB;
- rattle: intermittent bursts of 20-60 ms of band-passed (1-5 kHz) noise at random times, 2-6 per
  second, each at -6 dB re the machine's RMS.

The AUC is the probability that a faulty segment scores above a normal one (Mann-Whitney), pooled
over devices per fault type, and averaged per device. The report goes to `--out`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import InputError

SAMPLE_RATE = 16000
MIN_SLICES = 8
SEGMENT_S = 2.0
US8K_CLASSES = ("air_conditioner", "engine_idling", "jackhammer", "drilling")
ESC_CLASSES = ("vacuum_cleaner", "washing_machine")
FAULTS = ("bearing", "imbalance", "harmonic_shift", "rattle")
F64 = npt.NDArray[np.float64]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="../shared/data", metavar="DIR", help="data root (default ../shared/data)")
    p.add_argument("--out", default="benchmarks/results/anomaly", metavar="PREFIX", help="writes PREFIX.md/.json")
    p.add_argument("--seed", type=int, default=7, help="fault parameter seed (default 7)")
    p.add_argument("--max-esc", type=int, default=10, metavar="N", help="ESC-50 clips per class (default 10)")


# --- faults ---------------------------------------------------------------------------------------------
def _rms(x: F64) -> float:
    return float(np.sqrt(np.mean(x**2)) + 1e-12)


def bearing(x: F64, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> F64:
    rate = rng.uniform(60.0, 160.0)
    f_res = rng.uniform(2500.0, 6000.0)
    decay = rng.uniform(0.001, 0.002)
    n = len(x)
    out = np.zeros(n)
    t = 0.0
    imp = np.arange(int(6 * decay * sr)) / sr
    shape = np.exp(-imp / decay) * np.sin(2 * np.pi * f_res * imp)
    while t < n / sr:
        i = int(t * sr)
        seg = shape[: n - i]
        out[i : i + len(seg)] += seg * rng.uniform(0.7, 1.0)
        t += (1.0 + rng.uniform(-0.1, 0.1)) / rate
    return x + out * _rms(x) / _rms(out) * 10 ** (-12 / 20)


def imbalance(x: F64, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> F64:
    f = rng.uniform(5.0, 30.0)
    depth = rng.uniform(0.3, 0.5)
    t = np.arange(len(x)) / sr
    return x * (1.0 + depth * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)))


def harmonic_shift(x: F64, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> F64:
    ratio = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.04, 0.08)
    n = len(x)
    pos = np.arange(n) * ratio
    y = np.interp(np.mod(pos, n - 1), np.arange(n), x)  # a faster machine wraps round its own recording
    spec = np.abs(np.fft.rfft(y * np.hanning(n)))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    band = (freqs > 50) & (freqs < 2000)
    peak = float(freqs[band][np.argmax(spec[band])])
    t = np.arange(n) / sr
    tone = np.sin(2 * np.pi * 1.5 * peak * t)
    return y + tone * _rms(y) / _rms(tone) * 10 ** (-14 / 20)


def rattle(x: F64, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> F64:
    n = len(x)
    out = np.zeros(n)
    count = int(rng.uniform(2.0, 6.0) * n / sr)
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    for _ in range(max(1, count)):
        d = int(rng.uniform(0.02, 0.06) * sr)
        i = int(rng.integers(0, max(1, n - d)))
        out[i : i + d] += rng.standard_normal(d) * np.hanning(d)
    spec = np.fft.rfft(out)
    out = np.fft.irfft(np.where((freqs >= 1000) & (freqs <= 5000), spec, 0), n=n)
    # -6 dB re the machine's RMS within the bursts
    active = np.abs(out) > 1e-9
    level = float(np.sqrt(np.mean(out[active] ** 2))) if active.any() else 1.0
    return x + out * _rms(x) / (level + 1e-12) * 10 ** (-6 / 20)


FAULT_FNS = {"bearing": bearing, "imbalance": imbalance, "harmonic_shift": harmonic_shift, "rattle": rattle}


def auc(neg: F64, pos: F64) -> float:
    """P(pos > neg) + 0.5 P(pos == neg): the Mann-Whitney AUC."""
    neg, pos = np.asarray(neg), np.asarray(pos)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (len(pos) * len(neg)))


# --- devices --------------------------------------------------------------------------------------------
def _read(path: Path) -> F64:
    from edge.sources import read_audio

    a = np.asarray(read_audio(str(path)), np.float64)
    return a.mean(axis=0) if a.ndim == 2 else a


def _segments(x: F64) -> list[F64]:
    n = int(SEGMENT_S * SAMPLE_RATE)
    return [x[i : i + n] for i in range(0, len(x) - n + 1, n)]


def devices(root: Path, max_esc: int) -> list[tuple[str, list[F64], list[F64]]]:
    """(name, normal training recordings, normal test segments) per device."""
    out: list[tuple[str, list[F64], list[F64]]] = []
    us = root / "urbansound8k_fold3"
    with (us / "meta.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["class"] in US8K_CLASSES]
    by_rec: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_rec.setdefault(f"{r['class']}/{r['fsID']}", []).append(r)
    for name, rs in sorted(by_rec.items()):
        if len(rs) < MIN_SLICES:
            continue
        rs.sort(key=lambda r: float(r["start"]))
        half = len(rs) // 2
        train = [_read(us / "audio" / r["path"]) for r in rs[:half]]
        test = [s for r in rs[half:] for s in _segments(_read(us / "audio" / r["path"]))]
        out.append((f"urbansound8k/{name}", train, test))
    esc = root / "esc50"
    with (esc / "esc50_meta.csv").open() as f:
        erows = [r for r in csv.DictReader(f) if r["category"] in ESC_CLASSES]
    for c in ESC_CLASSES:
        for r in [r for r in erows if r["category"] == c][:max_esc]:
            x = _read(esc / "audio" / r["filename"])
            cut = int(3.0 * SAMPLE_RATE)
            out.append((f"esc50/{c}/{r['filename']}", [x[:cut]], [x[cut:]]))
    return out


def evaluate(root: Path, seed: int, max_esc: int) -> dict[str, Any]:
    from edge.anomaly import fit

    for sub in ("esc50", "urbansound8k_fold3"):
        if not (root / sub).is_dir():
            raise InputError(f"{root / sub}: missing (the anomaly evaluation reads UrbanSound8K and ESC-50)")
    rng = np.random.default_rng(seed)
    pooled: dict[str, list[float]] = {"normal": [], **{k: [] for k in FAULTS}}
    rows = []
    for name, train, test in devices(root, max_esc):
        model = fit(train, source=name)
        normal = [model.score(s) - model.threshold for s in test]
        row: dict[str, Any] = {"device": name, "train_windows": model.n_windows, "test_segments": len(test)}
        pooled["normal"] += normal
        flagged_normal = float(np.mean(np.array(normal) > 0.0))
        row["false_alarm_rate"] = flagged_normal
        for k in FAULTS:
            faulty = [model.score(FAULT_FNS[k](s, rng)) - model.threshold for s in test]
            pooled[k] += faulty
            row[f"auc_{k}"] = auc(np.array(normal), np.array(faulty))
            row[f"detected_{k}"] = float(np.mean(np.array(faulty) > 0.0))
        rows.append(row)
    neg = np.array(pooled["normal"])
    summary = {k: auc(neg, np.array(pooled[k])) for k in FAULTS}
    summary["all"] = auc(neg, np.concatenate([np.array(pooled[k]) for k in FAULTS]))
    # per-device AUC needs several test segments (ESC-50 clips give one: they count in the pooled AUC)
    multi = [r for r in rows if r["test_segments"] >= 5]
    per_device_mean = {k: float(np.mean([r[f"auc_{k}"] for r in multi])) for k in FAULTS}
    return {
        "seed": seed,
        "devices": rows,
        "pooled_auc": summary,
        "mean_device_auc": per_device_mean,
        "false_alarm_rate": float(np.mean(neg > 0.0)),
        "detection_rate": {k: float(np.mean(np.array(pooled[k]) > 0.0)) for k in FAULTS},
    }


def render(r: dict[str, Any]) -> str:
    out = ["# Anomaly (normal/abnormal): injected faults in real machine recordings", "",
           "Written by `tympan evaluate anomaly` (edge/evaluation/anomaly_eval.py: devices, faults and",
           "their parameter ranges in its docstring). A score is the recording's score minus the model's",
           "threshold (both in held-out standard deviations, edge/anomaly.py); > 0 is reported abnormal.", "",
           f"{len(r['devices'])} devices, seed {r['seed']}.", "",
           "| fault | pooled AUC (all devices) | mean per-device AUC (devices with >= 5 test segments) "
           "| detected at the threshold |", "|---|---|---|---|"]  # fmt: skip
    for k in FAULTS:
        out.append(f"| {k} | {r['pooled_auc'][k]:.3f} | {r['mean_device_auc'][k]:.3f} | {r['detection_rate'][k]:.1%} |")
    out += [f"| all | {r['pooled_auc']['all']:.3f} | | |", "",
            f"False alarms on normal test segments at the threshold: {r['false_alarm_rate']:.1%}.", "",
            "| device | train windows | test segments | " + " | ".join(f"AUC {k}" for k in FAULTS)
            + " | false alarms |",
            "|---|---|---|" + "---|" * (len(FAULTS) + 1)]  # fmt: skip
    for d in r["devices"]:
        if d["test_segments"] < 5:
            continue
        out.append(f"| {d['device']} | {d['train_windows']} | {d['test_segments']} | "
                   + " | ".join(f"{d[f'auc_{k}']:.3f}" for k in FAULTS)
                   + f" | {d['false_alarm_rate']:.0%} |")  # fmt: skip
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.max_esc < 0:
        raise InputError(f"--max-esc {args.max_esc}: must be >= 0")
    report = evaluate(Path(args.data), args.seed, args.max_esc)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    text = render(report)
    with open(args.out + ".md", "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 0
