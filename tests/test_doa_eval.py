"""`tympan evaluate doa`: its scores, and a tiny run end to end (issue 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from boards.profiles import load_array
from edge.evaluation import doa_eval

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_error_wraps_and_a_linear_array_is_scored_against_its_mirror_too() -> None:
    none = doa_eval._mirror_fn(load_array("respeaker-4mic-hat"))
    assert doa_eval._err(179.0, -179.0, none) == pytest.approx(2.0)
    assert doa_eval._err(30.0, -30.0, none) == pytest.approx(60.0)
    line = load_array("ps3-eye")
    mirror = doa_eval._mirror_fn(line)
    axis = np.asarray(line.mics[-1]) - np.asarray(line.mics[0])
    axis_az = float(np.degrees(np.arctan2(axis[1], axis[0])))
    truth = axis_az + 40.0
    assert doa_eval._err(axis_az - 40.0, truth, mirror) == pytest.approx(0.0, abs=1e-9)  # the mirror image
    assert doa_eval._err(axis_az - 40.0, truth, none) == pytest.approx(80.0)


def test_both_found_needs_one_estimate_within_10_degrees_of_each_source() -> None:
    none = doa_eval._mirror_fn(load_array("respeaker-4mic-hat"))
    assert doa_eval._both_found([95.0, -41.0], [-45.0, 90.0], none)  # any order
    assert not doa_eval._both_found([95.0, -30.0], [-45.0, 90.0], none)  # 15 degrees off
    assert not doa_eval._both_found([88.0], [-45.0, 90.0], none)  # one estimate
    assert not doa_eval._both_found([88.0, 92.0], [-45.0, 90.0], none)  # both on the same source


@pytest.mark.skipif(not (DATA / "esc50").is_dir(), reason="../shared/data/esc50 not present")
def test_a_tiny_evaluation_scores_every_method_and_states_the_targets() -> None:
    pytest.importorskip("pyroomacoustics")
    summary = doa_eval.evaluate(DATA, ["respeaker-4mic-hat"], 3, 1, peers=True, seed=1)
    methods = {o["method"] for o in summary["overall"]}
    assert methods == {f"tympan-{m}" for m in doa_eval.TYMPAN_METHODS} | {f"pra-{m}" for m in doa_eval.PRA_METHODS}
    srp = next(o for o in summary["overall"] if o["method"] == "tympan-srp-phat")
    assert srp["n"] == 3 and srp["four_mic"]["n"] == 3 and srp["both_found"] is not None
    # three seeded reverberant rooms (3.3 degrees median, all within 10, when written)
    assert srp["median_deg"] <= 10.0 and srp["within_10"] >= 0.66
    rows = {t["target"] for t in doa_eval.targets(summary)}
    assert any("4-mic median" in r for r in rows) and any(">= 10x faster" in r for r in rows)


def test_band_power_and_clips_outside_the_arrays_band_are_not_sources(tmp_path: Path) -> None:
    """A source is a clip with at least a quarter of its energy in 300-4000 Hz (where the arrays
    localise); simultaneous sources are set to equal power there."""
    sf = pytest.importorskip("soundfile")
    t = np.arange(2 * doa_eval.FS) / doa_eval.FS
    tone = np.sin(2 * np.pi * 1000.0 * t)
    assert doa_eval._band_rms(tone) == pytest.approx(np.sqrt(0.5), rel=1e-3)
    assert doa_eval._band_rms(np.sin(2 * np.pi * 100.0 * t)) < 1e-3  # below the band
    assert doa_eval._band_rms(np.sin(2 * np.pi * 6000.0 * t)) < 1e-3  # above it
    rumble = 0.5 * np.sin(2 * np.pi * 80.0 * t) + 0.1 * tone  # 4 % of its energy in the band
    sf.write(tmp_path / "rumble.wav", rumble.astype(np.float32), doa_eval.FS)
    sf.write(tmp_path / "tone.wav", (0.3 * tone + 0.3 * np.sin(2 * np.pi * 80.0 * t)).astype(np.float32), doa_eval.FS)
    assert doa_eval._loudest(tmp_path / "rumble.wav", doa_eval.CLIP_S) is None
    got = doa_eval._loudest(tmp_path / "tone.wav", doa_eval.CLIP_S)  # half of it in the band
    assert got is not None and np.sqrt(np.mean(got**2)) == pytest.approx(1.0)


def test_the_two_source_target_is_scored_on_arrays_that_resolve_azimuth() -> None:
    """A linear array cannot tell a source from its mirror image, nor, off its plane, its azimuth from
    its elevation: the two-source target row counts planar and 3-D arrays, and names the all-array share."""
    rows = [
        {"array": "hat", "linear": False, "method": "tympan-srp-phat", "sources": 2, "both_found": found,
         "cpu_per_audio_s": 0.001, "stft_per_audio_s": 0.001}
        for found in (True, True, True, False)
    ] + [
        {"array": "line", "linear": True, "method": "tympan-srp-phat", "sources": 2, "both_found": False,
         "cpu_per_audio_s": 0.001, "stft_per_audio_s": 0.001}
        for _ in range(4)
    ]  # fmt: skip
    summary = doa_eval.summarise(rows, ["hat", "line"], ["tympan-srp-phat"])
    row = next(t for t in doa_eval.targets(summary) if t["target"].startswith("two sources"))
    assert row["value"] == 0.75 and not row["pass"]
    assert "planar and 3-D arrays" in row["note"] and "linear ones too: 0.375" in row["note"]
    only_line = doa_eval.summarise(rows[4:], ["line"], ["tympan-srp-phat"])
    row = next(t for t in doa_eval.targets(only_line) if t["target"].startswith("two sources"))
    assert row["value"] == 0.0 and "all arrays" in row["note"]


def test_bad_counts_are_refused_by_name() -> None:
    import argparse

    from edge.errors import InputError

    pytest.importorskip("pyroomacoustics")
    p = argparse.ArgumentParser()
    doa_eval.add_arguments(p)
    with pytest.raises(InputError, match="--cpu-repeats 0"):
        doa_eval.run(p.parse_args(["--cpu-repeats", "0"]))
    with pytest.raises(InputError, match="need some scenes"):
        doa_eval.run(p.parse_args(["--scenes", "0", "--two-source-scenes", "0"]))
