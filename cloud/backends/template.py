"""Scene -> caption by rules: built in, deterministic, no network.

Events of one class are merged into one sentence ("A dog barked 3 times over 4 seconds to the left."),
sentences follow the classes' first onsets ("Then ..." or, when one overlaps the previous, "Meanwhile, ..."),
directions are given in words (none when the event was not localised), states and traits are added when
the tokens carry them. Every class in the window is named (by the first part of its display name) and
no other class is.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from cloud.backends.base import CaptionBackend
from cloud.scene import Scene, SceneEvent, sector

TEMPLATE_ID = "rules-v1"
MODEL_ID = "tympan-template-1"

DIRECTION_WORDS = {
    "front": "in front",
    "front-left": "to the front-left",
    "left": "to the left",
    "back-left": "behind to the left",
    "back": "behind",
    "back-right": "behind to the right",
    "right": "to the right",
    "front-right": "to the front-right",
}

# Classes heard as a continuous texture rather than a countable thing: no article, "could be heard".
MASS_NOUNS = frozenset(
    (
        "speech", "child speech", "laughter", "singing", "whistling", "breathing", "snoring", "screaming",
        "crying", "music", "wind", "wind noise (microphone)", "rain", "water", "thunder", "fire", "crackle",
        "traffic noise", "rail transport", "idling", "hum", "white noise", "pink noise", "silence",
        "clapping", "children playing", "accelerating",
    )
)  # fmt: skip
# A verb that fits a class better than "was heard" (the subject still names the class).
VERBS = {
    "Dog": "barked",
    "Cat": "meowed",
    "Doorbell": "rang",
    "Ringtone": "rang",
    "Church bell": "rang",
    "Thunder": "rumbled",
    "Alarm": "went off",
    "Car alarm": "went off",
    "Alarm clock": "went off",
    "Fire alarm": "went off",
    "Smoke detector, smoke alarm": "went off",
    "Siren": "wailed",
}


OVERLAP_WORDS = ("Meanwhile, ", "At the same time, ", "Also, ")  # starts a sentence that overlaps the last one


def class_name(label: str) -> str:
    """Display name -> the words a caption uses: its first comma-separated part, lower case."""
    return label.split(",")[0].strip().lower()


def direction_words(az: float | None) -> str | None:
    """Azimuth (degrees, counter-clockwise from the front) -> "to the left", "behind", ...; None if unknown."""
    s = sector(az)
    return None if s is None else DIRECTION_WORDS[s]


def seconds(x: float) -> str:
    """1.0 -> "1 second", 2.345 -> "2.3 seconds", 14.6 -> "15 seconds"."""
    v = f"{x:.1f}".removesuffix(".0") if x < 9.95 else f"{x:.0f}"
    return f"{v} second" if v == "1" else f"{v} seconds"


# States of the ontology (edge/ontology/ontology.json) that read better as a phrase of their own.
STATE_WORDS = {
    "left-to-right": "moving from left to right",
    "right-to-left": "moving from right to left",
    "abnormal": "sounding abnormal",
    "slam": "slamming",
    "bark": "barking",
    "growl": "growling",
    "whine": "whining",
    "cough": "coughing",
    "shout": "shouting",
    "scream": "screaming",
}


def state_words(state: str) -> str:
    """A state name -> the words after the sentence: "accelerating", "moving from left to right",
    "sounding impulsive" (a state that is not a verb is something the source sounds)."""
    if state in STATE_WORDS:
        return STATE_WORDS[state]
    return state if state.endswith("ing") else f"sounding {state}"


def times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


@dataclass(frozen=True)
class _Group:
    label: str
    events: tuple[SceneEvent, ...]  # by onset

    @property
    def first(self) -> float:
        return self.events[0].t0


def _subject(label: str) -> tuple[str, bool]:
    name = class_name(label)
    mass = name in MASS_NOUNS
    if mass:
        return name, True
    return ("an " if name[:1] in "aeiou" else "a ") + name, False


def _sentence(g: _Group, now: float) -> str:
    subject, mass = _subject(g.label)
    traits = list(dict.fromkeys(t for e in g.events for t in e.traits))
    if traits:
        subject += f" ({', '.join(traits)})"
    verb = VERBS.get(g.label, "could be heard" if mass else "was heard")
    words = [subject, verb]
    n = len(g.events)
    end = max(e.end(now) for e in g.events)
    ongoing = any(e.open for e in g.events)
    if n > 1:
        words.append(f"{times(n)} over {seconds(end - g.first)}")
    dirs = list(dict.fromkeys(d for d in (direction_words(e.az) for e in g.events) if d is not None))
    if dirs:
        words.append(", then ".join(dirs))
    if n == 1:
        words.append(f"for {seconds(end - g.first)}" + (" so far" if ongoing else ""))
    # one phrase per event ("steady and passing"); different phrases in time order ("... then ...")
    states = list(
        dict.fromkeys(
            " and ".join(state_words(st) for st in dict.fromkeys((e.state, *e.more_states)))
            for e in g.events
            if e.state
        )
    )
    text = " ".join(words)
    if states:
        text += ", " + " then ".join(states)
    if ongoing and n > 1:
        text += ", one of them still going on"
    return text + "."


def _capital(s: str) -> str:
    return s[:1].upper() + s[1:]


def describe(scene: Scene) -> str:
    """Scene -> sentences (see the module docstring); "" for an empty scene."""
    by_label: dict[str, list[SceneEvent]] = {}
    for e in sorted(scene.events, key=lambda e: (e.t0, e.label, e.id)):
        by_label.setdefault(e.label, []).append(e)
    groups = sorted((_Group(k, tuple(v)) for k, v in by_label.items()), key=lambda g: (g.first, g.label))
    out: list[str] = []
    overlaps = 0
    for i, g in enumerate(groups):
        s = _sentence(g, scene.end)
        if i == 0:
            out.append(_capital(s))
        elif g.first < max(e.end(scene.end) for e in groups[i - 1].events):
            out.append(OVERLAP_WORDS[overlaps % len(OVERLAP_WORDS)] + s)
            overlaps += 1
        else:
            out.append("Then " + s)
            overlaps = 0
    return " ".join(out)


class TemplateBackend(CaptionBackend):
    """Rule-based captions (see the module docstring)."""

    name = "template"

    def __init__(self) -> None:
        super().__init__(model=MODEL_ID, template=TEMPLATE_ID)

    def _text(self, scene: Scene) -> str:
        return describe(scene)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TemplateBackend:
        return cls()
