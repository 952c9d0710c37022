#!/usr/bin/env python3
"""Firmware bridge costs: framing CPU against peers, host CPU of an audio stream, flashing throughput.

1. Framing (COBS) of the two packets that dominate the link, a 4-channel 10 ms AUDIO packet (1292 B)
   and a 1024-byte FLASH_CHUNK packet, side by side in one run: `firmware_bridge.framing` (pure
   Python, per zero-delimited run), the `cobs` package (C extension, the usual PyPI
   choice), and the textbook byte-at-a-time Python loop. Outputs are checked identical. CPU time
   (`time.process_time`), median of repeats.
2. Host CPU to receive a 4-channel 16 kHz stream (100 AUDIO frames per second): frame decode (COBS +
   CRC-32) + packet parse + int16 -> array, as a share of one core.
3. Flashing a 256 KiB image into the simulator over a pseudo-terminal (no baud limit; the simulator
   runs in the same process, fsync off) for several chunk sizes, clean and with 1e-4 per-byte drops:
   wall-clock throughput and host-thread CPU (`time.thread_time`), and the protocol's bytes on the
   wire per image byte.

Writes benchmarks/results/bridge.md and .json. Numbers depend on the machine (a shared, noisy one
here): compare columns of one run, not runs.

    .venv/bin/python benchmarks/bench_bridge.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable

import numpy as np

from firmware_bridge import image as fwimage
from firmware_bridge import protocol as P
from firmware_bridge.faults import Faults
from firmware_bridge.flasher import flash_serial
from firmware_bridge.framing import FrameDecoder, cobs_decode, cobs_encode, encode_frame
from firmware_bridge.simulator import Simulator, tone_signal

HERE = os.path.dirname(os.path.abspath(__file__))


def naive_encode(data: bytes) -> bytes:
    """The textbook byte-at-a-time COBS encoder (the reference the others are checked against)."""
    out = bytearray([0])
    code_at, code = 0, 1
    for b in data:
        if b == 0:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at, code = len(out), 1
                out.append(0)
    out[code_at] = code
    return bytes(out)


def naive_decode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        i += 1
        for _ in range(code - 1):
            out.append(data[i])
            i += 1
        if code < 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def per_call_us(fn: Callable[[bytes], bytes], arg: bytes, calls: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(calls):
            fn(arg)
        times.append((time.process_time() - t) / calls)
    return statistics.median(times) * 1e6


def audio_packet() -> bytes:
    pcm = tone_signal(0, 160, 4, 16000).astype("<i2").tobytes()
    return P.Packet(P.PacketType.EVENT, 0, P.Command.AUDIO, P.encode_audio(0, pcm, 4)).encode()


def chunk_packet() -> bytes:
    data = np.random.default_rng(0).integers(0, 256, 1024, dtype=np.uint8).tobytes()
    return P.Packet(P.PacketType.REQUEST, 1, P.Command.FLASH_CHUNK, bytes(4) + data).encode()


def bench_framing(repeats: int) -> list[dict[str, object]]:
    from cobs import cobs as cobs_c

    rows = []
    for name, pkt in (("AUDIO 4ch x 160", audio_packet()), ("FLASH_CHUNK 1024", chunk_packet())):
        enc = cobs_encode(pkt)
        assert enc == cobs_c.encode(pkt) == naive_encode(pkt), "encoders disagree"
        assert cobs_decode(enc) == cobs_c.decode(enc) == naive_decode(enc) == pkt, "decoders disagree"
        calls = 300
        for impl, e, d in (
            ("tympan (Python, per run)", cobs_encode, cobs_decode),
            ("cobs 1.2 (C extension)", cobs_c.encode, cobs_c.decode),
            ("byte loop (Python)", naive_encode, naive_decode),
        ):
            rows.append(
                {
                    "packet": name,
                    "bytes": len(pkt),
                    "impl": impl,
                    "encode_us": round(per_call_us(e, pkt, calls, repeats), 2),
                    "decode_us": round(per_call_us(d, enc, calls, repeats), 2),
                }
            )
    return rows


def bench_stream(repeats: int) -> dict[str, object]:
    """Host CPU for one second of a 4-channel stream: 100 frames through FrameDecoder + parse."""
    frames = []
    for k in range(100):
        pcm = tone_signal(k * 160, 160, 4, 16000).astype("<i2").tobytes()
        packet = P.Packet(P.PacketType.EVENT, 0, P.Command.AUDIO, P.encode_audio(k, pcm, 4))
        frames.append(encode_frame(packet.encode()))
    wire = b"".join(frames)
    times = []
    for _ in range(repeats):
        t = time.process_time()
        dec = FrameDecoder()
        for i in range(0, len(wire), 4096):  # reads as a serial port delivers them
            for raw in dec.feed(wire[i : i + 4096]):
                pkt = P.Packet.decode(raw)
                _seq, ch, n, data = P.decode_audio(pkt.payload)
                np.frombuffer(data, dtype="<i2").reshape(n, ch).astype(np.float32)
        times.append(time.process_time() - t)
        assert dec.stats.frames == 100
    cpu = statistics.median(times)
    return {
        "wire_bytes_per_s": len(wire),
        "line_rate_baud_needed": len(wire) * 10,
        "host_cpu_s_per_s": round(cpu, 5),
        "share_of_one_core_pct": round(100 * cpu, 2),
    }


def bench_flash(size: int) -> list[dict[str, object]]:
    body = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
    rows = []
    for drop in (0.0, 1e-4):
        for chunk in (256, 1024, 2048):
            with tempfile.TemporaryDirectory() as tmp:
                sim = Simulator(tmp, durable=False, faults=Faults(drop=drop, seed=7)).start()
                img = fwimage.build_image(body, f"b{chunk}")
                try:
                    w, c = time.perf_counter(), time.thread_time()
                    res = flash_serial(sim.port, img, version=f"b{chunk}", chunk_size=chunk, ack_timeout=0.1)
                    wall, cpu = time.perf_counter() - w, time.thread_time() - c
                finally:
                    sim.stop()
            per_chunk = encode_frame(bytes(P.HEADER.size + 4 + chunk))
            ack = encode_frame(bytes(P.HEADER.size + 4))
            rows.append(
                {
                    "chunk": chunk,
                    "drop_per_byte": drop,
                    "image_bytes": len(img),
                    "wall_s": round(wall, 3),
                    "kB_per_s": round(len(img) / wall / 1000, 1),
                    "host_cpu_s": round(cpu, 3),
                    "retries": res.retries,
                    "wire_bytes_per_image_byte": round((len(per_chunk) + len(ack)) / chunk, 4),
                    "time_at_921600_baud_s": round(len(img) / chunk * (len(per_chunk) + len(ack)) * 10 / 921600, 2),
                }
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--image-kib", type=int, default=256)
    args = ap.parse_args()
    assert threading.active_count() == 1
    framing = bench_framing(args.repeats)
    stream = bench_stream(args.repeats)
    flash = bench_flash(args.image_kib * 1024)
    machine = (platform.machine(), platform.processor(), f"{os.cpu_count()} cores (shared)")
    result = {
        "machine": " ".join(x for x in machine if x),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "framing": framing,
        "stream": stream,
        "flash": flash,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "bridge.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    lines = [
        "# Firmware bridge: framing, stream and flashing costs",
        "",
        f"`benchmarks/bench_bridge.py`, {result['machine']}, Python {result['python']}; CPU times are medians of "
        f"{args.repeats} repeats (`time.process_time`). A shared, noisy machine: compare within a table.",
        "",
        "## COBS framing per packet (CPU µs)",
        "",
        "| packet | bytes | implementation | encode µs | decode µs |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['packet']} | {r['bytes']} | {r['impl']} | {r['encode_us']} | {r['decode_us']} |" for r in framing]
    lines += [
        "",
        "## Receiving a 4-channel 16 kHz stream (100 AUDIO frames per second)",
        "",
        f"- {stream['wire_bytes_per_s']} bytes per second on the wire: needs a line of at least "
        f"{stream['line_rate_baud_needed']} baud (USB CDC or a 2-3 Mbaud UART).",
        f"- Host CPU (decode + CRC + parse + int16 -> float32): {stream['host_cpu_s_per_s']} s per second of "
        f"audio = {stream['share_of_one_core_pct']} % of one core.",
        "",
        f"## Flashing a {args.image_kib} KiB image into the simulator over a pty",
        "",
        "| chunk | drop/byte | wall s | kB/s | host CPU s | retries | wire B per image B | at 921600 baud, s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['chunk']} | {r['drop_per_byte']:g} | {r['wall_s']} | {r['kB_per_s']} | {r['host_cpu_s']} | "
        f"{r['retries']} | {r['wire_bytes_per_image_byte']} | {r['time_at_921600_baud_s']} |"
        for r in flash
    ]
    lines += [
        "",
        "The pty has no baud limit, so the wall times measure the protocol's round trips and both ends'",
        "CPU; the last column is the line-rate bound on a real 921600-baud UART (request + ACK frames).",
        "",
    ]
    with open(os.path.join(HERE, "results", "bridge.md"), "w") as fh:
        fh.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
