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


def _overlapping(events: list[dict], truth: dict) -> list[dict]:
    return [e for e in events if e["ph"] == "off" and e["onset"] < truth["offset"] and e["offset"] > truth["onset"]]


@pytest.mark.parametrize("truth", TRUTH["events"], ids=[t["label"] for t in TRUTH["events"]])
def test_each_scene_source_is_detected_from_its_direction(scene_events: list[dict], truth: dict) -> None:
    """Every source gets an event inside its interval, pointing within 10 degrees of it
    (ReSpeaker 4-mic HAT, RT60 0.3 s room, 1.6 m)."""
    events = _overlapping(scene_events, truth)
    assert events, f"no event overlaps {truth['label']} ({truth['onset']}-{truth['offset']} s)"
    for e in events:
        assert ang_err(e["az"], truth["azimuth_deg"]) <= 10.0, f"{e['lbl']} at {e['az']} for {truth}"


@pytest.mark.parametrize("truth", TRUTH["events"], ids=[t["label"] for t in TRUTH["events"]])
def test_each_scene_source_is_detected_near_its_onset(scene_events: list[dict], truth: dict) -> None:
    """Tolerance: the first event of the source starts within 0.5 s of the true onset."""
    first = min((e["onset"] for e in _overlapping(scene_events, truth)), default=None)
    assert first is not None and abs(first - truth["onset"]) <= 0.5, f"{truth['label']}: first onset {first}"


# AudioSet labels that name each ESC-10 source of the scene (or its parent class)
SOURCE_LABELS = {
    "dog": {"Dog", "Bark", "Bow-wow", "Growling", "Domestic animals, pets", "Animal"},
    "rooster": {"Chicken, rooster", "Crowing, cock-a-doodle-doo", "Fowl", "Livestock, farm animals, working animals"},
    "crying_baby": {"Baby cry, infant cry", "Crying, sobbing", "Child speech, kid speaking", "Screaming"},
}


@pytest.mark.parametrize("truth", TRUTH["events"], ids=[t["label"] for t in TRUTH["events"]])
def test_each_scene_source_gets_one_of_its_labels(scene_events: list[dict], truth: dict) -> None:
    labels = {e["lbl"] for e in _overlapping(scene_events, truth)}
    assert labels & SOURCE_LABELS[truth["label"]], f"{truth['label']}: labelled {sorted(labels)}"


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


def test_listen_on_a_file_cut_short_closes_its_events_then_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the recording stops decoding at 80 % of its bytes (7.9 s), inside the scene's crying (6.8-9.3 s): the
    # events before the cut are reported, each one that opened is closed (no subscriber keeps an `on`
    # without an `off`), then the error names the file
    cut = tmp_path / "cut.flac"
    data = SCENE.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.8)])
    out = tmp_path / "ev.jsonl"
    rc, _, err = cli(capsys, "listen", "--input", str(cut), "--board", TRUTH["array"], "--events", str(out))
    assert rc == 1 and err.startswith(f"tympan: error: {cut}: cannot decode sample ") and "Traceback" not in err
    events = read_events(out)
    opened = {e["id"] for e in events if e["ph"] == "on"}
    closed = {e["id"] for e in events if e["ph"] == "off"}
    assert opened and opened == closed
    # the same events as the whole file gives up to the cut, where it closes them
    whole = tmp_path / "whole.jsonl"
    assert cli(capsys, "listen", "--input", str(SCENE), "--board", TRUTH["array"], "--events", str(whole))[0] == 0
    lost_at = int(err.split("cannot decode sample ")[1].split()[0]) / 16000
    emitted = lambda e: e["onset"] + e["lat"] / 1000.0  # noqa: E731  (stream time: lat = emission - onset)
    before = [(e["lbl"], e["onset"]) for e in read_events(whole) if e["ph"] == "on" and emitted(e) < lost_at - 1.0]
    assert before and set(before) <= {(e["lbl"], e["onset"]) for e in events if e["ph"] == "on"}


@pytest.mark.parametrize(
    ("source", "level_every", "latency", "expect_ms"),
    [(None, 1.0, "balanced", 100.0), (None, 1.0, "low", 40.0), ("scene.flac", 1.0, "balanced", 1000.0),
     ("scene.flac", 1.0, "low", 1000.0), ("scene.flac", 0.25, "balanced", 250.0),
     ("scene.flac", 0.0, "balanced", 1000.0), ("scene.flac", 5.0, "balanced", 1000.0)],
)  # fmt: skip
def test_listen_default_block_is_short_live_and_long_from_a_file(
    source: str | None, level_every: float, latency: str, expect_ms: float
) -> None:
    """A live source's block is what an event waits on in wall time (100 ms; 40 ms, one output frame,
    with `--latency low`); a file's blocks wait on nothing (1 s), but never longer than the level
    interval, so every level reading still comes."""
    import argparse

    from edge.cli import _default_block_ms

    args = argparse.Namespace(input=source, level_every=level_every, latency=latency)
    assert _default_block_ms(args) == expect_ms


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


def test_tag_and_locate_give_the_same_answers_on_every_dsp_backend(capsys: pytest.CaptureFixture[str]) -> None:
    """`--dsp-backend` picks the kernels of `tag` and `locate` (by default the board's, else the native ones
    where built): the numpy reference and the native build give the same scores and directions."""
    from edge.dsp import backends

    if "native" not in backends.backends():
        pytest.skip("native backend unavailable")
    rows = {}
    for b in ("numpy", "native"):
        rc, out, _ = cli(capsys, "tag", "--json", "--dsp-backend", b, str(SCENE))
        assert rc == 0
        rc2, out2, _ = cli(capsys, "locate", "--json", "--dsp-backend", b, "--board", TRUTH["array"], str(SCENE))
        assert rc2 == 0
        rows[b] = (json.loads(out), json.loads(out2))
    (tag_n, loc_n), (tag_c, loc_c) = rows["numpy"], rows["native"]
    assert max(abs(tag_n["scores"][k] - tag_c["scores"][k]) for k in tag_n["scores"]) <= 2e-3
    assert len(loc_n["sources"]) == len(loc_c["sources"])
    for a, b in zip(loc_n["sources"], loc_c["sources"], strict=True):
        assert ang_err(a["azimuth_deg"], b["azimuth_deg"]) <= 0.5


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


def test_listen_from_a_sound_device_gives_the_events_of_the_file(tmp_path: Path, scene_events: list[dict]) -> None:
    """`listen --device` end to end: sounddevice -> PortAudio -> ALSA `file` PCM playing the sample scene.
    The capture is bit-exact, so the events must be those of the file up to the capture's end."""
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
    keys = ("ph", "id", "lbl", "onset", "offset", "p", "az", "lvl")

    def closed_early(events: list[dict]) -> list[tuple]:
        # events closed well before the capture stopped cannot be affected by where it stopped
        return [tuple(e[k] for k in keys) for e in events if e["ph"] == "off" and e["offset"] < duration - 1.0]

    want = closed_early(scene_events)
    assert len(want) >= 5
    assert closed_early(read_events(out)) == want


def test_a_command_that_cannot_load_is_reported_not_fatal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.metadata import EntryPoint

    import edge.main

    real = edge.main._commands()
    broken = EntryPoint(name="broken", value="tympan_no_such_module:add", group="tympan.commands")
    monkeypatch.setattr(edge.main, "_commands", lambda: {**real, "broken": broken})
    with pytest.raises(SystemExit):
        main(["--help"])
    out, err = capsys.readouterr()
    assert "listen" in out and "command 'broken' is unavailable" in err
    rc, _, err = cli(capsys, "broken")
    assert rc == 1 and "command 'broken' is unavailable" in err and "Traceback" not in err


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("3", "3")])
def test_tympan_puts_blas_on_one_thread_unless_told(given: str | None, expected: str) -> None:
    """numpy's BLAS gets one thread before numpy loads (its workers only spin beside a one-core
    pipeline), and a value the user set is kept."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    # edge.main must set it before anything imports numpy (numpy's BLAS reads it when numpy loads)
    code = "import sys, os, edge.main; print(os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [expected, "False"]
