"""Firmware image bytes <-> header + body, and the boot self-test an MCU bootloader runs on a slot.

    offset size field
      0     4   magic b"TYFW"
      4     2   header version u16 (1)
      6     2   header size u16 (80)
      8     4   body length u32
     12    32   SHA-256 of the body
     44    32   firmware version, ASCII, NUL-padded
     76     4   flags u32 (bit 0: SELFTEST_FAIL, see below)
     80     .   body

All integers little-endian. The boot self-test passes when the magic, header version and size are
right, the slot holds at least header + body length bytes, and the body hashes to the header's SHA-256.
A real firmware then runs its own checks (clocks, microphones) before confirming the slot; the
simulator stands for those with flag bit 0: an image that carries it "boots but fails its self-test",
so rollback can be tested with an image that is otherwise intact.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from edge.errors import InputError

MAGIC = b"TYFW"
HEADER_VERSION = 1
HEADER = struct.Struct("<4sHHI32s32sI")
HEADER_SIZE = HEADER.size
VERSION_BYTES = 32
FLAG_SELFTEST_FAIL = 0x1


@dataclass(frozen=True)
class ImageHeader:
    body_length: int
    body_sha256: bytes
    version: str
    flags: int


def build_image(body: bytes, version: str, *, flags: int = 0) -> bytes:
    """Body + version -> a complete image with its header."""
    raw = version.encode("ascii", "strict") if version.isascii() else b""
    if not raw or len(raw) > VERSION_BYTES or b"\x00" in raw:
        raise InputError(f"firmware version {version!r}: must be 1-{VERSION_BYTES} ASCII characters")
    digest = hashlib.sha256(body).digest()
    head = HEADER.pack(MAGIC, HEADER_VERSION, HEADER_SIZE, len(body), digest, raw.ljust(VERSION_BYTES, b"\0"), flags)
    return head + body


def has_header(data: bytes) -> bool:
    return data[:4] == MAGIC


def parse_header(data: bytes, origin: str = "firmware image") -> ImageHeader:
    """The header of `data`; InputError naming `origin` when it is missing or malformed (the body is not
    checked)."""
    if len(data) < HEADER_SIZE:
        raise InputError(f"{origin}: {len(data)} bytes, shorter than its {HEADER_SIZE}-byte TYFW header")
    magic, hver, hsize, length, digest, version, flags = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise InputError(f"{origin}: magic {magic!r}, expected {MAGIC!r}")
    if hver != HEADER_VERSION or hsize != HEADER_SIZE:
        raise InputError(f"{origin}: header version {hver} size {hsize}, expected {HEADER_VERSION}/{HEADER_SIZE}")
    try:
        text = version.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        raise InputError(f"{origin}: version field is not ASCII") from None
    return ImageHeader(length, digest, text, flags)


def self_test(data: bytes) -> tuple[bool, str]:
    """The boot self-test of a slot's bytes: (passed, reason). Never raises."""
    try:
        head = parse_header(data)
    except InputError as e:
        return False, str(e)
    end = HEADER_SIZE + head.body_length
    if len(data) < end:
        return False, f"image body truncated ({len(data) - HEADER_SIZE} of {head.body_length} bytes)"
    if hashlib.sha256(data[HEADER_SIZE:end]).digest() != head.body_sha256:
        return False, "image body does not match its SHA-256"
    if head.flags & FLAG_SELFTEST_FAIL:
        return False, "firmware self-test failed (SELFTEST_FAIL flag)"
    return True, "ok"


def check_image(data: bytes, origin: str = "firmware image") -> ImageHeader:
    """The header of a complete, self-consistent image; InputError naming `origin` otherwise."""
    head = parse_header(data, origin)
    if len(data) != HEADER_SIZE + head.body_length:
        raise InputError(f"{origin}: {len(data)} bytes, header says {HEADER_SIZE + head.body_length}")
    ok, reason = self_test(data)
    if not ok:
        raise InputError(f"{origin}: {reason}")
    return head
