"""The caption backend family: `Scene` -> `Caption`. Subclasses write the text; the base class does the rest.

A backend is registered by name in `cloud.backends.BACKENDS`; each one declares its own command-line
flags (`add_arguments`) and builds itself from them (`from_args`), so the CLI never names a backend.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, ClassVar

from cloud.scene import Scene
from edge.errors import TympanError

QUIET = "It is quiet."


class CaptionError(TympanError):
    """A backend could not write a caption and retrying will not help (bad URL, key, model, reply)."""


class CaptionUnavailable(CaptionError):
    """A backend is temporarily unavailable (timeouts, 429, 5xx) after its retries: skip this caption."""


@dataclass(frozen=True)
class Caption:
    """A caption and where it came from: backend, model and prompt template; the window it describes."""

    dev: str
    text: str
    backend: str
    model: str
    template: str
    events: int
    start: float  # window start, device epoch s
    end: float  # window end, device epoch s

    @property
    def window_s(self) -> float:
        return self.end - self.start

    def payload(self) -> dict[str, Any]:
        """The JSON object published on `tympan/v1/<site>/<dev>/caption`."""
        return {
            "v": 1,
            "dev": self.dev,
            "t": round(self.end, 3),
            "text": self.text,
            "backend": self.backend,
            "model": self.model,
            "events": self.events,
            "window_s": round(self.window_s, 3),
            "template": self.template,
        }


class CaptionBackend:
    """Base class: `caption(scene)` handles the empty window and bookkeeping; `_text(scene)` writes."""

    name: ClassVar[str] = ""

    def __init__(self, model: str, template: str) -> None:
        self.model = model
        self.template = template

    def caption(self, scene: Scene) -> Caption:
        text = QUIET if not scene.events else self._text(scene).strip()
        if not text:
            raise CaptionError(f"backend {self.name!r} returned an empty caption")
        return Caption(
            dev=scene.dev,
            text=text,
            backend=self.name,
            model=self.model,
            template=self.template,
            events=len(scene.events),
            start=scene.start,
            end=scene.end,
        )

    def _text(self, scene: Scene) -> str:
        raise NotImplementedError

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this backend's own flags (prefixed with its name) to the `caption` parser."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CaptionBackend:
        raise NotImplementedError
