"""The causal SED state machine on synthetic frame probabilities with known onsets and offsets."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.inference import Label
from edge.messages import Event, Scores
from edge.sed import SedConfig, SedStage

HOP = 0.04
LABELS = (Label(0, "/m/0bt9lr", "Dog"), Label(1, "/m/09x0r", "Speech"), Label(2, "/m/028v0c", "Silence"))


def feed(probs: np.ndarray, chunk: int = 10, config: SedConfig | None = None) -> list[Event]:
    sed = SedStage(LABELS, np.full(len(LABELS), 0.5, np.float32), config or SedConfig())
    out: list[Event] = []
    for i in range(0, len(probs), chunk):
        out += sed.process(Scores(probs[i : i + chunk], i * HOP, i, i, HOP, ("Dog", "Speech", "Silence")))
    return out + sed.flush()


def track(n: int, on: list[tuple[int, int]], k: int = 0, level: float = 0.9) -> np.ndarray:
    p = np.full((n, len(LABELS)), 0.02, np.float32)
    for a, b in on:
        p[a:b, k] = level
    return p


def test_onset_offset_and_latency() -> None:
    ev = feed(track(100, [(25, 50)]), chunk=3)
    on = [e for e in ev if e.phase == "on"]
    off = [e for e in ev if e.phase == "off"]
    assert len(on) == len(off) == 1
    assert on[0].label == "Dog" and on[0].mid == "/m/0bt9lr"
    assert on[0].onset == pytest.approx(25 * HOP)
    # decided after min_on_frames frames: latency is exactly that long
    assert on[0].emitted - on[0].onset == pytest.approx(SedConfig().min_on_frames * HOP)
    assert off[0].offset == pytest.approx(50 * HOP)
    assert off[0].id == on[0].id


def test_short_gaps_are_bridged_long_gaps_split() -> None:
    gap_ok = SedConfig().max_gap_frames
    ev = feed(track(200, [(10, 40), (40 + gap_ok, 70)]), chunk=7)
    assert [e.phase for e in ev].count("on") == 1
    ev = feed(track(200, [(10, 40), (40 + gap_ok + 2, 70)]), chunk=7)
    assert [e.phase for e in ev].count("on") == 2


def test_blips_shorter_than_min_on_are_ignored() -> None:
    assert feed(track(60, [(10, 11), (30, 31)]), chunk=5) == []


def test_hysteresis_keeps_event_while_above_off_threshold() -> None:
    p = track(100, [(10, 60)])
    p[30:50, 0] = 0.35  # below on (0.5), above off (0.3)
    ev = feed(p, chunk=4)
    assert [e.phase for e in ev] == ["on", "off"]
    assert ev[1].offset == pytest.approx(60 * HOP)


@pytest.mark.parametrize("chunk", [1, 2, 5, 13, 100])
def test_chunk_size_does_not_change_events(chunk: int) -> None:
    rng = np.random.default_rng(0)
    p = np.clip(rng.normal(0.3, 0.25, (150, 3)), 0, 1).astype(np.float32)
    ref = feed(p, chunk=150)
    got = feed(p, chunk=chunk)
    assert [(e.phase, e.label, e.onset, e.offset) for e in got] == [(e.phase, e.label, e.onset, e.offset) for e in ref]


def test_open_event_is_closed_at_end_of_stream() -> None:
    ev = feed(track(40, [(20, 40)]), chunk=10)
    assert [e.phase for e in ev] == ["on", "off"]
    assert ev[-1].offset == pytest.approx(40 * HOP)


def test_ignored_classes_never_become_events() -> None:
    assert feed(track(60, [(10, 50)], k=2)) == []  # "Silence"
    assert [e.label for e in feed(track(60, [(10, 50)], k=2), 60, SedConfig(ignore=()))] == ["Silence"] * 2


def test_ignored_classes_take_no_top_k_slot() -> None:
    """Regression: a loud "Silence" score must not push a real event out of the frame's top-k."""
    p = track(60, [(10, 50)], k=0, level=0.6)
    p[:, 2] = 0.95  # "Silence" above everything, all the time
    ev = feed(p, 10, SedConfig(top_k=1))
    assert [e.label for e in ev] == ["Dog", "Dog"]


def test_updates_while_active() -> None:
    ev = feed(track(200, [(10, 190)]), chunk=10, config=SedConfig(update_interval_s=1.0))
    assert [e.phase for e in ev].count("upd") >= 5


@pytest.mark.parametrize("bad", [{"off_ratio": 0.0}, {"min_on_frames": 0}, {"top_k": 0}, {"threshold_scale": 100.0}])
def test_bad_config_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        SedConfig(**bad)


def test_decisions_are_never_earlier_than_the_scores_they_use() -> None:
    """`lat` must include the wait for the model's window: emission >= the scores' ready time."""
    sed = SedStage(LABELS, np.full(len(LABELS), 0.5, np.float32))
    p = track(12, [(3, 12)])
    ev = sed.process(Scores(p, 0.0, 0, 0, HOP, ("Dog", "Speech", "Silence"), ready=0.505))
    assert [e.phase for e in ev] == ["on"]
    assert ev[0].onset == pytest.approx(3 * HOP) and ev[0].emitted == pytest.approx(0.505)
