"""An MCU that speaks the companion protocol over a pseudo-terminal: for tests and for developers
without the board.

    python -m firmware_bridge.simulator --state DIR [--link PATH] [--drop P] ...   (prints its port)
    tympan bridge simulate ...                                                     (the same)

It behaves as hardware/protocol.md says an MCU must: HELLO, PING, config, LED ring, audio frames
(a test tone or a file, paced in real time), and A/B flashing with resume, verify, commit, reboot, a
boot self-test (`firmware_bridge.image.self_test`) and rollback. Its flash (slot_a.bin, slot_b.bin) and
its state (state.json, replaced atomically) live in the `state` directory, so killing it mid-flash and
starting it again is a power cycle: what it had written survives, nothing else.

Faults (`firmware_bridge.faults.Faults`): dropped, corrupted and duplicated bytes in both directions,
a slow line, and power loss after a given number of flash bytes. `link` makes a symbolic link to the
pseudo-terminal that stays the same across restarts (like a /dev/serial/by-id/ name).
"""

from __future__ import annotations

import argparse
import collections
import errno
import hashlib
import json
import logging
import os
import select
import signal
import sys
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError, TympanError
from firmware_bridge import image as fwimage
from firmware_bridge import protocol as P
from firmware_bridge.faults import Faults, FaultyLine
from firmware_bridge.framing import FrameDecoder, crc32, encode_frame

log = logging.getLogger(__name__)

SLOT_SIZE = 1 << 20
"""Bytes per slot (1 MiB): the largest image the simulated MCU takes."""
BOOT_S = 0.15
"""How long the simulated reboot takes (input is ignored meanwhile)."""
N_LEDS = 12
LED0_AZIMUTH_DEG = 0.0
FACTORY_VERSION = "0.9.0-factory"
TONE_HZ = (440.0, 1000.0, 1500.0, 2500.0, 3000.0, 3500.0, 5000.0, 6000.0)
TONE_AMPLITUDE = 0.25
TX_BUFFER_BYTES = 256 * 1024
"""The simulated MCU's transmit buffer: 2 s of a 4-channel 16 kHz stream before frames are dropped."""
TX_BUFFER_FRAMES = 2
"""Audio frames the transmit buffer of a slow simulated line (`Faults.baud`) holds; a frame later than
this is dropped and counted, as an MCU whose UART is slower than its microphones must."""


class PowerLoss(Exception):
    """Raised inside the simulator when its injected power loss strikes."""


class _Refuse(Exception):
    def __init__(self, code: P.Nak, message: str, detail: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


def tone_signal(start: int, n: int, channels: int, sample_rate: int) -> npt.NDArray[np.int16]:
    """The simulator's default microphone signal, int16 [n, channels]: samples start..start+n-1.

    Channel c is a sine at TONE_HZ[c % 8] with amplitude TONE_AMPLITUDE of full scale, phase 0 at
    sample 0: a test knows every sample the MCU sends.
    """
    t = (start + np.arange(n, dtype=np.float64)) / sample_rate
    freqs = np.array([TONE_HZ[c % len(TONE_HZ)] for c in range(channels)])
    x = TONE_AMPLITUDE * np.sin(2.0 * np.pi * t[:, None] * freqs[None, :])
    return np.round(x * 32767.0).astype(np.int16)


@dataclass
class _ConfigSpec:
    default: int
    minimum: int
    maximum: int


def _config_table(channels: int) -> dict[str, _ConfigSpec]:
    return {
        "led_brightness": _ConfigSpec(64, 0, 255),
        "mic_gain_db": _ConfigSpec(0, -20, 20),
        "frame_samples": _ConfigSpec(160, 16, P.MAX_AUDIO_BYTES // (2 * channels)),
    }


class Simulator:
    """One simulated MCU on a fresh pseudo-terminal. `port` is the path a host opens.

    `audio`: int16 [N, channels] looped as the microphone signal (None: `tone_signal`). `realtime`:
    pace audio frames at the sample rate (False: as fast as the line takes them).
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        faults: Faults | None = None,
        link: str | None = None,
        channels: int = 4,
        sample_rate: int = 16000,
        n_leds: int = N_LEDS,
        board: str = "tympan-sim",
        factory_version: str = FACTORY_VERSION,
        audio: npt.NDArray[np.int16] | None = None,
        realtime: bool = True,
        max_chunk: int = P.MAX_CHUNK,
        durable: bool = True,
    ) -> None:
        if not 1 <= channels <= 16:
            raise ConfigError(f"channels {channels!r}: must be 1-16")
        if not 8000 <= sample_rate <= 192000:
            raise ConfigError(f"sample_rate {sample_rate!r}: must be 8000-192000 Hz")
        if not (board.isascii() and 0 < len(board) <= P.MAX_TEXT):
            raise ConfigError(f"board {board!r}: must be 1-{P.MAX_TEXT} ASCII characters")
        if not 1 <= n_leds <= 255:
            raise ConfigError(f"n_leds {n_leds!r}: must be 1-255")
        if not 64 <= max_chunk <= P.MAX_CHUNK:
            raise ConfigError(f"max_chunk {max_chunk!r}: must be 64-{P.MAX_CHUNK}")
        if audio is not None and (audio.ndim != 2 or audio.shape[1] != channels or audio.shape[0] == 0):
            raise ConfigError(f"audio must be int16 [n > 0, {channels}], got shape {audio.shape}")
        self.state_dir = Path(state_dir)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"simulator state directory {str(state_dir)!r}: cannot create ({e.strerror})") from None
        self.faults = faults or Faults()
        self.channels = channels
        self.sample_rate = sample_rate
        self.n_leds = n_leds
        self.board = board
        self.audio = audio
        self.realtime = realtime
        self.max_chunk = max_chunk
        self.durable = durable
        self.config_table = _config_table(channels)
        self.leds: list[tuple[int, int, int]] = [(0, 0, 0)] * n_leds
        self.uid = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        self._rx_line = FaultyLine(self.faults, 0)
        self._tx_line = FaultyLine(self.faults, 1)
        self._decoder = FrameDecoder()
        self._last: tuple[int, int, bytes] | None = None  # (seq, frame crc, encoded answer)
        self._flash_bytes = 0
        self._line_free = 0.0
        self._ready_at = 0.0
        self._reboot_at: float | None = None
        self._booted_pending = False
        self._stream_next: float | None = None
        self._stream_frame = 160
        self._stream_seq = 0
        self._stream_sample = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self.power_lost = False
        self._txq: collections.deque[bytes] = collections.deque()
        self._tx_bytes = 0
        self._state = self._load_state(factory_version)
        self._boot()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.tty = os.ttyname(self._slave)
        self.link = link
        if link is not None:
            tmp = f"{link}.{os.getpid()}.tmp"
            try:
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                os.symlink(self.tty, tmp)
                os.replace(tmp, link)
            except OSError as e:
                os.close(self._master)
                os.close(self._slave)
                raise ConfigError(f"link {link!r}: cannot create ({e.strerror})") from None
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._fd_lock = threading.RLock()  # reentrant: request_stop may run in a signal handler

    # --- public -----------------------------------------------------------------------------------
    @property
    def port(self) -> str:
        return self.link or self.tty

    def start(self) -> Simulator:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.serve, name="mcu-simulator", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the serving loop to end (safe from a signal handler or another thread)."""
        self._stop.set()
        with self._fd_lock:
            if not self._closed:
                os.write(self._wake_w, b"x")

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._close()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the serving thread to end (power loss or stop); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def slot_bytes(self, slot: int) -> bytes:
        path = self._slot_path(slot)
        return path.read_bytes() if path.exists() else b""

    @property
    def state(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._state))

    def serve(self) -> None:
        """The MCU's main loop, until `stop()` or a power loss."""
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                deadlines = [d for d in (self._stream_next, self._reboot_at, self._ready_at) if d is not None]
                future = [d - now for d in deadlines if d > now]
                timeout = min([0.05, *future])
                writing = [self._master] if self._txq else []
                ready, writable, _ = select.select([self._master, self._wake_r], writing, [], max(0.0, timeout))
                if writable:
                    self._flush()
                if self._wake_r in ready:
                    os.read(self._wake_r, 64)
                if self._master in ready:
                    try:
                        data = os.read(self._master, 4096)
                    except BlockingIOError:
                        data = b""
                    if data:
                        self._receive(data)
                self._tick()
        except PowerLoss:
            self.power_lost = True
            log.warning("simulator: power lost")
        finally:
            self._close()

    # --- state and flash --------------------------------------------------------------------------
    def _slot_path(self, slot: int) -> Path:
        return self.state_dir / f"slot_{P.slot_name(slot).lower()}.bin"

    def _load_state(self, factory_version: str) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        if path.exists():
            try:
                state: dict[str, Any] = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(f"{path}: unreadable simulator state ({e})") from None
            return state
        body = b"".join(b"tympan simulated MCU firmware, block %05d\n" % i for i in range(64))
        self._slot_path(0).write_bytes(fwimage.build_image(body, factory_version))
        self._slot_path(1).write_bytes(b"")
        state = {
            "active": 0,
            "tried": 0,
            "boot_result": int(P.BootResult.OK),
            "pending": None,
            "staging": None,
            "config": {k: v.default for k, v in _config_table(self.channels).items()},
        }
        self._save_state(state)
        return state

    def _save_state(self, state: dict[str, Any] | None = None) -> None:
        state = self._state if state is None else state
        path = self.state_dir / "state.json"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
            fh.flush()
            if self.durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)

    def _boot(self) -> None:
        """The bootloader: try the pending slot, else the active one, else the other; run the winner."""
        st = self._state
        pending = st.get("pending")
        active = int(st["active"])
        order = ([pending] if pending is not None else []) + [active, 1 - active]
        chosen = None
        for slot in dict.fromkeys(order):
            ok, reason = fwimage.self_test(self.slot_bytes(slot))
            if ok:
                chosen = slot
                break
            log.info("simulator: slot %s fails self-test: %s", P.slot_name(slot), reason)
        if chosen is None:
            result = P.BootResult.NO_IMAGE
        elif pending is not None:
            result = P.BootResult.OK if chosen == pending else P.BootResult.ROLLED_BACK
        else:
            result = P.BootResult.OK if chosen == active else P.BootResult.FALLBACK
        st["tried"] = pending if pending is not None else active
        st["pending"] = None
        if chosen is not None:
            st["active"] = chosen
        st["boot_result"] = int(result)
        st["boots"] = int(st.get("boots", 0)) + 1
        self._save_state()
        self._decoder.reset()
        self._last = None
        self._txq.clear()  # a reset loses the transmit buffer
        self._tx_bytes = 0
        self._stream_next = None
        self.frames_sent = 0
        self.frames_dropped = 0
        self.leds = [(0, 0, 0)] * self.n_leds

    def _slot_info(self, slot: int) -> P.SlotInfo:
        data = self.slot_bytes(slot)
        ok, _ = fwimage.self_test(data)
        if not ok:
            return P.SlotInfo(False, len(data), hashlib.sha256(data).digest(), "")
        head = fwimage.parse_header(data)
        size = fwimage.HEADER_SIZE + head.body_length
        return P.SlotInfo(True, size, hashlib.sha256(data[:size]).digest(), head.version)

    def _running_version(self) -> str:
        if self._state["boot_result"] == P.BootResult.NO_IMAGE:
            return ""
        return self._slot_info(int(self._state["active"])).version

    # --- line -------------------------------------------------------------------------------------
    def _throttle(self, n: int) -> None:
        dt = self.faults.byte_time_s()
        if dt <= 0:
            return
        now = time.monotonic()
        self._line_free = max(now, self._line_free) + n * dt
        wait = self._line_free - now
        if wait > 0:
            time.sleep(wait)

    def _receive(self, data: bytes) -> None:
        self._throttle(len(data))
        if time.monotonic() < self._ready_at or self._reboot_at is not None:
            return  # rebooting: the UART is not listening
        for raw in self._decoder.feed(self._rx_line(data)):
            self._on_packet(raw)

    def _write(self, frame: bytes, *, patient: bool = True) -> bool:
        """Queue bytes for the line (in order) and send what the host's side takes now.

        The queue stands for the MCU's transmit buffer (TX_BUFFER_BYTES). `patient=False` (audio
        frames): drop the frame and return False when it does not fit, as a UART without flow control
        must when nobody reads; answers are always queued.
        """
        data = self._tx_line(frame)
        if not patient and self._tx_bytes + len(data) > TX_BUFFER_BYTES:
            return False
        self._throttle(len(data))
        self._txq.append(data)
        self._tx_bytes += len(data)
        self._flush()
        return True

    def _flush(self) -> None:
        while self._txq:
            head = self._txq[0]
            try:
                n = os.write(self._master, head)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EIO, errno.EBADF):
                    self._txq.clear()
                    self._tx_bytes = 0
                    return
                raise
            self._tx_bytes -= n
            if n < len(head):
                self._txq[0] = head[n:]
                return
            self._txq.popleft()

    def _send(self, packet: P.Packet) -> bytes:
        frame = encode_frame(packet.encode())
        self._write(frame)
        return frame

    # --- packets ----------------------------------------------------------------------------------
    def _on_packet(self, raw: bytes) -> None:
        try:
            pkt = P.Packet.decode(raw)
        except TympanError:
            if len(raw) >= P.HEADER.size and raw[0] != P.PROTOCOL_VERSION:
                seq = int.from_bytes(raw[2:4], "little")
                msg = f"protocol version {raw[0]} not supported (this MCU speaks {P.PROTOCOL_VERSION})"
                self._send(P.Packet(P.PacketType.NAK, seq, raw[4], P.nak_payload(P.Nak.BAD_VERSION, 0, msg)))
            return
        if pkt.type != P.PacketType.REQUEST:
            return
        key = crc32(raw)
        if pkt.command != P.Command.HELLO and self._last is not None and self._last[:2] == (pkt.seq, key):
            self._write(self._last[2])  # a retry of what we already did: answer again, do not redo
            return
        try:
            answer = P.Packet(P.PacketType.ACK, pkt.seq, pkt.command, self._execute(pkt))
        except _Refuse as r:
            answer = P.Packet(P.PacketType.NAK, pkt.seq, pkt.command, P.nak_payload(r.code, r.detail, str(r)))
        except TympanError as e:  # a payload that does not parse
            answer = P.Packet(P.PacketType.NAK, pkt.seq, pkt.command, P.nak_payload(P.Nak.BAD_PAYLOAD, 0, str(e)))
        frame = self._send(answer)
        self._last = (pkt.seq, key, frame)

    def _execute(self, pkt: P.Packet) -> bytes:
        handler = {
            P.Command.HELLO: self._hello,
            P.Command.PING: lambda p: p,
            P.Command.REBOOT: self._reboot,
            P.Command.GET_CONFIG: self._get_config,
            P.Command.SET_CONFIG: self._set_config,
            P.Command.LIST_CONFIG: self._list_config,
            P.Command.LED_SET: self._led_set,
            P.Command.LED_GET: lambda p: P.encode_leds(self.leds),
            P.Command.STREAM_START: self._stream_start,
            P.Command.STREAM_STOP: self._stream_stop,
            P.Command.FLASH_BEGIN: self._flash_begin,
            P.Command.FLASH_CHUNK: self._flash_chunk,
            P.Command.FLASH_STATUS: lambda p: self._flash_status().encode(),
            P.Command.FLASH_VERIFY: self._flash_verify,
            P.Command.FLASH_COMMIT: self._flash_commit,
            P.Command.BOOT_STATUS: lambda p: self._boot_status().encode(),
        }.get(pkt.command)  # type: ignore[call-overload]
        if handler is None:
            raise _Refuse(P.Nak.UNKNOWN_COMMAND, f"unknown command 0x{pkt.command:02x}")
        out: bytes = handler(pkt.payload)
        return out

    def _hello(self, payload: bytes) -> bytes:
        cfg = self._state["config"]
        return P.Hello(
            protocol_version=P.PROTOCOL_VERSION,
            firmware_version=self._running_version(),
            board=self.board,
            uid=self.uid,
            active_slot=int(self._state["active"]),
            boot_result=int(self._state["boot_result"]),
            channels=self.channels,
            sample_rate=self.sample_rate,
            frame_samples=int(cfg["frame_samples"]),
            n_leds=self.n_leds,
            led0_azimuth_deg=LED0_AZIMUTH_DEG,
            leds_clockwise=False,
            max_chunk=self.max_chunk,
        ).encode()

    def _reboot(self, payload: bytes) -> bytes:
        self._reboot_at = time.monotonic() + P.REBOOT_DELAY_S
        return b""

    def _get_config(self, payload: bytes) -> bytes:
        r = P.Reader(payload, "GET_CONFIG")
        key = r.text()
        r.end()
        if key not in self.config_table:
            raise _Refuse(P.Nak.BAD_KEY, f"no config key {key!r}")
        return P.config_entry(key, int(self._state["config"][key]))

    def _set_config(self, payload: bytes) -> bytes:
        key, value = P.parse_config_entry(payload, "SET_CONFIG")
        spec = self.config_table.get(key)
        if spec is None:
            raise _Refuse(P.Nak.BAD_KEY, f"no config key {key!r}")
        if not spec.minimum <= value <= spec.maximum:
            raise _Refuse(P.Nak.OUT_OF_RANGE, f"{key}={value} outside [{spec.minimum}, {spec.maximum}]")
        self._state["config"][key] = value
        self._save_state()
        return P.config_entry(key, value)

    def _list_config(self, payload: bytes) -> bytes:
        cfg = self._state["config"]
        return P.encode_config_list(
            [P.ConfigItem(k, int(cfg[k]), s.minimum, s.maximum) for k, s in self.config_table.items()]
        )

    def _led_set(self, payload: bytes) -> bytes:
        pixels = P.decode_leds(payload)
        if len(pixels) != self.n_leds:
            raise _Refuse(P.Nak.BAD_PAYLOAD, f"{len(pixels)} LED colours for a ring of {self.n_leds}")
        self.leds = pixels
        return b""

    # --- audio ------------------------------------------------------------------------------------
    def _stream_start(self, payload: bytes) -> bytes:
        frame = int(self._state["config"]["frame_samples"])
        self._stream_frame = frame
        self._stream_next = time.monotonic()
        info = P.StreamInfo(self.sample_rate, self.channels, frame, self._stream_seq)
        return info.encode()

    def _stream_stop(self, payload: bytes) -> bytes:
        self._stream_next = None
        return np.array([self.frames_sent, self.frames_dropped], dtype="<u4").tobytes()

    def _frame_samples(self, start: int, n: int) -> npt.NDArray[np.int16]:
        if self.audio is None:
            x = tone_signal(start, n, self.channels, self.sample_rate)
        else:
            idx = (start + np.arange(n)) % self.audio.shape[0]
            x = self.audio[idx]
        gain_db = int(self._state["config"]["mic_gain_db"])
        if gain_db:
            y = np.round(x.astype(np.float64) * 10.0 ** (gain_db / 20.0))
            x = np.clip(y, -32768, 32767).astype(np.int16)
        return x

    def _tick(self) -> None:
        now = time.monotonic()
        if self._reboot_at is not None and now >= self._reboot_at:
            self._reboot_at = None
            self._ready_at = now + BOOT_S
            self._boot()
            self._booted_pending = True
        if self._booted_pending and now >= self._ready_at:
            self._booted_pending = False
            self._send(P.Packet(P.PacketType.EVENT, 0, P.Command.BOOTED, self._boot_status().encode()))
        if self._stream_next is None:
            return
        frame = self._stream_frame
        period = frame / self.sample_rate
        sent = 0
        while self._stream_next is not None and (not self.realtime or now >= self._stream_next) and sent < 8:
            late = time.monotonic() - self._stream_next
            if self.realtime and self.faults.baud is not None and late > TX_BUFFER_FRAMES * period:
                self.frames_dropped += 1  # the line is slower than the microphones: the TX buffer overflows
            else:
                x = self._frame_samples(self._stream_sample, frame)
                payload = P.encode_audio(self._stream_seq, x.astype("<i2").tobytes(), self.channels)
                packet = P.Packet(P.PacketType.EVENT, 0, P.Command.AUDIO, payload)
                if self._write(encode_frame(packet.encode()), patient=False):
                    self.frames_sent += 1
                else:
                    self.frames_dropped += 1
            self._stream_seq = (self._stream_seq + 1) & 0xFFFFFFFF
            self._stream_sample += frame
            self._stream_next += period
            sent += 1

    # --- flashing ---------------------------------------------------------------------------------
    def _flash_status(self) -> P.FlashStatus:
        sg = self._state.get("staging")
        if not sg:
            return P.FlashStatus(int(P.FlashState.IDLE), P.SLOT_INACTIVE, 0, 0, bytes(32), "")
        state = P.FlashState.VERIFIED if sg["verified"] else P.FlashState.RECEIVING
        return P.FlashStatus(
            int(state), sg["slot"], sg["size"], sg["offset"], bytes.fromhex(sg["sha256"]), sg["version"]
        )

    def _flash_begin(self, payload: bytes) -> bytes:
        req = P.FlashBegin.decode(payload)
        active = int(self._state["active"])
        nothing_runs = self._state["boot_result"] == P.BootResult.NO_IMAGE
        slot = (1 - active) if req.slot == P.SLOT_INACTIVE else req.slot
        if slot not in (0, 1):
            raise _Refuse(P.Nak.BAD_SLOT, f"no slot {req.slot}")
        if slot == active and not nothing_runs:
            raise _Refuse(P.Nak.BAD_SLOT, f"slot {P.slot_name(slot)} holds the running firmware")
        if not 0 < req.size <= SLOT_SIZE:
            raise _Refuse(P.Nak.TOO_LARGE, f"image of {req.size} bytes; a slot holds {SLOT_SIZE}", SLOT_SIZE)
        sg = self._state.get("staging")
        same = (
            sg is not None
            and sg["slot"] == slot
            and sg["size"] == req.size
            and sg["sha256"] == req.sha256.hex()
            and sg["version"] == req.version
        )
        if not same:
            with open(self._slot_path(slot), "wb") as fh:  # erase
                fh.flush()
                if self.durable:
                    os.fsync(fh.fileno())
            self._state["staging"] = {
                "slot": slot,
                "size": req.size,
                "sha256": req.sha256.hex(),
                "version": req.version,
                "offset": 0,
                "verified": False,
            }
            self._save_state()
        offset = int(self._state["staging"]["offset"])
        return bytes([slot]) + offset.to_bytes(4, "little") + self.max_chunk.to_bytes(2, "little")

    def _flash_chunk(self, payload: bytes) -> bytes:
        sg = self._state.get("staging")
        if not sg:
            raise _Refuse(P.Nak.NOT_READY, "no transfer begun (FLASH_BEGIN first)")
        r = P.Reader(payload, "FLASH_CHUNK")
        offset = r.u32()
        data = r.rest()
        have = int(sg["offset"])
        if len(data) > self.max_chunk or not data:
            raise _Refuse(P.Nak.TOO_LARGE, f"chunk of {len(data)} bytes (1-{self.max_chunk})", have)
        if offset > have:
            raise _Refuse(P.Nak.BAD_OFFSET, f"chunk at {offset}, flash holds {have} bytes", have)
        if offset + len(data) > sg["size"]:
            raise _Refuse(P.Nak.TOO_LARGE, f"chunk ends at {offset + len(data)} past the image size {sg['size']}", have)
        new = data[have - offset :]  # flash cannot be rewritten without an erase: only append what is new
        if new:
            limit = self.faults.power_loss_after
            if limit is not None and self._flash_bytes + len(new) > limit:
                part = new[: max(0, limit - self._flash_bytes)]
                self._append(int(sg["slot"]), have, part)  # the write in progress when power went
                raise PowerLoss
            self._append(int(sg["slot"]), have, new)
            self._flash_bytes += len(new)
            sg["offset"] = have + len(new)
            sg["verified"] = False
            self._save_state()
        return int(sg["offset"]).to_bytes(4, "little")

    def _append(self, slot: int, at: int, data: bytes) -> None:
        with open(self._slot_path(slot), "r+b") as fh:
            fh.seek(at)
            fh.write(data)
            fh.truncate()
            fh.flush()
            if self.durable:
                os.fsync(fh.fileno())

    def _flash_verify(self, payload: bytes) -> bytes:
        sg = self._state.get("staging")
        if not sg:
            raise _Refuse(P.Nak.NOT_READY, "no transfer to verify")
        if sg["offset"] != sg["size"]:
            raise _Refuse(P.Nak.NOT_READY, f"{sg['offset']} of {sg['size']} bytes received", sg["offset"])
        digest = hashlib.sha256(self.slot_bytes(int(sg["slot"]))[: sg["size"]]).digest()
        if digest.hex() != sg["sha256"]:
            # the slot does not hold what was announced: start that transfer over
            sg["offset"] = 0
            sg["verified"] = False
            self._save_state()
            msg = f"slot hashes to {digest.hex()[:16]}..., expected {sg['sha256'][:16]}..."
            raise _Refuse(P.Nak.HASH_MISMATCH, msg)
        sg["verified"] = True
        self._save_state()
        return digest

    def _flash_commit(self, payload: bytes) -> bytes:
        r = P.Reader(payload, "FLASH_COMMIT")
        slot = r.u8()
        r.end()
        sg = self._state.get("staging")
        if not sg or not sg["verified"]:
            raise _Refuse(P.Nak.NOT_READY, "no verified image to commit (FLASH_VERIFY first)")
        if slot != sg["slot"]:
            raise _Refuse(P.Nak.BAD_SLOT, f"the verified image is in slot {P.slot_name(sg['slot'])}, not {slot}")
        self._state["pending"] = slot
        self._state["staging"] = None
        self._save_state()
        self._reboot_at = time.monotonic() + P.REBOOT_DELAY_S
        return bytes([slot])

    def _boot_status(self) -> P.BootStatus:
        st = self._state
        return P.BootStatus(
            int(st["active"]),
            int(st["boot_result"]),
            int(st["tried"]),
            int(st.get("boots", 0)),
            (self._slot_info(0), self._slot_info(1)),
        )

    def _close(self) -> None:
        with self._fd_lock:
            if self._closed:
                return
            self._closed = True
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link is not None:
            try:
                if os.readlink(self.link) == self.tty:
                    os.unlink(self.link)
            except OSError:
                pass


# --- command line --------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="DIR", help="flash slots and state (default: a temporary directory)")
    p.add_argument("--link", metavar="PATH", help="also make PATH a symbolic link to the port (stable across restarts)")
    p.add_argument("--channels", type=int, default=4, help="microphone channels (default 4)")
    p.add_argument("--rate", type=int, default=16000, help="microphone sample rate in Hz (default 16000)")
    p.add_argument("--leds", type=int, default=N_LEDS, help=f"LEDs on the ring (default {N_LEDS})")
    p.add_argument("--audio", metavar="FILE", help="loop this recording as the microphones (default: test tones)")
    f = p.add_argument_group("fault injection (per byte, both directions)")
    f.add_argument("--drop", type=float, default=0.0, metavar="P", help="probability a byte is lost")
    f.add_argument("--corrupt", type=float, default=0.0, metavar="P", help="probability a bit of a byte flips")
    f.add_argument("--duplicate", type=float, default=0.0, metavar="P", help="probability a byte arrives twice")
    f.add_argument("--baud", type=int, metavar="B", help="throttle the line to B baud (8N1)")
    f.add_argument("--power-loss-after", type=int, metavar="N", help="lose power after N bytes of flash data")
    f.add_argument("--seed", type=int, default=0, help="fault seed (default 0)")


def _read_audio(path: str, channels: int, rate: int) -> npt.NDArray[np.int16]:
    from edge.sources import read_audio
    from edge.sources.resample import resample_whole

    x: npt.NDArray[np.floating] = read_audio(path)  # [C, N] float32 at 16 kHz
    if x.shape[0] != channels:
        raise ConfigError(f"--audio {path}: {x.shape[0]} channels, the simulator has --channels {channels}")
    if rate != 16000:
        x = resample_whole(x, 16000, rate)
    return np.round(np.clip(x.T, -1.0, 32767 / 32768) * 32768.0).astype(np.int16)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; print the port on stdout first (one line, flushed)."""
    import tempfile

    faults = Faults(
        drop=args.drop,
        corrupt=args.corrupt,
        duplicate=args.duplicate,
        baud=args.baud,
        power_loss_after=args.power_loss_after,
        seed=args.seed,
    )
    audio = None if args.audio is None else _read_audio(args.audio, args.channels, args.rate)
    with tempfile.TemporaryDirectory(prefix="tympan-mcu-") as tmp:
        sim = Simulator(
            args.state or tmp,
            faults=faults,
            link=args.link,
            channels=args.channels,
            sample_rate=args.rate,
            n_leds=args.leds,
            audio=audio,
        )
        signal.signal(signal.SIGTERM, lambda _sig, _frame: sim.request_stop())
        print(sim.port, flush=True)
        print(
            f"simulated MCU on {sim.port} (tty {sim.tty}), state in {sim.state_dir}, "
            f"running {sim._running_version() or 'no image'} in slot {P.slot_name(int(sim.state['active']))}",
            file=sys.stderr,
            flush=True,
        )
        try:
            sim.serve()
        except KeyboardInterrupt:
            sim.stop()
            return 0
        if sim.power_lost:
            print("simulated MCU: power lost", file=sys.stderr, flush=True)
            return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.simulator", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="mcu-sim: %(levelname)s: %(message)s")
    try:
        return run(args)
    except TympanError as e:
        print(f"mcu-sim: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

