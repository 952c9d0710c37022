"""The errors of the serial link, all `edge.errors.DeviceError`s (the MCU is a device).

    DeviceError
      LinkError        the port cannot be opened, the MCU does not answer, or the link drops
        FramingError   bytes that are not an intact frame (bad COBS, CRC-32 mismatch, too long)
      ProtocolError    a packet that breaks the protocol (bad version, layout or length)
      NakError         the MCU refused a request (carries its code and detail)
      FlashError       a firmware update failed; the message says which image the MCU now runs
"""

from __future__ import annotations

from edge.errors import DeviceError


class LinkError(DeviceError):
    """The port cannot be opened, the MCU does not answer after every retry, or the link drops."""


class FramingError(LinkError):
    """Bytes that are not an intact frame."""


class ProtocolError(DeviceError):
    """A packet that breaks the protocol."""


class NakError(DeviceError):
    """The MCU answered NAK: `code` (protocol.Nak), `detail` (a u32, e.g. the MCU's flash offset)."""

    def __init__(self, message: str, code: int, detail: int) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class FlashError(DeviceError):
    """A firmware update failed; the message says which image the MCU runs now."""
