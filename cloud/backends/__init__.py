"""Caption backends by name: `template` (built in, deterministic) and `openai` (chat-completions HTTP)."""

from __future__ import annotations

from cloud.backends.base import QUIET, Caption, CaptionBackend, CaptionError, CaptionUnavailable
from cloud.backends.openai import OpenAIBackend
from cloud.backends.template import TemplateBackend
from edge.errors import ConfigError

BACKENDS: dict[str, type[CaptionBackend]] = {
    TemplateBackend.name: TemplateBackend,
    OpenAIBackend.name: OpenAIBackend,
}


def backend_class(name: str) -> type[CaptionBackend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown caption backend {name!r}; expected one of {', '.join(BACKENDS)}") from None


__all__ = [
    "BACKENDS",
    "QUIET",
    "Caption",
    "CaptionBackend",
    "CaptionError",
    "CaptionUnavailable",
    "OpenAIBackend",
    "TemplateBackend",
    "backend_class",
]
