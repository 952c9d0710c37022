"""An event's direction and class -> the colours of an LED ring (what LED_SET sends).

The ring's geometry comes from the MCU's HELLO: `n_leds`, the azimuth of LED 0 and whether the LED
index grows clockwise or counter-clockwise seen from above (azimuths follow ARCHITECTURE.md: degrees
counter-clockwise from the array's +x axis). A direction between two LEDs lights both, in proportion
to how close it is to each (the nearer one brighter), so the ring shows bearings finer than its pitch.
A class's colour is a fixed hue from its label (the same label always gets the same colour on every
device): hue = CRC-32 of the lower-cased label mod 360, full saturation.
"""

from __future__ import annotations

import colorsys
import math
import zlib

from edge.errors import ConfigError

RGB = tuple[int, int, int]


def _check_ring(n_leds: int) -> None:
    if not isinstance(n_leds, int) or n_leds < 1:
        raise ConfigError(f"LED ring of {n_leds!r} LEDs: needs at least one")


def ring_position(azimuth_deg: float, n_leds: int, led0_azimuth_deg: float = 0.0, clockwise: bool = False) -> float:
    """Fractional LED index in [0, n_leds) at which `azimuth_deg` points."""
    _check_ring(n_leds)
    if not math.isfinite(azimuth_deg):
        raise ConfigError(f"azimuth {azimuth_deg!r}: must be a finite number of degrees")
    delta = azimuth_deg - led0_azimuth_deg
    if clockwise:
        delta = -delta
    return (delta % 360.0) / (360.0 / n_leds) % n_leds


def led_for_azimuth(azimuth_deg: float, n_leds: int, led0_azimuth_deg: float = 0.0, clockwise: bool = False) -> int:
    """The LED nearest to `azimuth_deg`."""
    return round(ring_position(azimuth_deg, n_leds, led0_azimuth_deg, clockwise)) % n_leds


def class_colour(label: str) -> RGB:
    """The fixed, fully saturated colour of a class label."""
    hue = (zlib.crc32(label.strip().lower().encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, 1.0, 1.0)
    return round(r * 255), round(g * 255), round(b * 255)


def parse_colour(text: str) -> RGB:
    """'RRGGBB' or '#RRGGBB' -> (r, g, b); ConfigError quoting it otherwise."""
    s = text.removeprefix("#")
    if len(s) != 6 or any(c not in "0123456789abcdefABCDEF" for c in s):
        raise ConfigError(f"colour {text!r}: expected RRGGBB in hex, e.g. ff8000")
    return int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16)


def direction_frame(
    azimuth_deg: float,
    colour: RGB,
    n_leds: int,
    *,
    led0_azimuth_deg: float = 0.0,
    clockwise: bool = False,
    brightness: int = 255,
) -> list[RGB]:
    """Ring colours showing `azimuth_deg` in `colour` at `brightness` (0-255); every other LED off."""
    if not 0 <= brightness <= 255:
        raise ConfigError(f"brightness {brightness!r}: must be 0-255")
    pos = ring_position(azimuth_deg, n_leds, led0_azimuth_deg, clockwise)
    lo = math.floor(pos)
    frac = pos - lo
    frame: list[RGB] = [(0, 0, 0)] * n_leds
    for index, weight in ((lo % n_leds, 1.0 - frac), ((lo + 1) % n_leds, frac)):
        if n_leds == 1:
            weight = 1.0
        scale = weight * brightness / 255.0
        px = tuple(round(c * scale) for c in colour)
        old = frame[index]
        frame[index] = (max(old[0], px[0]), max(old[1], px[1]), max(old[2], px[2]))
    return frame
