"""The host side of the companion-MCU protocol over a serial port (pyserial).

`BridgeClient` sends one request at a time and waits for its answer: the ACK or NAK with the same
sequence number. When none comes within the timeout it sends the same packet again (same seq, so the
MCU answers a duplicate from its cache instead of doing it twice), RETRIES times, then raises
LinkError. Answers to older sequence numbers (late duplicates) are ignored; unsolicited packets
(AUDIO frames, BOOTED) are queued while it waits. Every session starts with HELLO, which also clears
the MCU's duplicate cache.

Errors: LinkError (port, timeouts, link lost), NakError (the MCU refused: code, detail), ProtocolError
(an answer that does not parse) - all `edge.errors.DeviceError`s.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from firmware_bridge import protocol as P
from firmware_bridge.errors import LinkError, NakError, ProtocolError
from firmware_bridge.framing import FrameDecoder, encode_frame

log = logging.getLogger(__name__)

READ_POLL_S = 0.01
"""pyserial read timeout: how long one read waits for a first byte."""
RTT_KEPT = 1000
"""Round-trip times kept in LinkStats (the most recent)."""
AUDIO_QUEUE_FRAMES = 2000
"""AUDIO frames held while nobody reads them (20 s of 10 ms frames); older ones are dropped, counted."""


@dataclass
class LinkStats:
    """What happened on the link since the client opened: the numbers to diagnose it by."""

    requests: int = 0
    retries: int = 0
    timeouts: int = 0
    naks: int = 0
    stale_answers: int = 0
    bad_packets: int = 0
    events: int = 0
    audio_frames: int = 0
    audio_overflow: int = 0
    bytes_out: int = 0
    rtt_s: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=RTT_KEPT))


@dataclass(frozen=True)
class AudioFrame:
    """One AUDIO packet: `samples` int16 [n, channels] as the MCU sent them; `seq` its frame number."""

    seq: int
    samples: npt.NDArray[np.int16]


def open_serial(port: str, baud: int) -> Any:
    """Open `port` raw 8N1 at `baud`; LinkError naming it when that fails."""
    import serial

    if not os.path.exists(port) and "://" not in port:
        raise LinkError(f"{port}: no such serial port")
    try:
        ser = serial.Serial(port, baudrate=baud, timeout=READ_POLL_S, write_timeout=5.0, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        raise LinkError(f"{port}: cannot open at {baud} baud ({e})") from None
    return ser


class BridgeClient:
    """A session with the MCU on `port`. Use as a context manager; `hello` holds what it said.

    `ack_timeout`: seconds to wait for an answer beyond its time on the wire; `retries`: resends
    before LinkError. `transport`: an already open pyserial-like object (read/write/in_waiting/close).
    """

    def __init__(
        self,
        port: str,
        *,
        baud: int = P.DEFAULT_BAUD,
        ack_timeout: float = P.ACK_TIMEOUT_S,
        retries: int = P.RETRIES,
        transport: Any = None,
    ) -> None:
        if not ack_timeout > 0:
            raise LinkError(f"ack timeout {ack_timeout!r}: must be > 0 s")
        if retries < 0:
            raise LinkError(f"retries {retries!r}: must be >= 0")
        self.port = port
        self.baud = baud
        self.ack_timeout = ack_timeout
        self.retries = retries
        self._ser = transport
        self._decoder = FrameDecoder()
        self._seq = int.from_bytes(os.urandom(2), "little")
        self._audio: collections.deque[AudioFrame] = collections.deque(maxlen=AUDIO_QUEUE_FRAMES)
        self._inbox: collections.deque[bytes] = collections.deque()  # decoded, not yet looked at
        self.booted: P.BootStatus | None = None
        self.stats = LinkStats()
        self.hello: P.Hello | None = None

    # --- session ----------------------------------------------------------------------------------
    def open(self, *, greet: bool = True) -> BridgeClient:
        if self._ser is None:
            self._ser = open_serial(self.port, self.baud)
        try:
            self._ser.reset_input_buffer()
        except Exception:
            pass
        self._decoder.reset()
        self._inbox.clear()
        if greet:
            try:
                self.say_hello()
            except BaseException:
                self.close()
                raise
        return self

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:
                pass
            self._ser = None

    def __enter__(self) -> BridgeClient:
        return self.open() if self.hello is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def decoder_stats(self) -> Any:
        return self._decoder.stats

    # --- the request/answer exchange --------------------------------------------------------------
    def request(self, command: int, payload: bytes = b"", *, timeout: float | None = None) -> bytes:
        """Send `command` and return its ACK payload; NakError if refused, LinkError if unanswered."""
        name = P.command_name(command)
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        frame = encode_frame(P.Packet(P.PacketType.REQUEST, seq, command, payload).encode())
        wire_s = (len(frame) + 256) * 10.0 / self.baud
        wait = (self.ack_timeout if timeout is None else timeout) + wire_s
        self.stats.requests += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                log.debug("%s: no answer to %s seq %d, retry %d", self.port, name, seq, attempt)
            sent = time.monotonic()
            self._write(frame)
            answer = self._await(seq, sent + wait)
            if answer is None:
                self.stats.timeouts += 1
                continue
            self.stats.rtt_s.append(time.monotonic() - sent)
            if answer.command != command:
                raise ProtocolError(f"{self.port}: answer to {name} is for command 0x{answer.command:02x}")
            if answer.type == P.PacketType.NAK:
                self.stats.naks += 1
                code, detail, message = P.parse_nak(answer.payload)
                why = P.Nak(code).name if code in set(P.Nak) else f"code {code}"
                raise NakError(f"{self.port}: MCU refused {name}: {why}: {message}", code, detail)
            return answer.payload
        raise LinkError(
            f"{self.port}: no answer to {name} after {self.retries + 1} tries "
            f"({wait * 1000:.0f} ms each): is the MCU connected and at {self.baud} baud?"
        )

    def _write(self, data: bytes) -> None:
        assert self._ser is not None, "client is not open"
        try:
            self._ser.write(data)
            self._ser.flush()
        except Exception as e:
            raise LinkError(f"{self.port}: link lost while sending ({e})") from None
        self.stats.bytes_out += len(data)

    def _read_some(self) -> bytes:
        assert self._ser is not None, "client is not open"
        try:
            n = self._ser.in_waiting
            data: bytes = self._ser.read(n or 1)
        except Exception as e:
            raise LinkError(f"{self.port}: link lost while receiving ({e})") from None
        return data

    def _await(self, seq: int | None, deadline: float) -> P.Packet | None:
        """Read until the answer to `seq` arrives (returned) or `deadline` passes (None).

        With `seq` None, return after the first unsolicited packet or at the deadline.
        """
        while True:
            if not self._inbox:
                data = self._read_some()
                if data:
                    self._inbox.extend(self._decoder.feed(data))
            while self._inbox:
                raw = self._inbox.popleft()
                try:
                    pkt = P.Packet.decode(raw)
                except ProtocolError as e:
                    self.stats.bad_packets += 1
                    log.debug("%s: ignoring packet: %s", self.port, e)
                    continue
                if pkt.type == P.PacketType.EVENT:
                    self._on_event(pkt)
                    if seq is None:
                        return pkt
                elif pkt.type in (P.PacketType.ACK, P.PacketType.NAK):
                    if seq is not None and pkt.seq == seq:
                        return pkt
                    self.stats.stale_answers += 1
            if time.monotonic() >= deadline:
                return None

    def _on_event(self, pkt: P.Packet) -> None:
        self.stats.events += 1
        if pkt.command == P.Command.AUDIO:
            try:
                fseq, channels, n, data = P.decode_audio(pkt.payload)
            except ProtocolError:
                self.stats.bad_packets += 1
                return
            if len(self._audio) == self._audio.maxlen:
                self.stats.audio_overflow += 1
            samples = np.frombuffer(data, dtype="<i2").reshape(n, channels).astype(np.int16)
            self._audio.append(AudioFrame(fseq, samples))
            self.stats.audio_frames += 1
        elif pkt.command == P.Command.BOOTED:
            try:
                self.booted = P.BootStatus.decode(pkt.payload)
            except ProtocolError:
                self.stats.bad_packets += 1

    # --- commands ---------------------------------------------------------------------------------
    def say_hello(self) -> P.Hello:
        raw = self.request(P.Command.HELLO, bytes([P.PROTOCOL_VERSION]))
        self.hello = P.Hello.decode(raw)
        if self.hello.protocol_version != P.PROTOCOL_VERSION:
            raise ProtocolError(
                f"{self.port}: MCU speaks protocol {self.hello.protocol_version}, this host {P.PROTOCOL_VERSION}"
            )
        return self.hello

    def ping(self, payload: bytes = b"") -> bytes:
        echo = self.request(P.Command.PING, payload)
        if echo != payload:
            raise ProtocolError(f"{self.port}: PING echo differs from what was sent")
        return echo

    def reboot(self) -> None:
        self.request(P.Command.REBOOT)

    def get_config(self, key: str) -> int:
        return P.parse_config_entry(self.request(P.Command.GET_CONFIG, P.text(key, "config key")), "GET_CONFIG")[1]

    def set_config(self, key: str, value: int) -> int:
        return P.parse_config_entry(self.request(P.Command.SET_CONFIG, P.config_entry(key, value)), "SET_CONFIG")[1]

    def list_config(self) -> list[P.ConfigItem]:
        return P.decode_config_list(self.request(P.Command.LIST_CONFIG))

    def set_leds(self, pixels: list[tuple[int, int, int]]) -> None:
        self.request(P.Command.LED_SET, P.encode_leds(pixels))

    def get_leds(self) -> list[tuple[int, int, int]]:
        return P.decode_leds(self.request(P.Command.LED_GET))

    def stream_start(self) -> P.StreamInfo:
        self._audio.clear()
        return P.StreamInfo.decode(self.request(P.Command.STREAM_START))

    def stream_stop(self) -> tuple[int, int]:
        """Stop the audio stream: (frames the MCU sent, frames it could not send)."""
        r = P.Reader(self.request(P.Command.STREAM_STOP), "STREAM_STOP")
        sent, dropped = r.unpack("II")
        return sent, dropped

    def read_audio(self, timeout: float) -> AudioFrame | None:
        """The next AUDIO frame, waiting up to `timeout` s; None if none came."""
        deadline = time.monotonic() + timeout
        while not self._audio:
            got = self._await(None, min(deadline, time.monotonic() + READ_POLL_S))
            if got is None and time.monotonic() >= deadline:
                return None
        return self._audio.popleft()

    def flash_begin(self, size: int, sha256: bytes, version: str, slot: int = P.SLOT_INACTIVE) -> tuple[int, int, int]:
        """Announce an image: (slot it goes to, offset the MCU already holds, largest chunk)."""
        raw = self.request(
            P.Command.FLASH_BEGIN,
            P.FlashBegin(size, sha256, slot, version).encode(),
            timeout=self.ack_timeout + size / P.ERASE_BYTES_PER_S,
        )
        r = P.Reader(raw, "FLASH_BEGIN answer")
        out = r.unpack("BIH")
        r.end()
        return out[0], out[1], out[2]

    def flash_chunk(self, offset: int, data: bytes) -> int:
        """Write `data` at `offset`; the MCU's next expected offset."""
        r = P.Reader(self.request(P.Command.FLASH_CHUNK, offset.to_bytes(4, "little") + data), "FLASH_CHUNK answer")
        nxt = r.u32()
        r.end()
        return nxt

    def flash_status(self) -> P.FlashStatus:
        return P.FlashStatus.decode(self.request(P.Command.FLASH_STATUS))

    def flash_verify(self, size: int) -> bytes:
        """The SHA-256 the MCU computed over the `size`-byte image it holds (NAK HASH_MISMATCH if wrong)."""
        return self.request(P.Command.FLASH_VERIFY, timeout=self.ack_timeout + size / P.HASH_BYTES_PER_S)

    def flash_commit(self, slot: int) -> None:
        self.request(P.Command.FLASH_COMMIT, bytes([slot]))

    def boot_status(self) -> P.BootStatus:
        return P.BootStatus.decode(self.request(P.Command.BOOT_STATUS))
