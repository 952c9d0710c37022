"""Packet bytes <-> frames on the wire: COBS with a CRC-32 trailer, delimited by 0x00.

    frame = 0x00 | COBS(packet | CRC-32(packet), little-endian u32) | 0x00

- COBS (Cheshire & Baker, "Consistent Overhead Byte Stuffing", IEEE/ACM ToN 1999) removes every 0x00
  from the body, so 0x00 only ever marks a frame boundary and a receiver finds the next frame after
  any amount of garbage. Overhead: one code byte per 254 body bytes, plus one.
- The CRC is CRC-32/ISO-HDLC (the zlib / Ethernet polynomial 0x04C11DB7, reflected, init and final
  xor 0xFFFFFFFF; check value of b"123456789" is 0xCBF43926), over the packet only.
- A frame also *starts* with 0x00: bytes left on the line before it (noise, a half frame from before
  a reset) end there instead of spoiling it. Receivers ignore empty frames.
- A packet holds at most MAX_PACKET bytes; a receiver discards anything longer without buffering it.

`FrameDecoder` takes any byte stream in pieces of any size and returns the packets of the frames whose
COBS structure and CRC are intact; everything else is counted and dropped. It never raises.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from firmware_bridge.errors import FramingError

DELIMITER = 0x00
CRC_BYTES = 4
MAX_PACKET = 2048 + 16
"""Largest packet (header + payload) a frame may carry, in bytes."""


def cobs_overhead(n: int) -> int:
    """Worst-case COBS code bytes added to an `n`-byte body."""
    return n // 254 + 1


MAX_ENCODED = MAX_PACKET + CRC_BYTES + cobs_overhead(MAX_PACKET + CRC_BYTES)
"""Longest COBS body between two delimiters that a receiver accepts."""


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of `data` (zlib's)."""
    return zlib.crc32(data) & 0xFFFFFFFF


_CODE = [bytes((n + 1,)) for n in range(254)]
"""The code byte of a last block of n bytes, pre-built."""


def cobs_encode(data: bytes) -> bytes:
    """`data` -> its COBS encoding (no 0x00 in it; one code byte per run of up to 254 non-zero bytes).

    Works per zero-delimited run (bytes.split), not per byte: each run becomes its full 254-byte blocks
    (code 0xFF, no implied zero) and a last block whose code stands for its length and the zero after it.
    """
    out: list[bytes] = []
    for run in data.split(b"\x00"):
        while len(run) >= 254:
            out.append(b"\xff")
            out.append(run[:254])
            run = run[254:]
        out.append(_CODE[len(run)])
        out.append(run)
    return b"".join(out)


def cobs_decode(data: bytes) -> bytes:
    """The inverse of `cobs_encode`; FramingError for a body with a 0x00 or a code past its end."""
    n = len(data)
    if n == 0:
        raise FramingError("empty COBS body")
    zero = data.find(b"\x00")
    if zero >= 0:
        raise FramingError(f"0x00 inside a COBS body at byte {zero}")
    runs: list[bytes] = []
    blocks: list[bytes] = []
    i = 0
    while i < n:
        code = data[i]
        end = i + code
        if end > n:
            raise FramingError(f"COBS code {code} at byte {i} runs past the end of the body ({n} bytes)")
        blocks.append(data[i + 1 : end])
        i = end
        if code != 0xFF and i < n:  # the block's implied zero ends a run
            runs.append(b"".join(blocks))
            blocks = []
    runs.append(b"".join(blocks))
    return b"\x00".join(runs)


def encode_frame(packet: bytes) -> bytes:
    """One packet -> its frame on the wire (0x00, COBS of packet + CRC-32, 0x00)."""
    if len(packet) > MAX_PACKET:
        raise FramingError(f"packet of {len(packet)} bytes exceeds the {MAX_PACKET}-byte maximum")
    body = packet + crc32(packet).to_bytes(CRC_BYTES, "little")
    return b"\x00" + cobs_encode(body) + b"\x00"


def decode_frame(body: bytes) -> bytes:
    """The COBS body between two delimiters -> its packet; FramingError if malformed or its CRC fails."""
    if len(body) > MAX_ENCODED:
        raise FramingError(f"frame of {len(body)} bytes exceeds the {MAX_ENCODED}-byte maximum")
    raw = cobs_decode(body)
    if len(raw) < CRC_BYTES:
        raise FramingError(f"frame of {len(raw)} bytes is shorter than its CRC")
    packet, trailer = raw[:-CRC_BYTES], raw[-CRC_BYTES:]
    if crc32(packet) != int.from_bytes(trailer, "little"):
        raise FramingError("CRC-32 mismatch")
    if len(packet) > MAX_PACKET:
        raise FramingError(f"packet of {len(packet)} bytes exceeds the {MAX_PACKET}-byte maximum")
    return packet


@dataclass
class DecoderStats:
    """What a `FrameDecoder` has seen: good frames and each kind of rejected one."""

    frames: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    oversize: int = 0
    bytes_in: int = 0

    @property
    def rejected(self) -> int:
        return self.crc_errors + self.cobs_errors + self.oversize


class FrameDecoder:
    """Streaming receiver: bytes in pieces of any size -> the packets of intact frames, in order.

    Bytes are collected until a 0x00; an over-long run is dropped as it arrives (counted once, when its
    delimiter comes) so memory stays bounded by MAX_ENCODED whatever the input.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflow = False
        self.stats = DecoderStats()

    def reset(self) -> None:
        """Forget a partial frame (after reopening a port)."""
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the packets of the frames they complete (possibly none)."""
        self.stats.bytes_in += len(data)
        packets: list[bytes] = []
        start = 0
        n = len(data)
        while start < n:
            end = data.find(b"\x00", start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                if len(self._buf) + len(piece) > MAX_ENCODED:
                    self._overflow = True
                    self._buf.clear()
                else:
                    self._buf += piece
            if end < 0:
                break
            start = end + 1
            self._close(packets)
        return packets

    def _close(self, packets: list[bytes]) -> None:
        if self._overflow:
            self.stats.oversize += 1
            self._overflow = False
            return
        if not self._buf:
            return
        body = bytes(self._buf)
        self._buf.clear()
        try:
            raw = cobs_decode(body)
        except FramingError:
            self.stats.cobs_errors += 1
            return
        if len(raw) < CRC_BYTES or crc32(raw[:-CRC_BYTES]) != int.from_bytes(raw[-CRC_BYTES:], "little"):
            self.stats.crc_errors += 1
            return
        if len(raw) - CRC_BYTES > MAX_PACKET:
            self.stats.oversize += 1
            return
        self.stats.frames += 1
        packets.append(raw[:-CRC_BYTES])
