"""The product surface, as a user meets it: `tympan listen | tag | locate | boards` and their errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.main import main
from tests.scenes import FS, ang_err

SCENE = Path(str(resources.files("edge").joinpath("data", "sample_scene.flac")))
TRUTH = json.loads(Path(str(resources.files("edge").joinpath("data", "sample_scene.json"))).read_text())


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scene_events(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("listen") / "ev.jsonl"
    assert main(["listen", "--input", str(SCENE), "--board", TRUTH["array"], "--events", str(out)]) == 0
    return read_events(out)


def test_listen_writes_closed_events_with_label_onset_offset_azimuth(scene_events: list[dict]) -> None:
    closed = [e for e in scene_events if e["ph"] == "off"]
    assert closed
    for e in closed:
        for key in ("v", "dev", "seq", "id", "lbl", "mid", "c", "p", "t0", "t1", "lat", "az", "lvl", "m"):
            assert key in e, key
        assert 0.0 <= e["onset"] < e["offset"] <= TRUTH["duration_s"] + 0.05
        assert e["t1"] - e["t0"] == pytest.approx(e["offset"] - e["onset"], abs=2e-3)
    seqs = [e["seq"] for e in scene_events]
    assert seqs == list(range(len(seqs)))


@pytest.mark.parametrize("truth", TRUTH["events"], ids=[t["label"] for t in TRUTH["events"]])
def test_each_scene_source_is_detected_near_its_onset_and_direction(scene_events: list[dict], truth: dict) -> None:
    """Tolerances: onset within 0.5 s, azimuth within 10 degrees (ReSpeaker 4-mic, RT60 0.3 s room)."""
    near = [e for e in scene_events if e["ph"] == "off" and abs(e["onset"] - truth["onset"]) <= 0.5]
    assert near, f"no event starts within 0.5 s of {truth['label']} at {truth['onset']} s"
    best = min(ang_err(e["az"], truth["azimuth_deg"]) for e in near)
    assert best <= 10.0, f"{truth['label']}: nearest azimuth off by {best:.1f} deg"


def test_listen_events_do_not_depend_on_block_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = ("ph", "id", "lbl", "onset", "offset", "p", "az", "lvl", "lat")
    runs = []
    for ms in ("10", "1000"):
        out = tmp_path / f"ev{ms}.jsonl"
        rc, _, _ = cli(
            capsys, "listen", "--input", str(SCENE), "--board", TRUTH["array"], "--events", str(out), "--block-ms", ms
        )
        assert rc == 0
        runs.append([tuple(e[k] for k in keys) for e in read_events(out)])
    assert runs[0] and runs[0] == runs[1]


def test_tag_json_scores_every_label(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "tag", "--json", str(SCENE), str(SCENE))
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 2
    for r in rows:
        assert r["file"] == str(SCENE) and len(r["scores"]) >= 100
        assert all(0.0 <= p <= 1.0 for p in r["scores"].values())
        assert [t["p"] for t in r["top"]] == sorted((t["p"] for t in r["top"]), reverse=True)
        assert r["top"][0]["p"] == max(r["scores"].values())


def test_locate_json_finds_every_scene_source(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "locate", "--json", "--board", TRUTH["array"], str(SCENE))
    assert rc == 0
    row = json.loads(out)
    assert row["azimuth_deg"] == row["sources"][0]["azimuth_deg"]
    for t in TRUTH["events"]:
        assert min(ang_err(s["azimuth_deg"], t["azimuth_deg"]) for s in row["sources"]) <= 5.0


# --- bad input: one clear line, non-zero exit -------------------------------------------------------
def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    notaudio = tmp / "notes.wav"
    notaudio.write_text("this is not audio\n")
    empty = tmp / "empty.wav"
    sf.write(empty, np.zeros((0, 4)), FS)
    stereo = tmp / "stereo.wav"
    sf.write(stereo, np.zeros((FS, 2)), FS)
    nan = tmp / "nan.wav"
    x = np.zeros((FS, 4), np.float32)
    x[500, 2] = np.nan
    sf.write(nan, x, FS, subtype="FLOAT")
    board = ["--board", "respeaker-4mic-hat"]
    return {
        "missing": (["listen", "--input", str(tmp / "nope.wav"), *board], "no such file"),
        "not audio": (["tag", str(notaudio)], "not an audio file"),
        "empty": (["listen", "--input", str(empty), *board], "empty"),
        "channels": (["listen", "--input", str(stereo), *board], "2 channels"),
        "nan": (["listen", "--input", str(nan), *board], "NaN"),
        "unknown board": (["locate", "--board", "respeaker-9mic", str(stereo)], "respeaker-9mic"),
        "locate channels": (["locate", "--board", "respeaker-6mic-hat", str(stereo)], "2 channels"),
        "bad model": (["tag", "--model", str(tmp / "nomodel"), str(stereo)], "no such model"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "not audio", "empty", "channels", "nan", "unknown board", "locate channels", "bad model"]
)
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, needle = _bad_inputs(tmp_path)[case]
    rc, _, err = cli(capsys, *argv)
    assert rc != 0
    lines = [line for line in err.splitlines() if line.startswith("tympan: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_console_script_reports_errors_without_traceback(tmp_path: Path) -> None:
    exe = shutil.which("tympan", path=str(Path(sys.executable).parent))
    assert exe, "the tympan console script is not installed"
    p = subprocess.run(
        [exe, "listen", "--input", str(tmp_path / "gone.flac"), "--board", "raspberry-pi-4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 1
    assert p.stderr.strip().startswith("tympan: error:") and "gone.flac" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    for cmd in ("listen", "tag", "locate", "boards", "quantize"):
        assert cmd in p.stdout


def test_listen_from_a_sound_device_finds_the_scene_sources(tmp_path: Path) -> None:
    """`listen --device` end to end: sounddevice -> PortAudio -> ALSA `file` PCM playing the sample scene."""
    from edge.errors import DeviceError
    from edge.sources.devices import import_sounddevice

    try:
        import_sounddevice()
    except DeviceError as e:
        pytest.skip(f"PortAudio cannot be loaded: {e}")
    x, _ = sf.read(SCENE, dtype="int16")
    raw = tmp_path / "scene.raw"
    x.tofile(raw)
    (tmp_path / ".asoundrc").write_text(
        f'pcm.tympan_scene {{\n type file\n slave.pcm "null"\n file "/dev/null"\n infile "{raw}"\n format "raw"\n}}\n'
    )
    exe = shutil.which("tympan", path=str(Path(sys.executable).parent))
    assert exe
    out = tmp_path / "ev.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("ALSA_CONFIG_PATH", "XDG_CONFIG_HOME")}
    env["HOME"] = str(tmp_path)
    duration = TRUTH["duration_s"] - 0.5  # the file plugin repeats stale data past the end of its input
    p = subprocess.run(
        [exe, "listen", "--device", "tympan_scene", "--board", TRUTH["array"], "--duration", str(duration),
         "--buffer-s", "60", "--events", str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "dropped" not in p.stderr, p.stderr
    events = read_events(out)
    for truth in TRUTH["events"]:
        near = [e for e in events if e["ph"] == "off" and abs(e["onset"] - truth["onset"]) <= 0.5]
        assert near and min(ang_err(e["az"], truth["azimuth_deg"]) for e in near) <= 10.0, truth
