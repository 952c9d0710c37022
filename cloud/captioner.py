"""Decoded tokens + clock ticks -> captions due: when and for which device to caption (pure, no I/O).

`Captioner` keeps one `SceneWindow` per (site, device). A caption is due at once when a device's scene
signature (labels + coarse directions) changes (at most once per `min_gap_s`), and otherwise every
`every_s` seconds while its window keeps changing. The caller feeds tokens and ticks with its clock and
publishes what comes back; MQTT lives in `cloud.cli_caption`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloud.backends.base import Caption, CaptionBackend, CaptionUnavailable
from cloud.scene import DEFAULT_WINDOW_S, SceneWindow, Signature
from edge.errors import ConfigError, TokenError
from edge.token_codec import TOPIC_PREFIX

DEFAULT_EVERY_S = 10.0
DEFAULT_MIN_GAP_S = 1.0  # scene changes closer than this are captioned together (e.g. a direction flapping)
TOPIC_ROOT = TOPIC_PREFIX


def events_topic(site: str = "+", share: str | None = None) -> str:
    """The subscription: `tympan/v1/<site>/+/events`, or `$share/<group>/...` for a shared subscription."""
    topic = f"{TOPIC_ROOT}/{site}/+/events"
    return f"$share/{share}/{topic}" if share else topic


def caption_topic(site: str, dev: str) -> str:
    return f"{TOPIC_ROOT}/{site}/{dev}/caption"


def parse_events_topic(topic: str) -> tuple[str, str]:
    """`tympan/v1/<site>/<device>/events` -> (site, device); TokenError for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] != "events" or not all(parts[2:4]):
        raise TokenError(f"not an events topic: {topic!r}")
    return parts[2], parts[3]


@dataclass
class _Device:
    site: str
    window: SceneWindow
    captioned_version: int = -1
    captioned_signature: Signature | None = None
    captioned_at: float = -math.inf  # local clock


@dataclass(frozen=True)
class Due:
    """A caption to publish (where, and what), or why the backend could not write it this time."""

    topic: str
    caption: Caption | None
    error: str | None = None


@dataclass
class Captioner:
    """Scene windows of every device heard, and the rules for when each one is captioned."""

    backend: CaptionBackend
    window_s: float = DEFAULT_WINDOW_S
    every_s: float = DEFAULT_EVERY_S
    min_gap_s: float = DEFAULT_MIN_GAP_S
    _devices: dict[tuple[str, str], _Device] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for name, v in (("--window", self.window_s), ("--every", self.every_s)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number of seconds, got {v!r}")
        if not (math.isfinite(self.min_gap_s) and self.min_gap_s >= 0):
            raise ConfigError(f"min_gap_s must be 0 or more seconds, got {self.min_gap_s!r}")

    @property
    def devices(self) -> list[tuple[str, str]]:
        return sorted(self._devices)

    def feed(self, site: str, token: Mapping[str, Any], now: float) -> list[Due]:
        """Merge one decoded token (received at local time `now`); captions due because the scene changed.

        Raises `TokenError` for a token the scene window cannot use (missing or mistyped keys).
        """
        dev = token.get("dev")
        if not isinstance(dev, str) or not dev:
            raise TokenError(f"token key 'dev' must be a non-empty string, got {dev!r}")
        d = self._devices.get((site, dev))
        if d is None:
            d = self._devices[(site, dev)] = _Device(site, SceneWindow(dev, self.window_s))
        if not d.window.feed(token, received=now):
            return []
        return self._check(d, now, periodic=False)

    def tick(self, now: float) -> list[Due]:
        """Captions due at local time `now`: scenes that changed, or windows that changed `every_s` ago."""
        out: list[Due] = []
        for key in sorted(self._devices):
            out += self._check(self._devices[key], now, periodic=True)
        return out

    def _check(self, d: _Device, now: float, periodic: bool) -> list[Due]:
        d.window.prune(now)
        sig = d.window.signature(now)
        since = now - d.captioned_at
        changed = sig != d.captioned_signature and since >= self.min_gap_s
        if not changed and not (periodic and d.window.version != d.captioned_version and since >= self.every_s):
            return []
        topic = caption_topic(d.site, d.window.dev)
        d.captioned_signature, d.captioned_at = sig, now
        try:
            caption = self.backend.caption(d.window.snapshot(now))
        except CaptionUnavailable as e:
            d.captioned_version = -1  # try again after `every_s`, not at every tick
            return [Due(topic, None, str(e))]
        d.captioned_version = d.window.version
        return [Due(topic, caption)]
