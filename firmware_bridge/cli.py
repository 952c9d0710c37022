"""`tympan bridge ...`: talk to the companion MCU (or the simulator) over a serial port.

    tympan bridge hello PORT                          what the MCU is and runs
    tympan bridge ping PORT [--count N --size B]      link check: round trips, retries, CRC errors
    tympan bridge config PORT [KEY[=VALUE] ...]       list, read or set configuration values
    tympan bridge leds PORT --az DEG [--label L]      show a direction on the LED ring (--off: dark)
    tympan bridge stream PORT --seconds S --out F.wav record the MCU's microphones
    tympan bridge status PORT                         boot result, A/B slots, an interrupted transfer
    tympan bridge flash PORT IMAGE --version V        update the MCU's firmware (resumes, rolls back)
    tympan bridge reboot PORT
    tympan bridge image build BODY --version V --out F | image check F
    tympan bridge simulate [--link PATH] [faults]     an MCU on a pseudo-terminal (prints its port)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from edge.errors import ConfigError, DeviceError, InputError
from firmware_bridge import protocol as P
from firmware_bridge.errors import LinkError


def add_bridge(sub: Any) -> None:
    p = sub.add_parser(
        "bridge",
        help="the companion MCU over a serial port: hello, config, LEDs, audio, flashing, simulator",
        description="Talk to the array board's microcontroller (protocol: hardware/protocol.md).",
    )
    cmds = p.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)

    def port_cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        c = cmds.add_parser(name, help=help_text, description=help_text)
        c.add_argument("port", metavar="PORT", help="serial port (e.g. /dev/ttyACM0, or the simulator's)")
        c.add_argument("--baud", type=int, default=P.DEFAULT_BAUD, help=f"baud rate (default {P.DEFAULT_BAUD})")
        c.add_argument(
            "--timeout-ms",
            type=float,
            default=P.ACK_TIMEOUT_S * 1000,
            help=f"answer timeout per try, beyond the time on the wire (default {P.ACK_TIMEOUT_S * 1000:g})",
        )
        c.add_argument("--retries", type=int, default=P.RETRIES, help=f"resends before giving up (default {P.RETRIES})")
        return c

    c = port_cmd("hello", "what the MCU is: firmware, board, slots, microphones, LED ring")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.set_defaults(func=cmd_hello)

    c = port_cmd("ping", "check the link: round-trip times, retries, rejected frames")
    c.add_argument("--count", type=int, default=20, help="pings to send (default 20)")
    c.add_argument("--size", type=int, default=64, help="payload bytes per ping (default 64)")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.set_defaults(func=cmd_ping)

    c = port_cmd("config", "list configuration values, read KEY, or set KEY=VALUE")
    c.add_argument("items", nargs="*", metavar="KEY[=VALUE]")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.set_defaults(func=cmd_config)

    c = port_cmd("leds", "show a direction on the LED ring")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--az", type=float, metavar="DEG", help="azimuth in degrees (counter-clockwise from +x)")
    g.add_argument("--off", action="store_true", help="turn every LED off")
    c.add_argument("--label", help="colour by this class label (default: white)")
    c.add_argument("--colour", metavar="RRGGBB", help="colour in hex instead of the label's")
    c.add_argument("--brightness", type=int, help="0-255 (default: the MCU's led_brightness)")
    c.set_defaults(func=cmd_leds)

    c = port_cmd("stream", "record the MCU's microphones to a WAV file")
    c.add_argument("--seconds", type=float, required=True, metavar="S")
    c.add_argument("--out", required=True, metavar="FILE.wav")
    c.set_defaults(func=cmd_stream)

    c = port_cmd("status", "boot result, what each slot holds, an interrupted transfer")
    c.add_argument("--json", action="store_true", help="one JSON object")
    c.set_defaults(func=cmd_status)

    c = port_cmd("flash", "write firmware to the inactive slot, verify, switch, confirm it boots")
    c.add_argument("image", metavar="IMAGE", help="firmware image (with a TYFW header, or a bare body)")
    c.add_argument("--version", required=True, help="firmware version (must match the image's header)")
    c.add_argument(
        "--chunk",
        type=int,
        default=P.DEFAULT_CHUNK,
        help=f"bytes per chunk (default {P.DEFAULT_CHUNK}; the MCU may lower it)",
    )
    c.add_argument("--force", action="store_true", help="flash even if the MCU already runs this image")
    c.add_argument("--json", action="store_true", help="print the result as one JSON object")
    c.set_defaults(func=cmd_flash)

    c = port_cmd("reboot", "reboot the MCU and wait for it to answer again")
    c.set_defaults(func=cmd_reboot)

    c = cmds.add_parser("image", help="build or check a firmware image (TYFW header)")
    ic = c.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    b = ic.add_parser("build", help="wrap a firmware body in a TYFW header")
    b.add_argument("body", metavar="BODY")
    b.add_argument("--version", required=True)
    b.add_argument("--out", required=True, metavar="FILE")
    b.set_defaults(func=cmd_image_build)
    k = ic.add_parser("check", help="run the boot self-test on an image file")
    k.add_argument("file", metavar="FILE")
    k.set_defaults(func=cmd_image_check)

    from firmware_bridge import simulator

    c = cmds.add_parser("simulate", help="run a simulated MCU on a pseudo-terminal (prints its port)")
    simulator.add_arguments(c)
    c.set_defaults(func=cmd_simulate)


# --- helpers -------------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> Any:
    from firmware_bridge.client import BridgeClient

    if args.timeout_ms <= 0:
        raise InputError(f"--timeout-ms {args.timeout_ms}: must be > 0")
    if args.retries < 0:
        raise InputError(f"--retries {args.retries}: must be >= 0")
    return BridgeClient(args.port, baud=args.baud, ack_timeout=args.timeout_ms / 1000.0, retries=args.retries)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None


def _hello_dict(h: Any) -> dict[str, Any]:
    return {
        "protocol": h.protocol_version,
        "firmware": h.firmware_version,
        "board": h.board,
        "uid": h.uid,
        "active_slot": P.slot_name(h.active_slot),
        "boot_result": _enum_name(P.BootResult, h.boot_result),
        "channels": h.channels,
        "sample_rate": h.sample_rate,
        "frame_samples": h.frame_samples,
        "n_leds": h.n_leds,
        "led0_azimuth_deg": h.led0_azimuth_deg,
        "leds_clockwise": h.leds_clockwise,
        "max_chunk": h.max_chunk,
    }


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return f"unknown({value})"


# --- commands ------------------------------------------------------------------------------------
def cmd_hello(args: argparse.Namespace) -> int:
    with _client(args) as c:
        d = _hello_dict(c.hello)
    if args.json:
        print(json.dumps(d))
    else:
        for k, v in d.items():
            print(f"{k:18} {v}")
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    import os

    if args.count < 1:
        raise InputError(f"--count {args.count}: must be >= 1")
    if not 0 <= args.size <= P.MAX_PAYLOAD:
        raise InputError(f"--size {args.size}: must be 0-{P.MAX_PAYLOAD} bytes")
    failed = 0
    with _client(args) as c:
        for _ in range(args.count):
            try:
                c.ping(os.urandom(args.size))
            except LinkError:
                failed += 1
        st, dec = c.stats, c.decoder_stats
    rtt = sorted(list(st.rtt_s)[1:]) or [0.0]  # the first round trip is HELLO's
    row = {
        "port": args.port,
        "sent": args.count,
        "failed": failed,
        "retries": st.retries,
        "timeouts": st.timeouts,
        "rtt_ms_median": round(statistics.median(rtt) * 1000, 3),
        "rtt_ms_max": round(rtt[-1] * 1000, 3),
        "frames_ok": dec.frames,
        "crc_errors": dec.crc_errors,
        "cobs_errors": dec.cobs_errors,
        "oversize": dec.oversize,
        "stale_answers": st.stale_answers,
    }
    if args.json:
        print(json.dumps(row))
    else:
        print(
            f"{args.port}: {args.count - failed}/{args.count} pings of {args.size} B answered; "
            f"rtt median {row['rtt_ms_median']} ms, max {row['rtt_ms_max']} ms; {st.retries} retries, "
            f"{dec.crc_errors} CRC and {dec.cobs_errors} COBS errors, {st.stale_answers} late duplicates"
        )
    return 1 if failed else 0


def cmd_config(args: argparse.Namespace) -> int:
    out: dict[str, int] = {}
    with _client(args) as c:
        if not args.items:
            items = c.list_config()
            if args.json:
                print(json.dumps({i.key: {"value": i.value, "min": i.minimum, "max": i.maximum} for i in items}))
            else:
                for i in items:
                    print(f"{i.key:18} {i.value:8d}   [{i.minimum}, {i.maximum}]")
            return 0
        for item in args.items:
            if "=" in item:
                key, _, raw = item.partition("=")
                try:
                    value = int(raw, 0)
                except ValueError:
                    raise InputError(f"{item!r}: the value must be an integer") from None
                out[key] = c.set_config(key, value)
            else:
                out[item] = c.get_config(item)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k} = {v}")
    return 0


def cmd_leds(args: argparse.Namespace) -> int:
    from firmware_bridge.leds import class_colour, direction_frame, parse_colour

    with _client(args) as c:
        h = c.hello
        if args.off:
            c.set_leds([(0, 0, 0)] * h.n_leds)
            return 0
        if args.colour and args.label:
            raise InputError("--colour and --label: give one")
        colour = parse_colour(args.colour) if args.colour else class_colour(args.label) if args.label else (255,) * 3
        brightness = args.brightness if args.brightness is not None else c.get_config("led_brightness")
        if not 0 <= brightness <= 255:
            raise ConfigError(f"--brightness {brightness}: must be 0-255")
        frame = direction_frame(
            args.az,
            colour,
            h.n_leds,
            led0_azimuth_deg=h.led0_azimuth_deg,
            clockwise=h.leds_clockwise,
            brightness=brightness,
        )
        c.set_leds(frame)
    lit = ", ".join(f"{i}:#{r:02x}{g:02x}{b:02x}" for i, (r, g, b) in enumerate(frame) if (r, g, b) != (0, 0, 0))
    print(f"az {args.az:g}° -> LEDs {lit or 'none (brightness 0)'}")
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile as sf

    if not args.seconds > 0:
        raise InputError(f"--seconds {args.seconds}: must be > 0")
    with _client(args) as c:
        h = c.hello
        try:
            out = sf.SoundFile(args.out, "w", samplerate=h.sample_rate, channels=h.channels, subtype="PCM_16")
        except (sf.LibsndfileError, RuntimeError, OSError, TypeError) as e:
            raise InputError(f"{args.out}: cannot write ({e})") from None
        total = round(args.seconds * h.sample_rate)
        lost = written = 0
        with out:
            info = c.stream_start()
            try:
                if (info.sample_rate, info.channels) != (h.sample_rate, h.channels):
                    raise DeviceError(f"{args.port}: the stream's format differs from what HELLO announced")
                expected = info.first_seq
                while written < total:
                    frame = c.read_audio(5.0)
                    if frame is None:
                        raise DeviceError(f"{args.port}: the MCU sent no audio for 5 s")
                    ahead = (frame.seq - expected) & 0xFFFFFFFF
                    if ahead >= 0x80000000:
                        continue  # a frame number already written
                    gap = np.zeros((ahead * frame.samples.shape[0], info.channels), dtype=np.int16)
                    lost += ahead
                    expected = (frame.seq + 1) & 0xFFFFFFFF
                    data = np.concatenate([gap, frame.samples])[: total - written]
                    out.write(data)
                    written += data.shape[0]
            finally:
                _sent, dropped = c.stream_stop()
    print(
        f"{args.out}: {written / info.sample_rate:.2f} s, {info.channels} ch at {info.sample_rate} Hz; "
        f"{lost} frame(s) lost on the link (silence), {dropped} not sent by the MCU",
        file=sys.stderr,
    )
    return 0


def _status_dict(boot: Any, staged: Any) -> dict[str, Any]:
    return {
        "active_slot": P.slot_name(boot.active_slot),
        "boot_result": _enum_name(P.BootResult, boot.boot_result),
        "tried_slot": P.slot_name(boot.tried_slot),
        "slots": {
            P.slot_name(i): {"valid": s.valid, "version": s.version, "size": s.size, "sha256": s.sha256.hex()}
            for i, s in enumerate(boot.slots)
        },
        "transfer": {
            "state": _enum_name(P.FlashState, staged.state),
            "slot": P.slot_name(staged.slot),
            "version": staged.version,
            "received": staged.offset,
            "size": staged.size,
        },
    }


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        d = _status_dict(c.boot_status(), c.flash_status())
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"running slot {d['active_slot']} (last boot: {d['boot_result']}, tried slot {d['tried_slot']})")
    for name, s in d["slots"].items():
        what = f"{s['version']}  {s['size']} B  sha256 {s['sha256'][:16]}..." if s["valid"] else "no valid image"
        print(f"  slot {name}: {what}")
    t = d["transfer"]
    if t["state"] != "IDLE":
        print(f"  transfer: {t['version']} to slot {t['slot']}: {t['received']} of {t['size']} B ({t['state']})")
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    import dataclasses

    from firmware_bridge.flasher import flash_serial

    data = _read(args.image)
    last = [-1.0]

    def progress(done: int, total: int) -> None:
        pct = 100.0 * done / total
        if pct - last[0] >= 10 or done == total:
            last[0] = pct
            print(f"  {done}/{total} B ({pct:.0f}%)", file=sys.stderr, flush=True)

    res = flash_serial(
        args.port,
        data,
        version=args.version,
        progress=None if args.json else progress,
        baud=args.baud,
        chunk_size=args.chunk,
        ack_timeout=args.timeout_ms / 1000.0,
        retries=args.retries,
        force=args.force,
        origin=args.image,
    )
    if args.json:
        print(json.dumps(dataclasses.asdict(res)))
    elif res.unchanged:
        print(f"{args.port}: already runs {res.version} (slot {res.slot_name}); nothing sent (--force to flash anyway)")
    else:
        print(
            f"{args.port}: {res.previous_version or 'nothing'} -> {res.version} in slot {res.slot_name}, "
            f"verified and running ({res.size} B, {res.bytes_sent} sent, resumed from {res.resumed_from}, "
            f"{res.reconnects} reconnect(s), {res.retries} retries, {res.elapsed_s:.1f} s)"
        )
    return 0


def cmd_reboot(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.reboot()
    deadline = time.monotonic() + P.BOOT_TIMEOUT_S
    time.sleep(P.REBOOT_DELAY_S)
    while True:
        try:
            with _client(args) as c:
                h = c.hello
                break
        except LinkError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    print(f"{args.port}: rebooted; runs {h.firmware_version or 'no image'} in slot {P.slot_name(h.active_slot)}")
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    from firmware_bridge.image import build_image

    data = build_image(_read(args.body), args.version)
    with open(args.out, "wb") as fh:
        fh.write(data)
    print(f"{args.out}: firmware {args.version}, {len(data)} B")
    return 0


def cmd_image_check(args: argparse.Namespace) -> int:
    from firmware_bridge.image import check_image

    head = check_image(_read(args.file), args.file)
    print(f"{args.file}: firmware {head.version}, body {head.body_length} B, self-test passes")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from firmware_bridge.simulator import run

    return run(args)
