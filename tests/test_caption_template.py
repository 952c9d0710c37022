"""The template captioner: every class in the window is named and no other, directions in words, repeats."""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.backends import QUIET, TemplateBackend
from cloud.backends.template import direction_words, seconds
from cloud.scene import Scene, SceneWindow
from edge.errors import TokenError
from tests.test_caption_scene import T, Tokens

LABELS_CSV = Path(__file__).resolve().parents[1] / "edge" / "models" / "default" / "labels.csv"
STATES = ("calm", "agitated", "loud", "faint")
TRAITS = ("small", "large", "distant", "near")


def spoken(label: str) -> str:
    """What a caption must say for a class: its display name's first comma-separated part."""
    return label.split(",")[0].strip().lower()


def _mentions(text: str, label: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(spoken(label))}(?![\w-])", text.lower()) is not None


def _vocabulary() -> list[str]:
    """The model's classes that a word search can tell apart: none is a whole word of another."""
    with LABELS_CSV.open() as f:
        labels = [r["display_name"] for r in csv.DictReader(f)]
    names = {lb: spoken(lb) for lb in labels if "(" not in lb and lb != "Silence"}
    return sorted(
        lb
        for lb, n in names.items()
        if not any(m != n and re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", m) for m in names.values())
        and n not in STATES + TRAITS
    )


VOCAB = _vocabulary()


def test_vocabulary_is_large_enough() -> None:
    assert len(VOCAB) > 80 and {"Dog", "Cat", "Rain", "Knock"} <= set(VOCAB)
    assert "Speech" not in VOCAB  # "Child speech, kid speaking" holds the word


def _random_scene(rng: random.Random, n_events: int, labels: list[str]) -> tuple[Scene, list[dict]]:
    g, w = Tokens(), SceneWindow("dev-a", window_s=30.0)
    toks = []
    for i in range(n_events):
        t0 = T + rng.uniform(0, 28)
        t1 = None if rng.random() < 0.2 else t0 + rng.uniform(0.1, 5)
        extra: dict = {"az": None if rng.random() < 0.3 else round(rng.uniform(-179.9, 180), 1)}
        if rng.random() < 0.3:
            extra["st"] = rng.choice(STATES)
        if rng.random() < 0.2:
            extra["tr"] = [rng.choice(TRAITS)]
        toks += g.event(i, rng.choice(labels), t0, t1, **extra)
    for tok in toks:
        w.feed(tok)
    return w.snapshot(T + 30.0), toks


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_events=st.integers(0, 12), n_labels=st.integers(1, 6))
def test_every_class_in_the_window_is_named_and_no_other(seed: int, n_events: int, n_labels: int) -> None:
    rng = random.Random(seed)
    labels = rng.sample(VOCAB, n_labels)
    scene, _ = _random_scene(rng, n_events, labels)
    text = TemplateBackend().caption(scene).text
    present = {e.label for e in scene.events}
    for label in VOCAB:
        assert _mentions(text, label) == (label in present), (label, text)
    if not present:
        assert text == QUIET
    else:
        first = min(scene.events, key=lambda e: (e.t0, e.label)).label
        assert _mentions(text.split(". ")[0], first), text  # time order: the first class opens the caption
        assert text[0].isupper() and text.endswith(".")


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_caption_does_not_depend_on_token_order(seed: int) -> None:
    rng = random.Random(seed)
    scene, toks = _random_scene(rng, 8, rng.sample(VOCAB, 4))
    w = SceneWindow("dev-a", window_s=30.0)
    for tok in rng.sample(toks, len(toks)):
        w.feed(tok)
    assert TemplateBackend().caption(w.snapshot(T + 30.0)).text == TemplateBackend().caption(scene).text


@pytest.mark.parametrize(
    ("az", "words"),
    [(0.0, "in front"), (90.0, "to the left"), (-90.0, "to the right"), (180.0, "behind"), (-180.0, "behind"),
     (45.0, "to the front-left"), (-45.0, "to the front-right"), (135.0, "behind to the left"),
     (-135.0, "behind to the right"), (15.0, "in front"), (100.0, "to the left"), (None, None)],
)  # fmt: skip
def test_direction_words(az: float | None, words: str | None) -> None:
    assert direction_words(az) == words


def _caption(*events: tuple[str, float, float | None, dict], now: float = T + 30.0) -> str:
    g, w = Tokens(), SceneWindow("dev-a")
    for i, (label, t0, t1, extra) in enumerate(events):
        for tok in g.event(i, label, T + t0, None if t1 is None else T + t1, **extra):
            w.feed(tok)
    return TemplateBackend().caption(w.snapshot(now)).text


def test_repeats_of_a_class_are_merged_with_a_count_and_a_span() -> None:
    left = {"az": 92.0}
    text = _caption(("Dog", 1.0, 1.5, left), ("Dog", 2.5, 3.0, left), ("Dog", 4.4, 5.0, left))
    assert text == "A dog barked 3 times over 4 seconds to the left."
    assert _caption(("Knock", 1.0, 1.2, {}), ("Knock", 1.5, 1.7, {})) == "A knock was heard twice over 0.7 seconds."


def test_single_events_durations_directions_states_traits_and_order() -> None:
    text = _caption(
        ("Speech", 2.0, 8.0, {"az": 5.0, "st": "calm", "tr": ["adult"]}),
        ("Car alarm", 10.0, 12.5, {"az": -170.0}),
        ("Rain", 11.0, None, {}),
    )
    assert text == (
        "Speech (adult) could be heard in front for 6 seconds, sounding calm. "
        "Then a car alarm went off behind for 2.5 seconds. "
        "Meanwhile, rain could be heard for 19 seconds so far."
    )


def test_further_states_of_an_event_join_its_first_state_and_weak_ones_are_left_out() -> None:
    """`sx` (further states with their probabilities): those at or above 0.5 join `st` with "and"."""
    text = _caption(
        ("Car", 1.0, 4.0, {"az": 90.0, "st": "accelerating", "sp": 0.9,
                           "sx": [["approaching", 0.8], ["impulsive", 0.2]], "tr": ["light"]}),
    )  # fmt: skip
    assert text == "A car (light) was heard to the left for 3 seconds, accelerating and approaching."
    g = Tokens()
    tok = g.token(0, "on", "Car", T + 1.0, sx="fast")
    with pytest.raises(TokenError, match="'sx'"):
        SceneWindow("dev-a").feed(tok)


def test_a_class_heard_from_two_directions_names_both_in_order() -> None:
    text = _caption(("Cat", 1.0, 2.0, {"az": 90.0}), ("Cat", 5.0, 6.0, {"az": -90.0}))
    assert text == "A cat meowed twice over 5 seconds to the left, then to the right."


def test_no_direction_words_without_an_azimuth() -> None:
    text = _caption(("Cough", 1.0, 1.4, {"az": None}))
    assert text == "A cough was heard for 0.4 seconds."


def test_an_empty_window_is_quiet() -> None:
    assert TemplateBackend().caption(SceneWindow("dev-a").snapshot(T)).text == QUIET == "It is quiet."


def test_caption_records_where_it_came_from() -> None:
    g, w = Tokens(), SceneWindow("dev-a", window_s=20.0)
    w.feed(g.token(1, "on", "Dog", T, lat=0))
    c = TemplateBackend().caption(w.snapshot(T + 1))
    assert (c.backend, c.model, c.template, c.events) == ("template", "tympan-template-1", "rules-v1", 1)
    assert (c.start, c.end) == (T - 19, T + 1)
    p = c.payload()
    assert set(p) == {"v", "dev", "t", "text", "backend", "model", "events", "window_s", "template"}
    assert (p["v"], p["dev"], p["t"], p["window_s"]) == (1, "dev-a", T + 1, 20.0)


@pytest.mark.parametrize(("x", "words"), [(1.0, "1 second"), (0.44, "0.4 seconds"), (2.0, "2 seconds"),
                                          (9.96, "10 seconds"), (14.6, "15 seconds")])  # fmt: skip
def test_seconds_in_words(x: float, words: str) -> None:
    assert seconds(x) == words
