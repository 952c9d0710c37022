"""Tracking: known angular velocities found, ids stable, birth and death; events carry trk / az / az1."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from boards.profiles import load_array
from edge.errors import ConfigError, TokenError
from edge.inference import Model
from edge.messages import Bearing, Block, Event
from edge.pipeline import EdgePipeline
from edge.token_codec import decode_json, decode_packed, encode_json, encode_packed
from edge.tokens import TokenBuilder, build_birth
from edge.tracking import Tracker, TrackerConfig, wrap
from tests.scenes import FS, ang_err, unit

HOP = 0.2


def bearing(az: float, el: float | None = None, power: float = 1.0) -> Bearing:
    return Bearing(azimuth=float(wrap(az)), elevation=el, spread=10.0, power=power)


def test_moving_source_velocity_found_and_id_stable_across_180() -> None:
    """A source at 25 deg/s from 150 deg: it crosses +/-180 and keeps one id; its velocity is found."""
    rng = np.random.default_rng(0)
    tr = Tracker()
    ids, velocities = set(), []
    for k in range(60):
        t = k * HOP
        out = tr.update(t, [bearing(150.0 + 25.0 * t + rng.normal(0, 2.0))])
        if k >= 3:
            assert len(out) == 1, f"t={t}: {out}"
            ids.add(out[0].id)
        if k >= 20:
            velocities.append(out[0].velocity)
            assert ang_err(out[0].azimuth, 150.0 + 25.0 * t) <= 5.0
    assert ids == {0}
    assert float(np.median(velocities)) == pytest.approx(25.0, abs=2.0)


def test_static_and_moving_sources_keep_their_own_ids() -> None:
    rng = np.random.default_rng(1)
    tr = Tracker()
    for k in range(40):
        t = k * HOP
        out = tr.update(t, [bearing(-60.0 - 10.0 * t + rng.normal(0, 2)), bearing(90.0 + rng.normal(0, 2), power=0.7)])
    by_id = {o.id: o for o in out}
    assert len(by_id) == 2
    moving = min(by_id.values(), key=lambda o: o.velocity)
    static = max(by_id.values(), key=lambda o: o.velocity)
    assert moving.velocity == pytest.approx(-10.0, abs=2.0) and abs(static.velocity) <= 2.0
    assert ang_err(static.azimuth, 90.0) <= 3.0


def test_birth_needs_confirmation_and_death_follows_silence() -> None:
    cfg = TrackerConfig()
    tr = Tracker(cfg)
    assert tr.update(0.0, [bearing(30.0)]) == ()  # one bearing is not a track yet
    assert tr.live and not tr.live[0].confirmed
    tr.update(HOP, [bearing(31.0)])
    out = tr.update(2 * HOP, [bearing(30.5)])
    assert len(out) == 1 and out[0].confirmed and out[0].hits == cfg.confirm_hits
    first = out[0].id
    t = 2 * HOP
    while t + HOP < 2 * HOP + cfg.max_coast_s - 1e-6:  # coasting: still there
        t += HOP
        assert [o.id for o in tr.update(t, [])] == [first]
    assert tr.update(t + 2 * HOP, []) == ()  # dead after max_coast_s without a bearing
    for k in range(3):  # a new source later is a new track with a new id
        out = tr.update(t + (3 + k) * HOP, [bearing(-100.0)])
    assert len(out) == 1 and out[0].id != first


def test_weak_clutter_starts_no_track_and_strong_clutter_does_not_steal_a_track() -> None:
    rng = np.random.default_rng(2)
    tr = Tracker()
    for k in range(50):  # bearings weaker than birth_min_power never start a track
        assert tr.update(k * HOP, [bearing(rng.uniform(-180, 180), power=0.3)]) == ()
    assert tr.live == ()
    ids = set()
    for k in range(50, 120):  # a real source at 45 deg among full-power random bearings
        t = k * HOP
        out = tr.update(t, [bearing(45.0 + rng.normal(0, 2)), bearing(rng.uniform(-180, 180))])
        if k >= 53:  # the source's track: the oldest one on its direction (clutter may pass through)
            real = [o for o in out if ang_err(o.azimuth, 45.0) <= 6.0 and abs(o.velocity) < 12.0]
            assert real, f"t={t}: {out}"
            ids.add(min(real, key=lambda o: o.born).id)
    assert len(ids) == 1


def test_elevation_is_tracked_for_3d_bearings() -> None:
    tr = Tracker()
    for k in range(20):
        t = k * HOP
        out = tr.update(t, [bearing(40.0, el=-20.0 + 10.0 * t)])
    assert out[0].elevation is not None and out[0].elevation == pytest.approx(-20.0 + 10.0 * 19 * HOP, abs=3.0)


@pytest.mark.parametrize(
    "bad",
    [{"meas_sigma_deg": 0.0}, {"max_gate_deg": 0.0}, {"confirm_hits": 0}, {"max_coast_s": -1.0},
     {"birth_min_power": 2.0}, {"merge_deg": 180.0}, {"tentative_coast_s": 0.0}],
)  # fmt: skip
def test_bad_tracker_config_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        TrackerConfig(**bad)


def test_time_going_backwards_is_rejected() -> None:
    tr = Tracker()
    tr.update(1.0, [])
    with pytest.raises(ConfigError, match="backwards"):
        tr.update(0.5, [])


# --- the pipeline: a source moving round a planar array ----------------------------------------------------
@pytest.fixture(scope="module")
def model() -> Model:
    return Model(None)


def moving_scene(mics: np.ndarray, az0: float, rate: float, start: float, stop: float, seconds: float) -> np.ndarray:
    """Noise arriving from az0 + rate * t (t stream seconds) between `start` and `stop`, exact per-block
    fractional delays (20 ms blocks: the direction changes by rate * 20 ms per block)."""
    rng = np.random.default_rng(5)
    n = int(seconds * FS)
    sig = np.zeros(n)
    sig[int(start * FS) : int(stop * FS)] = rng.normal(0, 0.1, int(stop * FS) - int(start * FS))
    m = np.asarray(mics) - np.mean(mics, axis=0)
    out = np.zeros((len(m), n))
    blk = FS // 50
    pad = 256
    f = np.fft.rfftfreq(blk + 2 * pad, 1 / FS)
    for i in range(0, n, blk):
        t = (i + blk / 2) / FS
        seg = np.zeros(blk + 2 * pad)
        lo, hi = max(0, i - pad), min(n, i + blk + pad)
        seg[lo - (i - pad) : hi - (i - pad)] = sig[lo:hi]
        delays = -(m @ unit(az0 + rate * t)) / 343.0
        spec = np.fft.rfft(seg)
        for c, d in enumerate(delays):
            y = np.fft.irfft(spec * np.exp(-2j * np.pi * f * d), len(seg))
            out[c, i : min(n, i + blk)] = y[pad : pad + min(blk, n - i)]
    return (out + rng.normal(0, 1e-3, out.shape)).astype(np.float32)


def feed(pipe: EdgePipeline, x: np.ndarray, size: int) -> None:
    for k, i in enumerate(range(0, x.shape[1], size)):
        pipe.process(Block(x[:, i : i + size], i / FS, k, FS))


def event(onset: float, offset: float, az: float) -> Event:
    return Event(id=7, phase="off", label="Noise", mid="/m/096m7z", code=0, p=0.9, onset=onset, offset=offset,
                 emitted=offset + 0.3, seq=0, level_dbfs=-20.0,
                 bearings=(Bearing(azimuth=az, elevation=None, spread=20.0, power=1.0),))  # fmt: skip


def test_pipeline_tracks_a_moving_source_and_events_get_start_and_end_azimuth(model: Model) -> None:
    array = load_array("respeaker-6mic-hat")
    x = moving_scene(array.mics, -30.0, 20.0, start=1.0, stop=5.0, seconds=6.0)
    pipe = EdgePipeline(model, array)
    feed(pipe, x, 1600)
    hist = [(t, trs) for t, trs in pipe._track_hist if 2.0 <= t <= 4.8 and trs]
    assert hist, "no track while the source moved"
    ids = {tr.id for _, trs in hist for tr in trs if tr.confirmed}
    assert len(ids) == 1, f"the moving source changed track ids: {ids}"
    speeds = [tr.velocity for _, trs in hist for tr in trs if tr.confirmed]
    assert float(np.median(speeds)) == pytest.approx(20.0, abs=4.0)
    ev = pipe._attach(event(1.5, 4.5, az=10.0))
    assert ev.track == next(iter(ids))
    assert ev.azimuth_end is not None
    assert ang_err(ev.bearings[0].azimuth, -30.0 + 20.0 * 1.5) <= 8.0  # start of the event
    assert ang_err(ev.azimuth_end, -30.0 + 20.0 * 4.5) <= 8.0  # its end
    tok = TokenBuilder("dev-1", model.id, wall_start=1.0e9).build(ev)
    assert tok["trk"] == ev.track and tok["az1"] == pytest.approx(ev.azimuth_end, abs=0.05)


def test_static_source_event_has_a_track_and_no_end_azimuth(model: Model) -> None:
    array = load_array("respeaker-4mic-hat")
    x = moving_scene(array.mics, 120.0, 0.0, start=0.5, stop=3.5, seconds=4.0)
    pipe = EdgePipeline(model, array)
    feed(pipe, x, 1600)
    ev = pipe._attach(event(1.0, 3.0, az=120.0))
    assert ev.track is not None and ev.azimuth_end is None
    assert ang_err(ev.bearings[0].azimuth, 120.0) <= 5.0


def test_tracks_do_not_depend_on_the_block_size(model: Model) -> None:
    array = load_array("respeaker-4mic-hat")
    x = moving_scene(array.mics, 60.0, -15.0, start=0.5, stop=3.0, seconds=3.5)
    hists = []
    for size in (160, 16000):
        pipe = EdgePipeline(model, array)
        feed(pipe, x, size)
        hists.append([(round(t, 3), [(tr.id, tr.azimuth, tr.confirmed) for tr in trs]) for t, trs in pipe._track_hist])
    assert hists[0] == hists[1]


def test_tokens_carry_trk_and_json_only_az1() -> None:
    ev = event(1.0, 2.0, az=10.0)
    ev = Event(**{**ev.__dict__, "track": 513, "azimuth_end": -170.04})
    tok = TokenBuilder("dev-1", "m-1", wall_start=1.0e9).build(ev)
    assert tok["trk"] == 513 and tok["az1"] == -170.0
    assert decode_json(encode_json(tok))["az1"] == -170.0
    birth = build_birth("dev-1", "site", _Model(), None, "0.1.0", t=1.0)
    back = decode_packed(encode_packed(tok), birth)
    assert back["trk"] == 513 and "az1" not in back  # the v1 packed layout is frozen: az1 is JSON only
    for bad in (-180.0, 181.0, "north", True):
        with pytest.raises(TokenError, match="az1"):
            decode_json(json.dumps({**tok, "az1": bad}))


@dataclass(frozen=True)
class _Label:
    index: int = 0
    mid: str = "/m/096m7z"
    name: str = "Noise"


@dataclass(frozen=True)
class _Model:
    id: str = "m-1"
    sha256: str = "0" * 64
    labels: tuple[_Label, ...] = (_Label(),)
