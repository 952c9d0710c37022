"""`tympan bench`: per stage and backend figures, JSON output, and the inputs it refuses."""

from __future__ import annotations

import json

import pytest

from edge.dsp import backends
from edge.main import main

STAGES = {"DC blocker", "stft (4 ch)", "log-mel", "PHAT cross (6 pairs)", "SRP-PHAT", "level", "DSP total"}


def test_bench_json_has_every_stage_for_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--no-model", "--seconds", "0.5", "--repeats", "1", "--backends", "numpy", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["rows"]
    assert {r["stage"] for r in rows} == STAGES and {r["backend"] for r in rows} == {"numpy"}
    assert out["channels"] == 4 and out["audio_s"] == pytest.approx(0.5)
    for r in rows:
        assert r["ms_per_audio_s"] > 0 and r["x_real_time"] == pytest.approx(1000.0 / r["ms_per_audio_s"])
    total = next(r for r in rows if r["stage"] == "DSP total")["ms_per_audio_s"]
    assert total == pytest.approx(sum(r["ms_per_audio_s"] for r in rows if r["stage"] != "DSP total"))


def test_bench_with_the_model_times_both_latency_modes(capsys: pytest.CaptureFixture[str]) -> None:
    """The model, the whole pipeline per backend, and the whole pipeline in `--latency low` (the model
    three times as often) on the backend `listen` picks, or the first benchmarked one."""
    rc = main(["bench", "--seconds", "2", "--repeats", "2", "--backends", "numpy", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["stage"]: r for r in out["rows"] if r["stage"] not in STAGES}
    assert set(rows) == {next(s for s in rows if s.startswith("model")), "whole pipeline", "... low latency"}
    assert rows["... low latency"]["backend"] == "numpy"
    assert rows["whole pipeline"]["ms_per_audio_s"] > 0 and rows["... low latency"]["ms_per_audio_s"] > 0


def test_bench_board_picks_its_preferred_backend(capsys: pytest.CaptureFixture[str]) -> None:
    if "native" not in backends.backends():
        pytest.skip("native backend unavailable")
    rc = main(["bench", "--board", "raspberry-pi-4", "--no-model", "--seconds", "0.5", "--repeats", "1", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["board_preference"] == "native" and out["selected_backend"] == "native"
    assert {r["backend"] for r in out["rows"]} == {"numpy", "native"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seconds", "60"], "--seconds 60"),
        (["--repeats", "0"], "--repeats 0"),
        (["--backends", "cuda"], "'cuda'"),
        (["--board", "no-such-board"], "no-such-board"),
    ],
)
def test_bench_rejects_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "--no-model", *argv])
    assert rc != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
