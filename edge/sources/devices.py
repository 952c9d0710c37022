"""A device name, index or array profile -> the PortAudio input device to open and its capture rate.

sounddevice (and so PortAudio) is imported only here and only when asked for, so reading files never
needs PortAudio. Every failure is a `DeviceError` that says what is available or what to install.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import DeviceError, InputError
from edge.sources.resample import design_filter

if TYPE_CHECKING:
    from boards.profiles import ArrayProfile

PORTAUDIO_PACKAGE = "libportaudio2"


def import_sounddevice() -> ModuleType:
    """The `sounddevice` module, or DeviceError saying what to install when it cannot load."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as err:  # sounddevice raises OSError when the PortAudio library is missing
        raise DeviceError(
            f"cannot use audio devices: the PortAudio library could not be loaded ({err}); "
            f"install it with `apt-get install {PORTAUDIO_PACKAGE}` (Debian/Ubuntu/Raspberry Pi OS)"
        ) from None
    except ImportError as err:
        raise DeviceError(
            f"cannot use audio devices: the Python package sounddevice is missing ({err}); "
            "install it with `pip install sounddevice`"
        ) from None


@dataclass(frozen=True)
class InputDevice:
    """A PortAudio device that can capture (`max_input_channels` > 0)."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    default_samplerate: float

    def describe(self) -> str:
        return f"{self.index} {self.name!r} ({self.hostapi}, {self.max_input_channels} in)"


def list_input_devices(sd: ModuleType) -> list[InputDevice]:
    """Every PortAudio device with at least one input channel, in PortAudio's order."""
    hostapis: Sequence[Mapping[str, Any]] = sd.query_hostapis()
    devices: Sequence[Mapping[str, Any]] = sd.query_devices()
    found = []
    for index, dev in enumerate(devices):
        if int(dev["max_input_channels"]) <= 0:
            continue
        api = int(dev.get("hostapi", -1))
        api_name = str(hostapis[api]["name"]) if 0 <= api < len(hostapis) else "?"
        found.append(
            InputDevice(
                index=index,
                name=str(dev["name"]),
                hostapi=api_name,
                max_input_channels=int(dev["max_input_channels"]),
                default_samplerate=float(dev["default_samplerate"]),
            )
        )
    return found


def default_input_index(sd: ModuleType) -> int | None:
    """PortAudio's default input device, or None when it has none."""
    try:
        dev = sd.query_devices(kind="input")
    except (sd.PortAudioError, ValueError):
        return None
    index = int(dev.get("index", -1))
    return index if index >= 0 else None


def available(devices: Sequence[InputDevice]) -> str:
    """The input devices, for an error message."""
    if not devices:
        return "PortAudio sees no input device"
    return "available input devices: " + "; ".join(d.describe() for d in devices)


def find_input_device(
    devices: Sequence[InputDevice],
    device: str | int | None,
    array: ArrayProfile,
    default_index: int | None = None,
) -> InputDevice:
    """Pick the device to capture `array` from.

    `device`: an index (int, or a string of digits), or a case-insensitive substring of the device
    name; None means the array's `device_match`, or else PortAudio's default input device. A
    substring matching several devices picks the one whose whole name it is, or raises. The device
    must offer at least `array.channels` input channels.
    """
    chosen: InputDevice | None
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device.strip())
    if isinstance(device, int) and not isinstance(device, bool):
        chosen = next((d for d in devices if d.index == device), None)
        if chosen is None:
            raise DeviceError(f"no input device with index {device}; {available(devices)}")
    elif device is None and not array.device_match:
        chosen = next((d for d in devices if d.index == default_index), None)
        if chosen is None:
            raise DeviceError(
                f"no device given, the array {array.name!r} names none (device_match) and there is no "
                f"default input device; {available(devices)}"
            )
    else:
        pattern = device if isinstance(device, str) else str(array.device_match)
        whence = "" if isinstance(device, str) else f" (the device_match of the array {array.name!r})"
        needle = pattern.casefold()
        matches = [d for d in devices if needle in d.name.casefold()]
        exact = [d for d in matches if d.name.casefold() == needle]
        if len(exact) == 1:
            matches = exact
        if not matches:
            raise DeviceError(f"no input device matches {pattern!r}{whence}; {available(devices)}")
        if len(matches) > 1:
            raise DeviceError(
                f"several input devices match {pattern!r}{whence}: "
                + "; ".join(d.describe() for d in matches)
                + "; give the index or more of the name"
            )
        chosen = matches[0]
    if chosen.max_input_channels < array.channels:
        raise DeviceError(
            f"input device {chosen.describe()} has {chosen.max_input_channels} input channel"
            f"{'s' if chosen.max_input_channels != 1 else ''} but the array {array.name!r} needs "
            f"{array.channels}"
        )
    return chosen


def choose_rate(
    sd: ModuleType,
    device: InputDevice,
    channels: int,
    dtype: str,
    wanted: int | None = None,
    preferred: int | None = None,
) -> int:
    """The capture rate: `wanted` if given (and only it); else the first the device takes of
    `preferred` (the array profile's rate), SAMPLE_RATE and the device's default rate (the source
    resamples to SAMPLE_RATE). DeviceError if none of them opens."""
    if wanted is not None:
        candidates = [wanted]
    else:
        candidates = [r for r in (preferred, SAMPLE_RATE) if r is not None]
        candidates.append(round(device.default_samplerate))
    errors = []
    for rate in dict.fromkeys(candidates):
        try:
            sd.check_input_settings(device=device.index, channels=channels, dtype=dtype, samplerate=rate)
        except (sd.PortAudioError, ValueError) as err:
            errors.append(f"{rate} Hz: {err}")
            continue
        try:
            design_filter(rate, SAMPLE_RATE)
        except InputError as err:
            errors.append(f"{rate} Hz: {err}")
            continue
        return int(rate)
    raise DeviceError(
        f"input device {device.describe()} cannot capture {channels} channels of {dtype} ({'; '.join(errors)})"
    )
