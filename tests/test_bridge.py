"""The firmware bridge: host client <-> simulated MCU over a real pseudo-terminal.

Covers the payload layouts, the LED ring geometry, firmware images, every command against the
simulator (hello, config, LEDs, audio as Blocks with exact samples, gaps filled in stream time), the
duplicate detection, and flashing with each injected fault (dropped, corrupted, duplicated bytes, a
slow line, power loss mid-flash, a killed simulator process): every run ends with the new image
verified and running or the old one running intact, never a mix; bad images are rolled back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from boards.profiles import resolve
from edge.errors import ConfigError, DeviceError, InputError
from edge.main import main as tympan_main
from firmware_bridge import image as fwimage
from firmware_bridge import protocol as P
from firmware_bridge.client import BridgeClient
from firmware_bridge.errors import FlashError, LinkError, NakError, ProtocolError
from firmware_bridge.faults import Faults, FaultyLine
from firmware_bridge.flasher import flash_serial
from firmware_bridge.framing import FrameDecoder, encode_frame
from firmware_bridge.leds import class_colour, direction_frame, led_for_azimuth, parse_colour, ring_position
from firmware_bridge.simulator import FACTORY_VERSION, Simulator, tone_signal
from firmware_bridge.source import SerialSource

REPO = Path(__file__).resolve().parents[1]
ACK_S = 0.2
"""Test answer timeout: a pty answers in well under a millisecond; 200 ms leaves room on a loaded machine."""
CHUNK = 256

MakeSim = Callable[..., Simulator]


@pytest.fixture
def make_sim(tmp_path: Path) -> Iterator[MakeSim]:
    sims: list[Simulator] = []

    def make(**kw: Any) -> Simulator:
        kw.setdefault("durable", False)
        kw.setdefault("link", str(tmp_path / "ttyMCU"))
        sim = Simulator(tmp_path / "mcu", **kw).start()
        sims.append(sim)
        return sim

    yield make
    for s in sims:
        s.stop()


def body(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def assert_new_or_old(sim_dir: Path, old: bytes, new: bytes) -> str:
    """The MCU's persisted state runs exactly `old` or exactly `new`, intact; return which."""
    state = json.loads((sim_dir / "state.json").read_text())
    active = state["active"]
    running = (sim_dir / f"slot_{'ab'[active]}.bin").read_bytes()
    ok, reason = fwimage.self_test(running)
    assert ok, reason
    assert running in (old, new), "the running slot holds neither the old nor the new image"
    if running == new:
        assert (sim_dir / f"slot_{'ab'[1 - active]}.bin").read_bytes() == old, "old image damaged"
        return "new"
    return "old"


# --- payload layouts -----------------------------------------------------------------------------
def test_packet_layout_is_little_endian_with_a_five_byte_header() -> None:
    raw = P.Packet(P.PacketType.ACK, 0x1234, P.Command.FLASH_CHUNK, b"\x01").encode()
    assert raw == bytes([1, 2, 0x34, 0x12, 0x41, 1])
    assert P.Packet.decode(raw) == P.Packet(P.PacketType.ACK, 0x1234, P.Command.FLASH_CHUNK, b"\x01")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x01\x00", "shorter than"),
        (b"\x02\x01\x00\x00\x01", "protocol version 2"),
        (b"\x01\x09\x00\x00\x01", "type 9"),
    ],
)
def test_packet_decode_rejects(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        P.Packet.decode(raw)


def test_payloads_round_trip_and_truncation_is_refused() -> None:
    hello = P.Hello(1, "1.2.3", "board", "uid", 1, 0, 4, 16000, 160, 12, -30.5, True, 1024)
    assert P.Hello.decode(hello.encode()) == hello
    status = P.FlashStatus(1, 1, 5000, 1234, bytes(range(32)), "2.0")
    assert P.FlashStatus.decode(status.encode()) == status
    slot = P.SlotInfo(True, 99, bytes(32), "v")
    boot = P.BootStatus(1, int(P.BootResult.ROLLED_BACK), 0, 7, (slot, P.SlotInfo(False, 0, bytes(32), "")))
    assert P.BootStatus.decode(boot.encode()) == boot
    leds = [(1, 2, 3), (255, 0, 7)]
    assert P.decode_leds(P.encode_leds(leds)) == leds
    pcm = np.arange(-8, 8, dtype="<i2").tobytes()
    assert P.decode_audio(P.encode_audio(7, pcm, 2)) == (7, 2, 8, pcm)
    for cut in (1, 10, len(hello.encode()) - 1):
        with pytest.raises(ProtocolError, match="truncated"):
            P.Hello.decode(hello.encode()[:cut])
    with pytest.raises(ProtocolError, match="trailing"):
        P.FlashStatus.decode(status.encode() + b"x")
    with pytest.raises(ProtocolError, match="not ASCII"):
        P.text("héllo")
    with pytest.raises(ProtocolError, match="0-255"):
        P.encode_leds([(0, 0, 256)])


# --- LED ring ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("az", "n", "led0", "cw", "index"),
    [
        (0.0, 12, 0.0, False, 0),
        (90.0, 12, 0.0, False, 3),
        (90.0, 12, 0.0, True, 9),
        (-90.0, 12, 0.0, False, 9),
        (180.0, 12, 0.0, False, 6),
        (44.0, 8, 0.0, False, 1),
        (100.0, 12, 90.0, False, 0),  # LED 0 mounted at +y
        (359.0, 12, 0.0, False, 0),
        (16.0, 12, 0.0, False, 1),
    ],
)
def test_led_for_azimuth(az: float, n: int, led0: float, cw: bool, index: int) -> None:
    assert led_for_azimuth(az, n, led0, cw) == index


def test_direction_frame_lights_the_nearest_led_brightest_and_interpolates() -> None:
    colour = (255, 128, 0)
    frame = direction_frame(90.0, colour, 12)
    assert frame[3] == colour and sum(map(sum, frame)) == sum(colour)
    between = direction_frame(100.0, colour, 12)  # 1/3 of the way from LED 3 to LED 4
    lit = {i: px for i, px in enumerate(between) if px != (0, 0, 0)}
    assert set(lit) == {3, 4} and lit[3][0] > lit[4][0]
    assert ring_position(100.0, 12) == pytest.approx(3.0 + 1 / 3)
    dim = direction_frame(90.0, colour, 12, brightness=64)
    assert dim[3] == (64, 32, 0)


def test_class_colours_are_stable_and_distinct_and_bad_colours_refused() -> None:
    assert class_colour("Dog") == class_colour(" dog ")
    assert class_colour("Dog") != class_colour("Glass")
    assert max(class_colour("Speech")) == 255
    assert parse_colour("#ff8000") == (255, 128, 0)
    for bad in ("ff800", "gg0000", ""):
        with pytest.raises(ConfigError, match="colour"):
            parse_colour(bad)
    with pytest.raises(ConfigError, match="azimuth"):
        led_for_azimuth(float("nan"), 12)
    with pytest.raises(ConfigError, match="LED ring"):
        led_for_azimuth(0.0, 0)


# --- images and faults ---------------------------------------------------------------------------
def test_image_self_test_passes_only_intact_images() -> None:
    img = fwimage.build_image(body(3000, 1), "1.0.0")
    assert fwimage.self_test(img) == (True, "ok")
    assert fwimage.check_image(img).version == "1.0.0"
    flipped = bytearray(img)
    flipped[-1] ^= 0x40
    cases = {
        "SHA-256": bytes(flipped),
        "truncated": img[:-10],
        "magic": b"XXXX" + img[4:],
        "shorter than": img[:20],
        "SELFTEST_FAIL": fwimage.build_image(body(100, 2), "1.0.1", flags=fwimage.FLAG_SELFTEST_FAIL),
    }
    for reason, data in cases.items():
        ok, why = fwimage.self_test(data)
        assert not ok and reason in why, (reason, why)
        with pytest.raises(InputError, match=r"^fw\.bin: "):  # the file is named, whatever the fault
            fwimage.check_image(data, "fw.bin")
    for bad in ("", "x" * 33, "v\x00", "vé"):
        with pytest.raises(InputError, match="version"):
            fwimage.build_image(b"x", bad)


def test_faulty_line_is_seeded_and_counts_what_it_does() -> None:
    data = bytes(range(256)) * 40
    f = Faults(drop=0.01, corrupt=0.01, duplicate=0.01, seed=3)
    a, b = FaultyLine(f, 0), FaultyLine(f, 0)
    out = a(data)
    assert out == b(data) and out != data
    assert a.dropped > 0 and a.corrupted > 0 and a.duplicated > 0
    assert len(out) == len(data) + a.duplicated - a.dropped
    assert FaultyLine(Faults(), 0)(data) == data
    for bad in ({"drop": 0.9}, {"corrupt": -0.1}, {"baud": 10}, {"power_loss_after": -1}, {"drop": float("nan")}):
        with pytest.raises(ConfigError):
            Faults(**bad)


# --- commands against the simulator --------------------------------------------------------------
def test_hello_config_and_leds(make_sim: MakeSim) -> None:
    sim = make_sim()
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        h = c.hello
        assert h is not None
        assert (h.firmware_version, h.active_slot, h.channels, h.sample_rate) == (FACTORY_VERSION, 0, 4, 16000)
        assert h.n_leds == 12
        assert h.boot_result == P.BootResult.OK
        assert {i.key for i in c.list_config()} == {"led_brightness", "mic_gain_db", "frame_samples"}
        assert c.set_config("led_brightness", 200) == 200
        assert c.get_config("led_brightness") == 200
        with pytest.raises(NakError, match="BAD_KEY") as e:
            c.get_config("nope")
        assert e.value.code == P.Nak.BAD_KEY
        with pytest.raises(NakError, match="OUT_OF_RANGE"):
            c.set_config("led_brightness", 256)
        frame = direction_frame(-90.0, class_colour("Dog"), h.n_leds, brightness=200)
        c.set_leds(frame)
        assert c.get_leds() == frame == sim.leds
        assert max(range(12), key=lambda i: sum(sim.leds[i])) == 9
        with pytest.raises(NakError, match="ring of 12"):
            c.set_leds([(1, 1, 1)] * 5)
        c.ping(bytes(range(256)) * 4)
        assert c.stats.retries == 0
    sim.stop()
    # configuration is kept in the MCU's flash across a power cycle
    with BridgeClient(make_sim().port, ack_timeout=ACK_S) as c:
        assert c.get_config("led_brightness") == 200


def test_a_retried_request_is_answered_from_the_cache_not_done_twice(make_sim: MakeSim) -> None:
    sim = make_sim()
    img = fwimage.build_image(body(1000, 4), "1.0.0")
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        c.flash_begin(len(img), hashlib.sha256(img).digest(), "1.0.0")
    ser = serial.Serial(sim.port, timeout=0.5)
    dec = FrameDecoder()
    hello = encode_frame(P.Packet(P.PacketType.REQUEST, 1, P.Command.HELLO, b"\x01").encode())
    chunk = encode_frame(P.Packet(P.PacketType.REQUEST, 77, P.Command.FLASH_CHUNK, bytes(4) + img[:100]).encode())
    answers: list[P.Packet] = []
    v2 = encode_frame(b"\x02\x01\x05\x00\x01")  # a request of protocol version 2
    ser.write(hello + chunk + chunk + v2)  # the same request twice, as after a lost ACK
    deadline = time.monotonic() + 3
    while len(answers) < 4 and time.monotonic() < deadline:
        answers += [P.Packet.decode(p) for p in dec.feed(ser.read(ser.in_waiting or 1))]
    ser.close()
    assert [a.type for a in answers] == [P.PacketType.ACK] * 3 + [P.PacketType.NAK]
    assert P.parse_nak(answers[3].payload)[0] == P.Nak.BAD_VERSION and answers[3].seq == 5
    assert answers[1] == answers[2] and answers[1].seq == 77
    assert int.from_bytes(answers[2].payload, "little") == 100  # written once: offset 100, not 200
    assert sim.state["staging"]["offset"] == 100


def test_mcu_answers_any_payload_of_any_command_with_ack_or_nak(tmp_path: Path) -> None:
    commands = [c for c in P.Command if c not in (P.Command.REBOOT, P.Command.FLASH_COMMIT)] + [0x7F]
    with Simulator(tmp_path / "mcu", durable=False) as sim, BridgeClient(sim.port, ack_timeout=ACK_S) as c:

        @settings(deadline=None, max_examples=120)
        @given(st.sampled_from(commands), st.binary(max_size=64))
        def check(command: int, payload: bytes) -> None:
            try:
                c.request(command, payload)
            except NakError as e:
                assert e.code in set(P.Nak)

        check()
        c.stream_stop()
        assert c.say_hello().firmware_version == FACTORY_VERSION  # still alive, still running the old image
        assert sim.state["active"] == 0


def test_mcu_refuses_what_would_break_a_slot(make_sim: MakeSim) -> None:
    sim = make_sim()
    img = fwimage.build_image(body(2000, 5), "1.0.0")
    digest = hashlib.sha256(img).digest()
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        with pytest.raises(NakError, match="running firmware"):
            c.flash_begin(len(img), digest, "1.0.0", slot=0)
        with pytest.raises(NakError, match="NOT_READY"):
            c.flash_chunk(0, img[:10])
        slot, offset, _ = c.flash_begin(len(img), digest, "1.0.0")
        assert (slot, offset) == (1, 0)
        assert c.flash_chunk(0, img[:500]) == 500
        with pytest.raises(NakError, match="BAD_OFFSET") as e:
            c.flash_chunk(800, img[800:900])
        assert e.value.detail == 500
        with pytest.raises(NakError, match="NOT_READY"):
            c.flash_verify(len(img))
        with pytest.raises(NakError, match="NOT_READY"):
            c.flash_commit(1)
        assert c.flash_status().offset == 500
        # the same image again: the MCU keeps what it has (resume); another image starts over
        assert c.flash_begin(len(img), digest, "1.0.0")[1] == 500
        assert c.flash_begin(len(img), bytes(32), "1.0.0")[1] == 0
    assert sim.state["active"] == 0


def test_client_errors_name_the_port(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="no such serial port"):
        BridgeClient(str(tmp_path / "nothing")).open()
    master, slave = os.openpty()  # a port nobody answers on
    try:
        port = os.ttyname(slave)
        with pytest.raises(LinkError, match=f"{port}: no answer to HELLO after 2 tries"):
            BridgeClient(port, ack_timeout=0.05, retries=1).open()
    finally:
        os.close(master)
        os.close(slave)
    assert issubclass(LinkError, DeviceError) and issubclass(FlashError, DeviceError)


# --- audio ---------------------------------------------------------------------------------------
def test_serial_source_yields_blocks_with_the_mcus_exact_samples(make_sim: MakeSim) -> None:
    sim = make_sim()
    array = resolve("respeaker-4mic-hat", None)
    src = SerialSource(sim.port, array, block_size=1000, duration_s=0.3, ack_timeout=ACK_S)
    blocks = list(src)
    assert [b.seq for b in blocks] == list(range(5))
    assert [b.t for b in blocks] == pytest.approx([0.0, 0.0625, 0.125, 0.1875, 0.25])
    x = np.concatenate([b.samples for b in blocks], axis=1)
    assert x.shape == (4, 4800) and x.dtype == np.float32
    expected = tone_signal(0, 4800, 4, 16000).T.astype(np.float32) / 32768.0
    np.testing.assert_array_equal(x, expected)
    assert src.lost_frames == 0


def test_lost_audio_frames_become_silence_in_stream_time(make_sim: MakeSim) -> None:
    sim = make_sim(faults=Faults(drop=2e-4, corrupt=2e-4, seed=11))
    array = resolve("respeaker-4mic-hat", None)
    src = SerialSource(sim.port, array, block_size=1600, duration_s=0.6, ack_timeout=ACK_S)
    x = np.concatenate([b.samples for b in src], axis=1)
    assert x.shape == (4, 9600)
    assert src.stream is not None
    first = src.stream.first_seq * 160
    expected = tone_signal(first, 9600, 4, 16000).T.astype(np.float32) / 32768.0
    frames_ok = frames_silent = 0
    for k in range(9600 // 160):
        seg, ref = x[:, k * 160 : (k + 1) * 160], expected[:, k * 160 : (k + 1) * 160]
        if np.array_equal(seg, ref):
            frames_ok += 1
        else:
            assert not seg.any(), f"frame {k} is neither the MCU's samples nor silence"
            frames_silent += 1
    # frames lost after the last one received are counted but cut off by duration_s
    assert 0 < frames_silent <= src.lost_frames and frames_ok > 0


def test_a_line_slower_than_the_microphones_drops_frames_but_keeps_stream_time(make_sim: MakeSim) -> None:
    sim = make_sim(faults=Faults(baud=460800))  # 46 kB/s for a 130 kB/s stream
    array = resolve("respeaker-4mic-hat", None)
    src = SerialSource(sim.port, array, block_size=1600, duration_s=0.5, ack_timeout=ACK_S)
    x = np.concatenate([b.samples for b in src], axis=1)
    assert x.shape == (4, 8000)
    assert src.lost_frames > 0 and src.mcu_dropped_frames > 0
    expected = tone_signal(0, 8000, 4, 16000).T.astype(np.float32) / 32768.0
    kept = [k for k in range(50) if x[:, k * 160 : (k + 1) * 160].any()]
    assert kept
    for k in kept:
        np.testing.assert_array_equal(x[:, k * 160 : (k + 1) * 160], expected[:, k * 160 : (k + 1) * 160])


def test_a_48khz_mcu_is_resampled_to_16khz_keeping_its_tones(make_sim: MakeSim) -> None:
    sim = make_sim(sample_rate=48000)
    array = resolve("respeaker-4mic-hat", None)
    x = np.concatenate([b.samples for b in SerialSource(sim.port, array, block_size=1600, duration_s=0.5)], axis=1)
    assert x.shape == (4, 8000)
    for ch in range(4):
        spectrum = np.abs(np.fft.rfft(x[ch, 2000:] * np.hanning(6000)))
        peak_hz = np.argmax(spectrum) * 16000 / 6000
        assert abs(peak_hz - (440.0, 1000.0, 1500.0, 2500.0)[ch]) < 3.0
        level = np.sqrt(np.mean(x[ch, 2000:] ** 2))
        assert level == pytest.approx(0.25 / np.sqrt(2), rel=0.1)  # the tone's amplitude survives


def test_frame_size_follows_the_config_from_the_next_stream(make_sim: MakeSim) -> None:
    sim = make_sim()
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        c.set_config("frame_samples", 256)
        with pytest.raises(NakError, match="OUT_OF_RANGE"):
            c.set_config("frame_samples", 257)  # 4 channels x 257 x 2 bytes > 2048
    array = resolve("respeaker-4mic-hat", None)
    src = SerialSource(sim.port, array, block_size=1000, duration_s=0.2, ack_timeout=ACK_S)
    x = np.concatenate([b.samples for b in src], axis=1)
    assert src.stream is not None and src.stream.frame_samples == 256
    np.testing.assert_array_equal(x, tone_signal(0, 3200, 4, 16000).T.astype(np.float32) / 32768.0)


def test_serial_source_refuses_a_channel_count_mismatch(make_sim: MakeSim) -> None:
    sim = make_sim(channels=2)
    src = SerialSource(sim.port, resolve("respeaker-4mic-hat", None), duration_s=0.1, ack_timeout=ACK_S)
    with pytest.raises(DeviceError, match="streams 2 channel"):
        list(src)
    with pytest.raises(ConfigError, match="duration_s"):
        SerialSource(sim.port, resolve("respeaker-4mic-hat", None), duration_s=-1.0)


# --- flashing ------------------------------------------------------------------------------------
def test_flash_switches_to_the_new_image_and_reports_progress(make_sim: MakeSim, tmp_path: Path) -> None:
    sim = make_sim()
    old = sim.slot_bytes(0)
    new = fwimage.build_image(body(5000, 6), "1.1.0")
    seen: list[tuple[int, int]] = []
    res = flash_serial(
        sim.port, new, version="1.1.0", progress=lambda d, t: seen.append((d, t)), ack_timeout=ACK_S, chunk_size=CHUNK
    )
    assert (res.slot, res.version, res.previous_version) == (1, "1.1.0", FACTORY_VERSION)
    assert (res.bytes_sent, res.reconnects, res.resumed_from) == (len(new), 0, 0)
    assert res.sha256 == hashlib.sha256(new).hexdigest()
    assert seen[-1] == (len(new), len(new)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert assert_new_or_old(tmp_path / "mcu", old, new) == "new"
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        assert c.hello is not None and c.hello.firmware_version == "1.1.0"
    again = flash_serial(sim.port, new, version="1.1.0", ack_timeout=ACK_S, chunk_size=CHUNK)
    assert again.unchanged and again.bytes_sent == 0
    # a bare body is wrapped in a header; a header that disagrees with --version is refused
    res2 = flash_serial(sim.port, body(700, 7), version="1.2.0", ack_timeout=ACK_S, chunk_size=CHUNK)
    assert res2.slot == 0 and res2.size == 700 + fwimage.HEADER_SIZE
    with pytest.raises(InputError, match=r"says version '1\.1\.0', expected '9'"):
        flash_serial(sim.port, new, version="9", ack_timeout=ACK_S, chunk_size=CHUNK)
    with pytest.raises(InputError, match=r"^fw\.bin: empty"):  # the image's file is named
        flash_serial(sim.port, b"", version="9", ack_timeout=ACK_S, chunk_size=CHUNK, origin="fw.bin")
    with pytest.raises(InputError, match="chunk size"):
        flash_serial(sim.port, new, version="1.1.0", chunk_size=0)
    with pytest.raises(LinkError, match="no such serial port"):  # at once, not after the reconnect window
        flash_serial(str(tmp_path / "ttyNone"), new, version="1.1.0")


@pytest.mark.parametrize(
    "faults",
    [
        Faults(drop=5e-4, seed=1),
        Faults(corrupt=5e-4, seed=2),
        Faults(duplicate=5e-4, seed=3),
        Faults(drop=3e-4, corrupt=3e-4, duplicate=3e-4, seed=4),
        Faults(baud=115200, seed=5),
    ],
    ids=["drop", "corrupt", "duplicate", "all", "slow"],
)
def test_flash_through_a_faulty_line_ends_new_and_verified(make_sim: MakeSim, tmp_path: Path, faults: Faults) -> None:
    sim = make_sim(faults=faults)
    old = sim.slot_bytes(0)
    new = fwimage.build_image(body(6000 if faults.baud is None else 2500, 8), "2.0.0")
    res = flash_serial(sim.port, new, version="2.0.0", ack_timeout=ACK_S, chunk_size=CHUNK)
    assert assert_new_or_old(tmp_path / "mcu", old, new) == "new"
    assert res.slot == 1
    if faults.baud is None:
        assert res.retries > 0  # the faults did happen and were recovered from


def test_power_loss_mid_flash_then_resume_on_the_next_run(make_sim: MakeSim, tmp_path: Path) -> None:
    sim = make_sim(faults=Faults(power_loss_after=3000))
    old = sim.slot_bytes(0)
    new = fwimage.build_image(body(8000, 9), "3.0.0")
    with pytest.raises(FlashError, match="run the same command again to resume") as e:
        flash_serial(sim.port, new, version="3.0.0", reconnect_s=0.5, ack_timeout=ACK_S, chunk_size=CHUNK)
    assert f"the running firmware ({FACTORY_VERSION}) was not changed" in str(e.value)
    assert sim.power_lost
    assert assert_new_or_old(tmp_path / "mcu", old, new) == "old"
    sim2 = make_sim()  # power back
    with BridgeClient(sim2.port, ack_timeout=ACK_S) as c:
        st = c.flash_status()
        assert st.state == P.FlashState.RECEIVING and 0 < st.offset <= 3000
        assert c.hello is not None and c.hello.firmware_version == FACTORY_VERSION
    res = flash_serial(sim2.port, new, version="3.0.0", ack_timeout=ACK_S, chunk_size=CHUNK)
    assert res.resumed_from == st.offset and res.bytes_sent == len(new) - st.offset
    assert assert_new_or_old(tmp_path / "mcu", old, new) == "new"


def test_power_loss_mid_flash_is_resumed_within_one_call(make_sim: MakeSim, tmp_path: Path) -> None:
    sim = make_sim(faults=Faults(power_loss_after=4000, drop=2e-4, seed=6))
    old = sim.slot_bytes(0)
    new = fwimage.build_image(body(9000, 10), "3.1.0")

    def power_back() -> None:
        sim.wait(30)
        time.sleep(0.3)
        make_sim()

    t = threading.Thread(target=power_back)
    t.start()
    res = flash_serial(sim.port, new, version="3.1.0", reconnect_s=10, ack_timeout=ACK_S, chunk_size=CHUNK)
    t.join()
    assert res.reconnects >= 1 and 0 < res.resumed_from <= 4000
    assert assert_new_or_old(tmp_path / "mcu", old, new) == "new"


def test_killed_simulator_process_resumes_from_its_flash(tmp_path: Path) -> None:
    """kill -9 of the simulator process mid-transfer (a real power cut), then a restart."""
    state, link = tmp_path / "mcu", str(tmp_path / "ttyMCU")
    cmd = [sys.executable, "-m", "firmware_bridge.simulator", "--state", str(state), "--link", link]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO)]
    try:
        assert procs[0].stdout is not None and procs[0].stdout.readline().strip() == link.encode()
        old = (state / "slot_a.bin").read_bytes()
        new = fwimage.build_image(body(12000, 11), "4.0.0")
        killed_at: list[int] = []

        def progress(done: int, total: int) -> None:
            if not killed_at and done >= total // 2:
                killed_at.append(done)
                procs[0].send_signal(signal.SIGKILL)
                procs[0].wait()
                procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO))

        res = flash_serial(
            link, new, version="4.0.0", progress=progress, reconnect_s=20, ack_timeout=ACK_S, chunk_size=CHUNK
        )
        assert killed_at and res.reconnects >= 1
        assert 0 < res.resumed_from <= killed_at[0] + CHUNK
        assert assert_new_or_old(state, old, new) == "new"
    finally:
        for p in procs:
            p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()


@pytest.mark.parametrize("defect", ["selftest-flag", "body-hash"])
def test_an_image_that_fails_its_boot_self_test_is_rolled_back(make_sim: MakeSim, tmp_path: Path, defect: str) -> None:
    sim = make_sim()
    old = sim.slot_bytes(0)
    if defect == "selftest-flag":
        bad = fwimage.build_image(body(3000, 12), "5.0.0", flags=fwimage.FLAG_SELFTEST_FAIL)
    else:
        ba = bytearray(fwimage.build_image(body(3000, 12), "5.0.0"))
        ba[-5] ^= 0xFF
        bad = bytes(ba)
    with pytest.raises(InputError):  # the host refuses it unless told not to check
        flash_serial(sim.port, bad, version="5.0.0", ack_timeout=ACK_S, chunk_size=CHUNK)
    rolled_back = f"failed its boot self-test in slot B; the MCU rolled back: slot A runs '{FACTORY_VERSION}'"
    with pytest.raises(FlashError, match=re.escape(rolled_back)):
        flash_serial(sim.port, bad, version="5.0.0", check=False, ack_timeout=ACK_S, chunk_size=CHUNK)
    assert assert_new_or_old(tmp_path / "mcu", old, bad) == "old"
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        boot = c.boot_status()
        assert (boot.active_slot, boot.boot_result, boot.tried_slot) == (0, P.BootResult.ROLLED_BACK, 1)
        assert c.hello is not None and c.hello.firmware_version == FACTORY_VERSION


def test_a_sent_but_uncommitted_image_is_committed_without_resending(make_sim: MakeSim, tmp_path: Path) -> None:
    sim = make_sim()
    old = sim.slot_bytes(0)
    new = fwimage.build_image(body(3000, 13), "6.0.0")
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:  # an earlier run got as far as VERIFY
        c.flash_begin(len(new), hashlib.sha256(new).digest(), "6.0.0")
        for off in range(0, len(new), 1000):
            c.flash_chunk(off, new[off : off + 1000])
        c.flash_verify(len(new))
        assert c.flash_status().state == P.FlashState.VERIFIED
    res = flash_serial(sim.port, new, version="6.0.0", ack_timeout=ACK_S, chunk_size=CHUNK)
    assert res.bytes_sent == 0 and res.resumed_from == len(new)
    assert assert_new_or_old(tmp_path / "mcu", old, new) == "new"


def test_corrupted_running_slot_falls_back_or_boots_into_recovery(make_sim: MakeSim, tmp_path: Path) -> None:
    sim = make_sim()
    new = fwimage.build_image(body(2000, 14), "7.0.0")
    flash_serial(sim.port, new, version="7.0.0", ack_timeout=ACK_S, chunk_size=CHUNK)  # A factory, B 7.0.0
    sim.stop()
    slot_b = tmp_path / "mcu" / "slot_b.bin"
    data = bytearray(slot_b.read_bytes())
    data[100] ^= 1  # flash rot in the running slot
    slot_b.write_bytes(bytes(data))
    fallback = make_sim()
    with BridgeClient(fallback.port, ack_timeout=ACK_S) as c:
        boot = c.boot_status()
        assert (boot.active_slot, boot.boot_result) == (0, P.BootResult.FALLBACK)
        assert c.hello is not None and c.hello.firmware_version == FACTORY_VERSION
    fallback.stop()
    (tmp_path / "mcu" / "slot_a.bin").write_bytes(b"erased")
    rec = make_sim()
    with BridgeClient(rec.port, ack_timeout=ACK_S) as c:
        assert c.boot_status().boot_result == P.BootResult.NO_IMAGE
        assert c.hello is not None and c.hello.firmware_version == ""
    res = flash_serial(rec.port, new, version="7.0.0", ack_timeout=ACK_S, chunk_size=CHUNK)  # recovery flashing
    assert res.previous_version == ""
    with BridgeClient(rec.port, ack_timeout=ACK_S) as c:
        boot = c.boot_status()
        assert boot.boot_result == P.BootResult.OK and boot.running.version == "7.0.0"


def test_cli_image_build_check_and_flash(
    make_sim: MakeSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = make_sim()
    raw, img = tmp_path / "fw.bin", tmp_path / "fw.img"
    raw.write_bytes(body(1500, 15))
    rc, out, err = run_cli(["bridge", "image", "build", str(raw), "--version", "8.0.0", "--out", str(img)], capsys)
    assert rc == 0, err
    rc, out, err = run_cli(["bridge", "image", "check", str(img)], capsys)
    assert rc == 0 and "self-test passes" in out
    rc, out, err = run_cli(["bridge", "image", "check", str(raw)], capsys)
    assert rc == 1 and "magic" in err
    argv = ["bridge", "flash", sim.port, str(img), "--version", "8.0.0", "--chunk", "512", "--json"]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert res["version"] == "8.0.0" and res["slot"] == 1
    assert res["sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()
    rc, out, err = run_cli(["bridge", "flash", sim.port, str(tmp_path / "missing"), "--version", "1"], capsys)
    assert rc == 1 and "missing: cannot read" in err


# --- command line --------------------------------------------------------------------------------
def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = tympan_main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_hello_leds_config_status(make_sim: MakeSim, capsys: pytest.CaptureFixture[str]) -> None:
    sim = make_sim()
    rc, out, _ = run_cli(["bridge", "hello", sim.port, "--json", "--timeout-ms", "100"], capsys)
    assert rc == 0 and json.loads(out)["firmware"] == FACTORY_VERSION
    rc, out, _ = run_cli(["bridge", "leds", sim.port, "--az", "90", "--label", "Dog", "--brightness", "255"], capsys)
    assert rc == 0 and sim.leds[3] == class_colour("Dog")
    rc, out, err = run_cli(["bridge", "config", sim.port, "nope=1"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "BAD_KEY" in err and "Traceback" not in err
    rc, out, _ = run_cli(["bridge", "status", sim.port, "--json"], capsys)
    assert rc == 0 and json.loads(out)["slots"]["A"]["version"] == FACTORY_VERSION
    rc, _, err = run_cli(["bridge", "hello", "/dev/null/nope"], capsys)
    assert rc == 1 and "no such serial port" in err
    rc, out, _ = run_cli(["bridge", "ping", sim.port, "--count", "5", "--size", "300", "--json"], capsys)
    row = json.loads(out)
    assert rc == 0 and row["failed"] == 0 and row["frames_ok"] == 6 and row["crc_errors"] == 0
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        boots = c.boot_status().boot_count
    rc, out, err = run_cli(["bridge", "reboot", sim.port], capsys)
    assert rc == 0 and f"runs {FACTORY_VERSION} in slot A" in out, err
    with BridgeClient(sim.port, ack_timeout=ACK_S) as c:
        assert c.boot_status().boot_count == boots + 1


def test_cli_stream_writes_the_mcus_samples(
    make_sim: MakeSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import soundfile as sf

    sim = make_sim()
    out_wav = tmp_path / "rec.wav"
    rc, _, err = run_cli(["bridge", "stream", sim.port, "--seconds", "0.2", "--out", str(out_wav)], capsys)
    assert rc == 0, err
    x, rate = sf.read(out_wav, dtype="int16")
    assert rate == 16000 and x.shape == (3200, 4)
    np.testing.assert_array_equal(x, tone_signal(0, 3200, 4, 16000))
    nowhere = str(tmp_path / "no" / "x.wav")
    rc, _, err = run_cli(["bridge", "stream", sim.port, "--seconds", "0.1", "--out", nowhere], capsys)
    assert rc == 1 and "cannot write" in err
    rc, _, err = run_cli(["bridge", "stream", sim.port, "--seconds", "0", "--out", str(out_wav)], capsys)
    assert rc == 1 and "--seconds 0.0: must be > 0" in err


# --- the MCU's microphones through the edge pipeline ---------------------------------------------
SCENE = REPO / "edge" / "data" / "sample_scene.flac"


def scene_int16(seconds: float) -> np.ndarray:
    from edge.sources import read_audio

    x = read_audio(str(SCENE))[:, : round(seconds * 16000)]
    return np.round(x.T * 32768.0).astype(np.int16)


def test_serial_source_delivers_what_the_file_source_reads(make_sim: MakeSim) -> None:
    from edge.sources import FileSource

    pcm = scene_int16(0.5)
    sim = make_sim(audio=pcm)
    array = resolve("respeaker-4mic-hat", None)
    got = np.concatenate([b.samples for b in SerialSource(sim.port, array, block_size=1600, duration_s=0.5)], axis=1)
    ref = np.concatenate([b.samples for b in FileSource(str(SCENE), block_size=1600, array=array)], axis=1)
    np.testing.assert_array_equal(got, ref[:, :8000])  # the file is 16-bit PCM: int16 round-trips exactly


def test_serial_source_shows_the_current_event_on_the_led_ring(make_sim: MakeSim) -> None:
    sim = make_sim()
    src = SerialSource(sim.port, resolve("respeaker-4mic-hat", None), block_size=160, duration_s=0.1, ack_timeout=ACK_S)
    it = iter(src)
    next(it)
    src.show_event({"ph": "on", "id": 4, "lbl": "Dog", "az": -90.0})
    dog = direction_frame(-90.0, class_colour("Dog"), 12, brightness=64)  # the MCU's default led_brightness
    assert sim.leds == dog and max(range(12), key=lambda i: sum(sim.leds[i])) == 9
    src.show_event({"ph": "off", "id": 3, "lbl": "Bark", "az": 10.0})  # another event ends: the ring stays
    next(it)
    assert sim.leds == dog
    src.show_event({"ph": "off", "id": 4, "lbl": "Dog", "az": -90.0})
    assert sim.leds == [(0, 0, 0)] * 12
    assert len(list(it)) == 8  # the stream went on undisturbed


def test_listen_serial_finds_the_dog_at_its_bearing(make_sim: MakeSim, capsys: pytest.CaptureFixture[str]) -> None:
    sim = make_sim(audio=scene_int16(2.4))
    argv = ["listen", "--serial", sim.port, "--board", "respeaker-4mic-hat", "--duration", "2.4", "--json"]
    rc, out, err = run_cli(argv, capsys)
    assert rc == 0, err
    dogs = [json.loads(line) for line in out.splitlines() if '"Dog"' in line]
    assert dogs, out
    assert all(abs(t["az"] - 60.0) < 10.0 for t in dogs if t.get("az") is not None)
    assert min(t["onset"] for t in dogs) == pytest.approx(1.0, abs=0.2)


def test_tympan_flash_serial_puts_a_bundles_firmware_on_the_mcu(
    make_sim: MakeSim, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's path (issue 9, part A's command): a signed bundle's MCU image via flash_serial."""
    sim = make_sim()
    old = sim.slot_bytes(0)
    fw = tmp_path / "mcu.bin"
    fw.write_bytes(body(4000, 16))
    keys, bundle = tmp_path / "keys", tmp_path / "b.tar.gz"
    assert run_cli(["keys", "new", "--out", str(keys)], capsys)[0] == 0
    build = ["bundle", "build", "--board", "raspberry-pi-4", "--model", str(REPO / "edge" / "models" / "default")]
    build += ["--key", str(keys / "tympan.key"), "--out", str(bundle), "--no-selftest-check"]
    build += ["--mcu-firmware", str(fw), "--mcu-version", "1.4.2"]
    rc, _, err = run_cli(build, capsys)
    assert rc == 0, err
    rc, out, err = run_cli(["flash", "--serial", sim.port, str(bundle), "--pubkey", str(keys / "tympan.pub")], capsys)
    assert rc == 0, err
    assert "1.4.2" in out and "slot B" in out
    new = fwimage.build_image(fw.read_bytes(), "1.4.2")  # a bare body is wrapped in a TYFW header
    assert assert_new_or_old(tmp_path / "mcu", old, new) == "new"
