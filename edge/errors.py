"""The one root exception of Tympan and its kinds.

Every error a user can cause (a bad file, a bad flag, a malformed profile) is raised as a
`TympanError` subclass whose message names the input and the problem. The CLI prints that message
as one line and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class TympanError(Exception):
    """Root of every error Tympan raises on purpose."""


class InputError(TympanError):
    """An input file or stream is missing, unreadable, empty or holds invalid samples."""


class ProfileError(TympanError):
    """A board or array profile is malformed or unknown."""


class DeviceError(TympanError):
    """An audio device is unknown or cannot be opened."""


class ModelError(TympanError):
    """A model file is missing, malformed, or does not match the frontend."""


class ConfigError(TympanError):
    """A configuration value is out of bounds or unknown."""


class TokenError(TympanError):
    """An event token (JSON or packed) is malformed, truncated or of an unknown version."""


class MqttError(TympanError):
    """The MQTT broker refused us, cannot be reached, or a URL is malformed."""
