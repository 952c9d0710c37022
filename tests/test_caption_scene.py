"""Scene windows, prompts and the captioning rules (pure: no broker, no network)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from cloud.backends import QUIET, TemplateBackend
from cloud.captioner import Captioner, caption_topic, events_topic, parse_events_topic
from cloud.prompt import EXAMPLES, FEW_SHOT, INSTRUCTION, ZERO_SHOT, build_messages, event_line
from cloud.scene import SECTORS_4, SceneWindow, sector
from edge.errors import ConfigError, TokenError

T = 1_700_000_000.0  # an epoch second for synthetic scenes


@dataclass
class Tokens:
    """Synthetic decoded tokens of one device, with a per-device `seq` (shared by the caption tests)."""

    dev: str = "dev-a"
    seq: itertools.count = field(default_factory=itertools.count)

    def token(self, id: int, ph: str, lbl: str, t0: float, t1: float | None = None, **extra: Any) -> dict[str, Any]:
        tok: dict[str, Any] = {
            "v": 1,
            "dev": self.dev,
            "seq": next(self.seq),
            "id": id,
            "ph": ph,
            "t0": round(t0, 3),
            "t1": None if t1 is None else round(t1, 3),
            "lat": 250,
            "lbl": lbl,
            "mid": "/m/test",
            "c": 0,
            "p": 0.8,
            "az": None,
            "el": None,
            "dsd": None,
            "trk": None,
            "lvl": -20.0,
            "m": "test-model",
        }
        tok.update(extra)
        return tok

    def event(self, id: int, lbl: str, t0: float, t1: float | None, **extra: Any) -> list[dict[str, Any]]:
        """The phases of one event: on, (upd), off when it has ended."""
        out = [self.token(id, "on", lbl, t0, **extra)]
        if t1 is None or t1 - t0 > 1.0:
            out.append(self.token(id, "upd", lbl, t0, lat=500, **extra))
        if t1 is not None:
            out.append(self.token(id, "off", lbl, t0, t1, lat=round((t1 - t0) * 1000) + 200, **extra))
        return out


# --- scene window ------------------------------------------------------------------------------------------


def test_phases_merge_into_one_event_and_an_open_event_has_no_t1() -> None:
    g, w = Tokens(), SceneWindow("dev-a")
    for tok in g.event(7, "Dog", T + 1, T + 2.5, az=80.0, p=0.6):
        assert w.feed(tok)
    for tok in g.event(8, "Speech", T + 3, None, az=10.0):
        w.feed(tok)
    dog, speech = w.events()
    assert (dog.label, dog.t0, dog.t1, dog.tokens, dog.az) == ("Dog", T + 1, T + 2.5, 3, 80.0)
    assert speech.t1 is None and speech.open and speech.tokens == 2


def test_merge_keeps_highest_p_loudest_level_newest_direction_and_state() -> None:
    g, w = Tokens(), SceneWindow("dev-a")
    w.feed(g.token(1, "on", "Dog", T, p=0.9, lvl=-30.0, az=10.0, st="growling", sp=0.6))
    w.feed(g.token(1, "upd", "Dog", T, p=0.5, lvl=-12.0, az=None, lat=900, tr=["small"]))
    w.feed(g.token(1, "off", "Dog", T, T + 2, p=0.7, lvl=-25.0, az=100.0, lat=2100, st="barking", tr={"distant": True}))
    (e,) = w.events()
    assert (e.p, e.lvl, e.az, e.state, e.state_p) == (0.9, -12.0, 100.0, "barking", None)
    assert e.traits == ("small", "distant")


def test_duplicates_by_seq_are_ignored_and_do_not_change_the_window() -> None:
    g, w = Tokens(), SceneWindow("dev-a")
    tok = g.token(1, "on", "Dog", T)
    assert w.feed(tok)
    v = w.version
    assert not w.feed(dict(tok))
    assert not w.feed(dict(tok, p=0.99))  # same (dev, seq): a redelivery, whatever it says
    assert w.version == v and w.events()[0].p == 0.8
    assert not w.feed(Tokens(dev="other").token(1, "on", "Cat", T))  # another device's token


def test_a_restarted_device_counting_seq_from_0_again_is_not_a_duplicate() -> None:
    w = SceneWindow("dev-a")
    assert w.feed(Tokens().token(1, "on", "Dog", T))
    assert w.feed(Tokens().token(1, "on", "Cat", T + 5))  # seq 0 again, id 1 again, later
    assert [e.label for e in w.events()] == ["Dog", "Cat"]
    w.feed(Tokens().token(1, "upd", "Dog", T + 1))  # seq 0, id 1, onset: not a redelivery of either
    assert [(e.label, e.t0, e.tokens) for e in w.events()] == [("Dog", T, 1), ("Dog", T + 1, 1), ("Cat", T + 5, 1)]


def test_out_of_order_phases_give_the_same_event() -> None:
    g = Tokens()
    toks = g.event(3, "Knock", T, T + 3, az=-45.0)
    a, b = SceneWindow("dev-a"), SceneWindow("dev-a")
    for tok in toks:
        a.feed(tok)
    for tok in reversed(toks):
        b.feed(tok)
    assert a.events() == b.events()


def test_events_older_than_the_window_age_out_and_open_ones_stay_while_updated() -> None:
    g, w = Tokens(), SceneWindow("dev-a", window_s=10.0)
    for tok in g.event(1, "Dog", T, T + 1):
        w.feed(tok)
    for tok in g.event(2, "Rain", T, None):
        w.feed(tok)
    w.feed(g.token(3, "on", "Cat", T + 8))
    assert [e.label for e in w.events()] == ["Dog", "Rain", "Cat"]  # now = T+8.25
    w.feed(g.token(2, "upd", "Rain", T, lat=15_000))  # Rain still going at T+15; Dog ended at T+1
    v = w.version
    w.prune()
    assert [e.label for e in w.events()] == ["Rain", "Cat"] and w.version == v + 1


def test_window_follows_the_device_clock_when_it_is_off() -> None:
    g, w = Tokens(), SceneWindow("dev-a", window_s=10.0)
    local = T + 3600.0  # the device's clock is an hour behind ours
    w.feed(g.token(1, "on", "Dog", T, lat=0), received=local)
    assert w.snapshot(local + 5).end == pytest.approx(T + 5, abs=1e-6)
    assert [e.label for e in w.events(local + 9)] == ["Dog"]
    assert w.events(local + 11) == []
    w.feed(g.token(2, "on", "Cat", T + 1, lat=0), received=local + 30)  # delivered 29 s late (a spool)
    assert w.now(local + 30) == pytest.approx(T + 30, abs=1e-6)  # a late token does not pull the window back
    assert w.events(local + 30) == []  # and it is older than the 10 s window


def test_signature_changes_with_labels_and_coarse_direction_only() -> None:
    g, w = Tokens(), SceneWindow("dev-a")
    w.feed(g.token(1, "on", "Dog", T, az=80.0))
    s1 = w.signature()
    assert s1 == {("Dog", "left")}
    w.feed(g.token(1, "upd", "Dog", T, az=100.0, lat=500))  # still "left"
    assert w.signature() == s1
    w.feed(g.token(1, "upd", "Dog", T, az=170.0, lat=700))
    assert w.signature() == {("Dog", "back")}
    w.feed(g.token(2, "on", "Speech", T + 1))
    assert w.signature() == {("Dog", "back"), ("Speech", None)}


@pytest.mark.parametrize(
    ("az", "name"),
    [(0.0, "front"), (22.4, "front"), (22.6, "front-left"), (45.0, "front-left"), (90.0, "left"),
     (135.0, "back-left"), (180.0, "back"), (-179.9, "back"), (-135.0, "back-right"), (-90.0, "right"),
     (-45.0, "front-right"), (-10.0, "front"), (None, None), (math.nan, None)],
)  # fmt: skip
def test_sectors_counter_clockwise_from_the_front(az: float | None, name: str | None) -> None:
    assert sector(az) == name


def test_quarter_sectors() -> None:
    assert [sector(a, SECTORS_4) for a in (0, 44, 46, 134, 136, 180, -134, -136, -44, -46)] == [
        "front", "front", "left", "left", "back", "back", "right", "back", "front", "right"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [{"seq": "1"}, {"seq": None}, {"lbl": ""}, {"lbl": 3}, {"ph": "start"}, {"t0": "x"}, {"id": None}, {"az": "left"}],
)
def test_tokens_the_window_cannot_use_are_refused(bad: dict[str, Any]) -> None:
    tok = Tokens().token(1, "on", "Dog", T)
    tok.update(bad)
    with pytest.raises(TokenError):
        SceneWindow("dev-a").feed(tok)


def test_window_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_s"):
        SceneWindow("dev-a", window_s=0)


# --- prompts ------------------------------------------------------------------------------------------------


def _scene() -> tuple[SceneWindow, Tokens]:
    g, w = Tokens(), SceneWindow("dev-a")
    for tok in g.event(1, "Dog", T + 3.2, T + 4.3, az=95.0, p=0.87, lvl=-20.0, st="barking", sp=0.8):
        w.feed(tok)
    for tok in g.event(2, "Rain", T + 1.0, None, az=None, lvl=-35.4):
        w.feed(tok)
    return w, g


def test_event_line_format() -> None:
    w, _ = _scene()
    scene = w.snapshot(T + 10.0)  # the window is [T-20, T+10]
    rain, dog = scene.events
    assert event_line(dog, scene) == "t=+23.2s dur=1.1s Dog p=0.87 dir=left(95°) lvl=-20dBFS state=barking(0.80)"
    assert event_line(rain, scene) == "t=+21.0s dur=9.0s+ ongoing Rain p=0.80 lvl=-35dBFS"


def test_zero_shot_and_few_shot_messages() -> None:
    w, _ = _scene()
    scene = w.snapshot(T + 10.0)
    zero = build_messages(scene, ZERO_SHOT)
    assert [m["role"] for m in zero] == ["system", "user"]
    assert zero[0]["content"] == INSTRUCTION
    assert zero[1]["content"].splitlines()[1:] == [event_line(e, scene) for e in scene.events]
    few = build_messages(scene, FEW_SHOT)
    assert [m["role"] for m in few] == ["system"] + ["user", "assistant"] * len(EXAMPLES) + ["user"]
    assert few[-1] == zero[-1]
    assert few[2]["content"] == EXAMPLES[0].caption
    with pytest.raises(ValueError, match="template"):
        build_messages(scene, "three-shot")


# --- when to caption ----------------------------------------------------------------------------------------


def test_topics() -> None:
    assert events_topic("home") == "tympan/v1/home/+/events"
    assert events_topic("+", share="workers") == "$share/workers/tympan/v1/+/+/events"
    assert caption_topic("home", "pi-1") == "tympan/v1/home/pi-1/caption"
    assert parse_events_topic("tympan/v1/home/pi-1/events") == ("home", "pi-1")
    for bad in ("tympan/v1/home/pi-1/caption", "tympan/v2/home/pi-1/events", "tympan/v1/home/events"):
        with pytest.raises(TokenError):
            parse_events_topic(bad)


def test_caption_at_once_on_scene_change_then_every_s_while_the_window_changes() -> None:
    g = Tokens()
    c = Captioner(TemplateBackend(), window_s=30.0, every_s=10.0)
    local = T  # device and local clocks agree
    (due,) = c.feed("home", g.token(1, "on", "Dog", T, az=90.0, lat=0), local)
    assert due.topic == "tympan/v1/home/dev-a/caption" and due.caption is not None
    assert due.caption.text.startswith("A dog barked to the left")
    assert c.feed("home", g.token(2, "on", "Dog", T + 1, az=92.0, lat=0), local + 1) == []  # same signature
    assert c.tick(local + 5) == []  # changed, but captioned 5 s ago
    (due,) = c.tick(local + 10)
    assert due.caption is not None and due.caption.events == 2
    assert c.tick(local + 20.5) == []  # nothing changed since
    (due,) = c.feed("home", g.token(3, "on", "Speech", T + 21, lat=0), local + 21)  # a new class: at once
    assert due.caption is not None and "speech" in due.caption.text
    (due,) = c.tick(local + 80)  # everything aged out: the scene changed to silence
    assert due.caption is not None and due.caption.text == QUIET and due.caption.events == 0
    assert c.tick(local + 100) == []


def test_scene_changes_closer_than_min_gap_are_captioned_together() -> None:
    g = Tokens()
    c = Captioner(TemplateBackend(), every_s=10.0, min_gap_s=1.0)
    assert len(c.feed("home", g.token(1, "on", "Dog", T, lat=0), T)) == 1
    assert c.feed("home", g.token(2, "on", "Cat", T + 0.2, lat=0), T + 0.2) == []
    assert c.feed("home", g.token(3, "on", "Cow", T + 0.4, lat=0), T + 0.4) == []
    assert c.tick(T + 0.9) == []
    (due,) = c.tick(T + 1.0)
    assert due.caption is not None and due.caption.events == 3


def test_captioner_refuses_bad_settings_and_tokens() -> None:
    with pytest.raises(ConfigError, match="--every"):
        Captioner(TemplateBackend(), every_s=0)
    with pytest.raises(ConfigError, match="--window"):
        Captioner(TemplateBackend(), window_s=-1)
    with pytest.raises(TokenError):
        Captioner(TemplateBackend()).feed("home", {"dev": None}, T)
