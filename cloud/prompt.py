"""Scene -> chat prompt: an instruction, one line per event, and (few-shot) example lines -> captions.

An event line reads, e.g. (times relative to the window's start, direction in words and degrees):

    t=+3.2s dur=1.1s Dog p=0.87 dir=left(95°) lvl=-20dBFS state=barking(0.80) traits=small

An event still open has `dur=4.0s+ ongoing`; a direction is left out when the event was not localised.
Messages are OpenAI-style chat messages: `[{"role": "system" | "user" | "assistant", "content": str}]`.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.scene import Scene, SceneEvent, sector

ZERO_SHOT = "zero-shot-v1"
FEW_SHOT = "few-shot-v1"
TEMPLATES = (ZERO_SHOT, FEW_SHOT)

Message = dict[str, str]

INSTRUCTION = (
    "You caption what a listening device heard. Each input line is one sound event detected by the device "
    "in a sliding window: t is the onset in seconds after the window's start, dur its duration "
    "('+ ongoing' when it has not ended), then the sound class, the detector's confidence p (0-1), "
    "the direction dir as seen by a listener at the device (azimuth in degrees, counter-clockwise from the "
    "front: +90 is to the left, -90 to the right, 180 behind), the level in dBFS, and optional state and "
    "traits. Write one to three plain sentences describing the scene in time order, as a person would say "
    "it: merge repeated events ('a dog barked three times'), give directions in words, mention every sound "
    "class listed and nothing that is not listed. Do not mention confidences, dBFS or this format."
)


@dataclass(frozen=True)
class Example:
    """A few-shot example: event lines as the device would produce them, and a good caption."""

    lines: tuple[str, ...]
    caption: str
    window_s: float = 30.0


EXAMPLES: tuple[Example, ...] = (
    Example(
        lines=(
            "t=+2.1s dur=0.6s Dog p=0.91 dir=left(88°) lvl=-18dBFS",
            "t=+3.4s dur=0.5s Dog p=0.84 dir=left(92°) lvl=-19dBFS",
            "t=+5.0s dur=0.7s Dog p=0.88 dir=left(85°) lvl=-17dBFS",
            "t=+9.8s dur=6.2s Speech p=0.76 dir=front(4°) lvl=-31dBFS",
        ),
        caption="A dog barked three times to the left over about four seconds, then someone spoke in front "
        "for six seconds.",
    ),
    Example(
        lines=(
            "t=+0.5s dur=22.0s+ ongoing Rain p=0.69 lvl=-35dBFS",
            "t=+12.3s dur=1.4s Thunder p=0.81 dir=back(178°) lvl=-12dBFS",
        ),
        caption="Rain has been falling for over twenty seconds; thunder rumbled behind the device.",
    ),
    Example(
        lines=(
            "t=+4.0s dur=0.2s Knock p=0.72 dir=front-right(-40°) lvl=-22dBFS",
            "t=+4.6s dur=0.2s Knock p=0.70 dir=front-right(-44°) lvl=-23dBFS",
            "t=+7.9s dur=0.4s Door p=0.65 dir=front-right(-42°) lvl=-20dBFS state=closing(0.71)",
        ),
        caption="Someone knocked twice at the front-right, and a few seconds later a door there was closed.",
    ),
    Example(  # states and traits from the edge (edge/states.py, edge/ontology): say them as a person would
        lines=(
            "t=+3.1s dur=4.6s Truck p=0.77 dir=left(84°) lvl=-16dBFS state=accelerating(0.88) traits=heavy",
            "t=+9.0s dur=6.0s Air conditioning p=0.71 dir=back(175°) lvl=-30dBFS state=abnormal(0.83)",
        ),
        caption="A heavy truck accelerated away on the left; behind the device, the air conditioner sounded abnormal.",
    ),
)


def _seconds(x: float) -> str:
    return f"{x:.1f}s"


def event_line(ev: SceneEvent, scene: Scene) -> str:
    """One event -> one prompt line (see the module docstring)."""
    parts = [f"t={ev.t0 - scene.start:+.1f}s"]
    dur = ev.duration(scene.end)
    parts.append(f"dur={_seconds(dur)}+ ongoing" if ev.open else f"dur={_seconds(dur)}")
    parts.append(ev.label)
    parts.append(f"p={ev.p:.2f}")
    where = sector(ev.az)
    if where is not None and ev.az is not None:
        parts.append(f"dir={where}({ev.az:.0f}°)")
    if ev.lvl is not None:
        parts.append(f"lvl={ev.lvl:.0f}dBFS")
    if ev.state is not None:
        parts.append(f"state={ev.state}" + (f"({ev.state_p:.2f})" if ev.state_p is not None else ""))
    if ev.traits:
        parts.append("traits=" + ",".join(ev.traits))
    return " ".join(parts)


def scene_lines(scene: Scene) -> list[str]:
    return [event_line(e, scene) for e in scene.events]


def _user(lines: tuple[str, ...] | list[str], window_s: float) -> str:
    head = f"Events in the last {window_s:.0f} s ({len(lines)}):"
    return "\n".join([head, *lines]) if lines else f"{head}\n(none)"


def build_messages(scene: Scene, template: str = ZERO_SHOT) -> list[Message]:
    """Scene -> chat messages for the named template (`zero-shot-v1` or `few-shot-v1`)."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; expected one of {', '.join(TEMPLATES)}")
    messages: list[Message] = [{"role": "system", "content": INSTRUCTION}]
    if template == FEW_SHOT:
        for ex in EXAMPLES:
            messages.append({"role": "user", "content": _user(ex.lines, ex.window_s)})
            messages.append({"role": "assistant", "content": ex.caption})
    messages.append({"role": "user", "content": _user(scene_lines(scene), scene.window_s)})
    return messages
