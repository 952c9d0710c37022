"""Packets of the companion-MCU protocol <-> bytes, and the payload of every command (spec:
hardware/protocol.md; this module and that page must agree).

    packet = version u8 | type u8 | seq u16 | command u8 | payload      (all integers little-endian)

Pure and synchronous: no I/O here. The host side (`client.py`) and the simulator (`simulator.py`) use
the same encoders and decoders, so a layout change is made once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from firmware_bridge.errors import ProtocolError
from firmware_bridge.framing import MAX_PACKET

PROTOCOL_VERSION = 1

HEADER = struct.Struct("<BBHB")
"""version, type, seq, command (5 bytes)."""
MAX_PAYLOAD = MAX_PACKET - HEADER.size
MAX_CHUNK = 2048
"""Largest flash chunk (data bytes of one FLASH_CHUNK) the protocol allows; an MCU reports its own."""
DEFAULT_CHUNK = 1024
MAX_AUDIO_BYTES = 2048
"""Largest sample block of one AUDIO packet (channels x samples x 2 bytes)."""
SHA256_BYTES = 32
MAX_TEXT = 63
"""Longest string field (versions, board name, config keys), in bytes of ASCII."""

# Timings (seconds). The host waits ACK_TIMEOUT_S plus the time the request and its answer take on
# the wire at the link's baud rate, then sends the same request again (same seq), RETRIES times.
ACK_TIMEOUT_S = 0.25
RETRIES = 5
ERASE_BYTES_PER_S = 100_000
"""Slowest slot erase an MCU may have (internal flash erases 128 KiB sectors in about 1 s): FLASH_BEGIN,
which may erase the slot first, gets size / this on top of the ACK timeout."""
HASH_BYTES_PER_S = 500_000
"""Slowest SHA-256 an MCU may have (software SHA-256 on a Cortex-M4 runs at 1-5 MB/s): FLASH_VERIFY,
which hashes the image, gets size / this on top of the ACK timeout."""
BOOT_TIMEOUT_S = 15.0
"""From a COMMIT/REBOOT ACK until the rebooted MCU must answer HELLO."""
REBOOT_DELAY_S = 0.05
"""The MCU waits this long after the ACK of COMMIT/REBOOT before resetting, so the ACK leaves."""
DEFAULT_BAUD = 921600
SLOT_INACTIVE = 0xFF
"""FLASH_BEGIN's slot value meaning "whichever slot is not running"."""


class PacketType(IntEnum):
    REQUEST = 1
    ACK = 2
    NAK = 3
    EVENT = 4
    """Unsolicited, never acknowledged (AUDIO frames, BOOTED)."""


class Command(IntEnum):
    HELLO = 0x01
    PING = 0x02
    REBOOT = 0x03
    GET_CONFIG = 0x10
    SET_CONFIG = 0x11
    LIST_CONFIG = 0x12
    LED_SET = 0x20
    LED_GET = 0x21
    STREAM_START = 0x30
    STREAM_STOP = 0x31
    AUDIO = 0x32
    FLASH_BEGIN = 0x40
    FLASH_CHUNK = 0x41
    FLASH_STATUS = 0x42
    FLASH_VERIFY = 0x43
    FLASH_COMMIT = 0x44
    BOOT_STATUS = 0x45
    BOOTED = 0x46


class Nak(IntEnum):
    BAD_VERSION = 1
    UNKNOWN_COMMAND = 2
    BAD_PAYLOAD = 3
    BAD_KEY = 4
    OUT_OF_RANGE = 5
    BAD_OFFSET = 6
    HASH_MISMATCH = 7
    BAD_SLOT = 8
    NOT_READY = 9
    TOO_LARGE = 10


class BootResult(IntEnum):
    OK = 0
    ROLLED_BACK = 1
    """The slot tried last failed its boot self-test; the previous slot runs."""
    NO_IMAGE = 2
    """No slot holds an image that passes self-test: serial recovery mode (flashing still works)."""
    FALLBACK = 3
    """The active slot's image no longer passes self-test; the other slot runs."""


class FlashState(IntEnum):
    IDLE = 0
    RECEIVING = 1
    VERIFIED = 2


def command_name(command: int) -> str:
    """"FLASH_CHUNK" for 0x41; "command 0x7f" for a code the protocol does not define."""
    return Command(command).name if command in set(Command) else f"command 0x{command:02x}"


def slot_name(slot: int) -> str:
    return {0: "A", 1: "B"}.get(slot, f"#{slot}")


@dataclass(frozen=True)
class Packet:
    type: PacketType
    seq: int
    command: int
    payload: bytes = b""

    def encode(self) -> bytes:
        if len(self.payload) > MAX_PAYLOAD:
            raise ProtocolError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        return HEADER.pack(PROTOCOL_VERSION, int(self.type), self.seq & 0xFFFF, int(self.command)) + self.payload

    @staticmethod
    def decode(data: bytes) -> Packet:
        """Bytes of an intact frame -> Packet; ProtocolError for a short header, version or type."""
        if len(data) < HEADER.size:
            raise ProtocolError(f"packet of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
        version, ptype, seq, command = HEADER.unpack_from(data)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"protocol version {version}, expected {PROTOCOL_VERSION}")
        try:
            kind = PacketType(ptype)
        except ValueError:
            raise ProtocolError(f"unknown packet type {ptype}") from None
        return Packet(kind, seq, command, bytes(data[HEADER.size :]))


# --- payload building blocks ---------------------------------------------------------------------
class Reader:
    """Reads little-endian fields off a payload; ProtocolError when it runs short or has bytes left."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError(f"{self.what}: payload of {len(self.data)} bytes is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[int, ...]:
        s = struct.Struct("<" + fmt)
        return tuple(int(v) for v in s.unpack(self.take(s.size)))

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u16(self) -> int:
        return self.unpack("H")[0]

    def u32(self) -> int:
        return self.unpack("I")[0]

    def i32(self) -> int:
        return self.unpack("i")[0]

    def text(self) -> str:
        n = self.u8()
        raw = self.take(n)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"{self.what}: a string field is not ASCII") from None

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError(f"{self.what}: {len(self.data) - self.pos} unexpected trailing byte(s)")


def text(value: str, what: str = "string") -> bytes:
    """A string field: u8 length + ASCII bytes (at most MAX_TEXT)."""
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise ProtocolError(f"{what} {value!r} is not ASCII") from None
    if len(raw) > MAX_TEXT:
        raise ProtocolError(f"{what} {value!r} is longer than {MAX_TEXT} bytes")
    return bytes([len(raw)]) + raw


def nak_payload(code: Nak, detail: int = 0, message: str = "") -> bytes:
    return struct.pack("<BI", int(code), detail & 0xFFFFFFFF) + message.encode("ascii", "replace")[:200]


def parse_nak(payload: bytes) -> tuple[int, int, str]:
    """NAK payload -> (code, detail, message)."""
    r = Reader(payload, "NAK")
    code, detail = r.unpack("BI")
    return code, detail, r.rest().decode("ascii", "replace")


# --- HELLO ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello:
    """What the MCU says about itself (HELLO's answer)."""

    protocol_version: int
    firmware_version: str
    board: str
    uid: str
    active_slot: int
    boot_result: int
    channels: int
    sample_rate: int
    frame_samples: int
    n_leds: int
    led0_azimuth_deg: float
    leds_clockwise: bool
    max_chunk: int

    _FIXED = struct.Struct("<BBBBIHHhBH")

    def encode(self) -> bytes:
        return (
            self._FIXED.pack(
                self.protocol_version,
                self.active_slot,
                self.boot_result,
                self.channels,
                self.sample_rate,
                self.frame_samples,
                self.n_leds,
                round(self.led0_azimuth_deg * 100),
                int(self.leds_clockwise),
                self.max_chunk,
            )
            + text(self.firmware_version, "firmware version")
            + text(self.board, "board")
            + text(self.uid, "uid")
        )

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        r = Reader(payload, "HELLO")
        pv, slot, boot, ch, rate, frame, n_leds, led0, cw, chunk = r.unpack("BBBBIHHhBH")
        fw, board, uid = r.text(), r.text(), r.text()
        r.end()
        return cls(pv, fw, board, uid, slot, boot, ch, rate, frame, n_leds, led0 / 100.0, bool(cw), chunk)


# --- config --------------------------------------------------------------------------------------
def config_entry(key: str, value: int) -> bytes:
    return text(key, "config key") + struct.pack("<i", value)


def parse_config_entry(payload: bytes, what: str) -> tuple[str, int]:
    r = Reader(payload, what)
    key = r.text()
    value = r.i32()
    r.end()
    return key, value


@dataclass(frozen=True)
class ConfigItem:
    key: str
    value: int
    minimum: int
    maximum: int


def encode_config_list(items: list[ConfigItem]) -> bytes:
    out = bytearray([len(items)])
    for it in items:
        out += text(it.key, "config key") + struct.pack("<iii", it.value, it.minimum, it.maximum)
    return bytes(out)


def decode_config_list(payload: bytes) -> list[ConfigItem]:
    r = Reader(payload, "LIST_CONFIG")
    items = []
    for _ in range(r.u8()):
        key = r.text()
        value, lo, hi = r.unpack("iii")
        items.append(ConfigItem(key, value, lo, hi))
    r.end()
    return items


# --- LEDs ----------------------------------------------------------------------------------------
def encode_leds(pixels: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(struct.pack("<H", len(pixels)))
    for px in pixels:
        if len(px) != 3 or any(not 0 <= c <= 255 for c in px):
            raise ProtocolError(f"LED colour {px!r} is not three values 0-255")
        out += bytes(px)
    return bytes(out)


def decode_leds(payload: bytes) -> list[tuple[int, int, int]]:
    r = Reader(payload, "LED")
    n = r.u16()
    raw = r.take(3 * n)
    r.end()
    return [(raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]) for i in range(n)]


# --- audio ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamInfo:
    sample_rate: int
    channels: int
    frame_samples: int
    first_seq: int

    _S = struct.Struct("<IBHI")

    def encode(self) -> bytes:
        return self._S.pack(self.sample_rate, self.channels, self.frame_samples, self.first_seq)

    @classmethod
    def decode(cls, payload: bytes) -> StreamInfo:
        r = Reader(payload, "STREAM_START")
        out = cls(*r.unpack("IBHI"))
        r.end()
        return out


AUDIO_HEADER = struct.Struct("<IBH")
"""frame seq u32, channels u8, samples per channel u16; then int16 LE samples interleaved [n][channels]."""


def encode_audio(frame_seq: int, interleaved: bytes, channels: int) -> bytes:
    n = len(interleaved) // (2 * channels)
    return AUDIO_HEADER.pack(frame_seq & 0xFFFFFFFF, channels, n) + interleaved


def decode_audio(payload: bytes) -> tuple[int, int, int, bytes]:
    """AUDIO payload -> (frame seq, channels, samples per channel, int16 LE interleaved bytes)."""
    r = Reader(payload, "AUDIO")
    seq, channels, n = r.unpack("IBH")
    if channels < 1:
        raise ProtocolError("AUDIO: zero channels")
    data = r.take(2 * channels * n)
    r.end()
    return seq, channels, n, data


# --- flashing ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlashBegin:
    size: int
    sha256: bytes
    slot: int
    version: str

    def encode(self) -> bytes:
        return struct.pack("<I", self.size) + self.sha256 + bytes([self.slot]) + text(self.version, "version")

    @classmethod
    def decode(cls, payload: bytes) -> FlashBegin:
        r = Reader(payload, "FLASH_BEGIN")
        size = r.u32()
        digest = r.take(SHA256_BYTES)
        slot = r.u8()
        version = r.text()
        r.end()
        return cls(size, digest, slot, version)


@dataclass(frozen=True)
class FlashStatus:
    """The MCU's staging area: which transfer it holds and how far it got (`offset`)."""

    state: int
    slot: int
    size: int
    offset: int
    sha256: bytes
    version: str

    def encode(self) -> bytes:
        return (
            struct.pack("<BBII", self.state, self.slot, self.size, self.offset)
            + self.sha256
            + text(self.version, "version")
        )

    @classmethod
    def decode(cls, payload: bytes) -> FlashStatus:
        r = Reader(payload, "FLASH_STATUS")
        state, slot, size, offset = r.unpack("BBII")
        digest = r.take(SHA256_BYTES)
        version = r.text()
        r.end()
        return cls(state, slot, size, offset, digest, version)


@dataclass(frozen=True)
class SlotInfo:
    valid: bool
    size: int
    sha256: bytes
    version: str


@dataclass(frozen=True)
class BootStatus:
    """Which slot runs, what the last boot decided, how many boots so far, and what each slot holds."""

    active_slot: int
    boot_result: int
    tried_slot: int
    boot_count: int
    slots: tuple[SlotInfo, SlotInfo]

    def encode(self) -> bytes:
        out = bytearray(struct.pack("<BBBI", self.active_slot, self.boot_result, self.tried_slot, self.boot_count))
        for s in self.slots:
            out += struct.pack("<BI", int(s.valid), s.size) + s.sha256 + text(s.version, "version")
        return bytes(out)

    @classmethod
    def decode(cls, payload: bytes) -> BootStatus:
        r = Reader(payload, "BOOT_STATUS")
        active, result, tried, boots = r.unpack("BBBI")
        slots = []
        for _ in range(2):
            valid, size = r.unpack("BI")
            digest = r.take(SHA256_BYTES)
            slots.append(SlotInfo(bool(valid), size, digest, r.text()))
        r.end()
        return cls(active, result, tried, boots, (slots[0], slots[1]))

    @property
    def running(self) -> SlotInfo:
        return self.slots[self.active_slot] if self.active_slot in (0, 1) else SlotInfo(False, 0, bytes(32), "")
