"""The edge package's subcommands: `tympan listen`, `tympan tag`, `tympan locate`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edge.errors import InputError, TympanError

log = logging.getLogger(__name__)


def _array_flags(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--board", metavar="NAME", help="board or array profile name (see `tympan boards list`)")
    g.add_argument("--array", metavar="FILE", help="array geometry JSON file (ARCHITECTURE.md format)")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="model directory, .tflite or .onnx (default: bundled)")
    p.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "litert", "onnxruntime"],
        help="model runtime (default: LiteRT if installed, else ONNX Runtime)",
    )
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")


def add_listen(sub: Any) -> None:
    p = sub.add_parser(
        "listen",
        help="detect and localise sound events in a file or from a microphone array",
        description="Stream audio through the edge pipeline and report events with onset, offset and direction.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="audio file (WAV/FLAC/OGG, any rate and channel count)")
    src.add_argument(
        "--device",
        nargs="?",
        const="",
        metavar="NAME",
        help="capture from a sound device (name substring or index; default: the array's or the system's)",
    )
    src.add_argument(
        "--serial", metavar="PORT", help="capture from the array board's MCU over a serial port (tympan bridge)"
    )
    from firmware_bridge.protocol import DEFAULT_BAUD

    p.add_argument("--serial-baud", type=int, metavar="B", help=f"baud rate for --serial (default {DEFAULT_BAUD})")
    _array_flags(p, required=False)
    _model_flags(p)
    p.add_argument("--events", metavar="OUT.jsonl", help="write every event phase as JSON lines here")
    p.add_argument("--json", action="store_true", help="print event tokens as JSON lines on stdout")
    p.add_argument("--device-id", default="tympan-0", metavar="ID", help="device id in tokens")
    p.add_argument(
        "--block-ms",
        type=float,
        metavar="MS",
        help="block size in ms (default: 100 from a microphone or serial port; from an --input file 1000, or "
        "--level-every if shorter: nothing waits on a file's blocks and events do not depend on their size)",
    )
    p.add_argument("--duration", type=float, metavar="S", help="stop capturing after S seconds")
    p.add_argument(
        "--buffer-s",
        type=float,
        default=2.0,
        metavar="S",
        help="capture queue length in seconds; audio beyond it is counted, logged and replaced by silence",
    )
    p.add_argument("--threshold-scale", type=float, default=1.0, help="scale every class threshold")
    p.add_argument(
        "--thresholds", metavar="FILE",
        help="per-class thresholds JSON ({\"thresholds\": {label: t}}, as `tympan evaluate sed` writes)",
    )  # fmt: skip
    p.add_argument(
        "--latency", default="balanced", choices=["balanced", "low"],
        help="balanced (default): the model every 0.12 s, a class on after 2 frames above threshold; low: the "
        "model every 40 ms with its look-ahead filled by the newest frame fading out, also on at once on a "
        "frame 1.25x its threshold and >= 0.5, the model's condition floors of this mode, 40 ms blocks from a "
        "live source (on bench_sed's scenes about 110 ms sooner, for about 45%% more CPU)",
    )  # fmt: skip
    p.add_argument(
        "--doa-method", default="srp-phat", choices=["srp-phat", "music", "normmusic"],
        help="direction-of-arrival method for events and tracks (default srp-phat)",
    )  # fmt: skip
    _dsp_flag(p, board=True)
    m = p.add_argument_group("MQTT publishing")
    m.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish event tokens to mqtt://[user[:pass]@]host[:port] or mqtts://... "
        "(password also from $TYMPAN_MQTT_PASSWORD)",
    )
    m.add_argument(
        "--site", default="default", metavar="NAME", help="site in topics tympan/v1/SITE/ID/... (default: default)"
    )
    m.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate(s) to trust for mqtts:// (default: the system's)")
    m.add_argument("--mqtt-cert", metavar="FILE", help="TLS client certificate (with --mqtt-key)")
    m.add_argument("--mqtt-key", metavar="FILE", help="TLS client private key (with --mqtt-cert)")
    m.add_argument(
        "--spool",
        metavar="DIR",
        help="store-and-forward directory for events not yet acknowledged by the broker "
        "(default ~/.local/state/tympan/spool/ID)",
    )
    m.add_argument("--ha-discovery", action="store_true", help="publish Home Assistant MQTT discovery configs")
    m.add_argument(
        "--level-every", type=float, default=1.0, metavar="S",
        help="publish the sound level (Leq) every S seconds on the level topic (default 1; 0: never)",
    )  # fmt: skip
    o = p.add_argument_group("OTA updates (docs/bundles.md)")
    o.add_argument("--ota-dir", metavar="DIR", help="run the bundle installed here (model, array, config) and, "
                   "with --mqtt, install signed bundles received on .../ota, then stop to be restarted")  # fmt: skip
    o.add_argument("--ota-pubkey", metavar="KEY", help="public key OTA bundles must be signed with")
    from edge.cli_states import add_listen_options  # issue 7: --anomaly, --enrolled, --no-states

    add_listen_options(p)
    p.set_defaults(func=cmd_listen)


def add_tag(sub: Any) -> None:
    p = sub.add_parser("tag", help="clip-level scores of every label for audio files")
    p.add_argument("files", nargs="+", metavar="FILE")
    _model_flags(p)
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--top", type=int, default=5, help="how many top labels to list (default 5)")
    _dsp_flag(p, board=False)
    p.set_defaults(func=cmd_tag)


def add_locate(sub: Any) -> None:
    p = sub.add_parser("locate", help="directions of the sound sources in multichannel files")
    p.add_argument("files", nargs="+", metavar="FILE")
    _array_flags(p, required=True)
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--max-sources", type=int, default=3, help="most sources to report (default 3)")
    p.add_argument(
        "--method", default="srp-phat", choices=["srp-phat", "music", "normmusic"],
        help="direction-of-arrival method (default srp-phat)",
    )  # fmt: skip
    _dsp_flag(p, board=True)
    p.set_defaults(func=cmd_locate)


# --- helpers -----------------------------------------------------------------------------------
def _dsp_flag(p: argparse.ArgumentParser, board: bool) -> None:
    """--dsp-backend (resolved by `_dsp_backend`); `board`: the command takes a board profile."""
    from edge.dsp.backends import AUTO, KNOWN_BACKENDS

    fallback = "the board's dsp_backend, else auto" if board else "auto"
    p.add_argument("--dsp-backend", choices=[AUTO, *KNOWN_BACKENDS], default=None,
                   help=f"DSP kernels (default: $TYMPAN_DSP_BACKEND, else {fallback})")  # fmt: skip


def _load_array(args: argparse.Namespace) -> Any:
    from boards.profiles import resolve

    if args.board is None and args.array is None:
        return None
    return resolve(args.board, args.array)


def _load_model(args: argparse.Namespace) -> Any:
    from edge.inference import Model

    if args.threads < 1:
        raise InputError(f"--threads {args.threads}: must be >= 1")
    return Model(args.model, runtime=args.runtime, threads=args.threads)


def _per_file(files: list[str], work: Callable[[str], None]) -> int:
    """Run `work` on each file; a bad file is reported in one line and the rest still run."""
    failed = 0
    for f in files:
        try:
            work(f)
        except TympanError as e:
            print(f"tympan: error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _fmt_dir(tok: dict[str, Any]) -> str:
    if tok.get("az") is None:
        return ""
    s = f"  az {tok['az']:6.1f}°"
    if tok.get("el") is not None:
        s += f" el {tok['el']:5.1f}°"
    if tok.get("amb"):
        s += " (or its mirror)"
    return s


def _fmt_states(tok: dict[str, Any]) -> str:
    names = ([tok["st"]] if tok.get("st") else []) + [n for n, _ in tok.get("sx") or []] + list(tok.get("tr") or [])
    return f"  [{', '.join(names)}]" if names else ""


def format_event(tok: dict[str, Any]) -> str | None:
    """One readable line for an `on` or `off` token with stream times (`--events` records); None for `upd`."""
    if tok["ph"] == "on":
        return f"{tok['onset']:8.2f} s  on   {tok['lbl']:<28} p={tok['p']:.2f}{_fmt_dir(tok)}{_fmt_states(tok)}"
    if tok["ph"] == "off":
        dur = tok["offset"] - tok["onset"]
        return (
            f"{tok['offset']:8.2f} s  off  {tok['lbl']:<28} p={tok['p']:.2f}{_fmt_dir(tok)}"
            f"  {tok['onset']:.2f}-{tok['offset']:.2f} s ({dur:.2f} s)"
            + (f"  {tok['lvl']:.0f} dBFS" if tok.get("lvl") is not None else "")
            + _fmt_states(tok)
        )
    return None


def _open_publisher(args: argparse.Namespace, model: Any, array: Any) -> Any:
    """The connected (or spooling) `Publisher` for `--mqtt`, with the retained birth; None without it."""
    if not args.mqtt:
        for flag in ("mqtt_ca", "mqtt_cert", "mqtt_key", "spool"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag.replace('_', '-')} needs --mqtt URL")
        return None
    import edge
    from edge.ha_discovery import discovery_configs
    from edge.mqtt_url import parse_mqtt_url
    from edge.publish import Publisher, TlsFiles, topic_base
    from edge.tokens import build_birth

    target = parse_mqtt_url(args.mqtt)
    if (args.mqtt_cert is None) != (args.mqtt_key is None):
        raise InputError("--mqtt-cert and --mqtt-key go together")
    tls = None
    if args.mqtt_ca or args.mqtt_cert:
        if not target.tls:
            raise InputError(f"--mqtt-ca/--mqtt-cert need an mqtts:// URL, got {target.label}")
        tls = TlsFiles(ca=args.mqtt_ca, cert=args.mqtt_cert, key=args.mqtt_key)
    birth = build_birth(args.device_id, args.site, model, array, edge.__version__)
    extra = (
        discovery_configs(topic_base(args.site, args.device_id), args.device_id, args.site, model.id, edge.__version__)
        if args.ha_discovery
        else []
    )
    pub = Publisher(target, args.device_id, args.site, birth=birth, spool=args.spool, tls=tls, extra_retained=extra)
    return pub.start()


# --- commands ----------------------------------------------------------------------------------
def _dsp_backend(args: argparse.Namespace) -> str:
    """--dsp-backend > $TYMPAN_DSP_BACKEND > the board profile's dsp_backend > auto."""
    from boards.profiles import kind_of, load_board
    from edge.dsp import backends

    preference = None
    board = getattr(args, "board", None)  # `tag` names no board
    if board is not None and kind_of(board) == "board":
        preference = load_board(board).dsp_backend
    return backends.resolve(args.dsp_backend, preference)


LIVE_BLOCK_MS = 100.0
"""Default block of a microphone or serial port: what a block adds to the wall-clock delay of an event."""
LOW_LATENCY_BLOCK_MS = 40.0
"""The same with `--latency low`: one output frame."""
FILE_BLOCK_MS = 1000.0
"""Default block of an --input file: fewer, larger blocks cost less per audio second (the same events)."""


def _default_block_ms(args: argparse.Namespace) -> float:
    if args.input is None:  # an event cannot be emitted before the block holding its frames arrives
        return LOW_LATENCY_BLOCK_MS if args.latency == "low" else LIVE_BLOCK_MS
    every_ms = 1000.0 * args.level_every if args.level_every > 0 else FILE_BLOCK_MS
    return max(1.0, min(FILE_BLOCK_MS, every_ms))  # a level reading per --level-every still comes


def cmd_listen(args: argparse.Namespace) -> int:
    from edge.localise import LocaliserConfig
    from edge.ota import listen_ota_store, start_listen_agent
    from edge.pipeline import EdgePipeline, PipelineConfig, latency_config
    from edge.sed import SedConfig, load_thresholds
    from edge.sources import FileSource, MicrophoneSource
    from edge.tokens import TokenBuilder

    ota_store = listen_ota_store(args)  # fills --model/--array/config from the installed bundle
    if args.block_ms is None:
        args.block_ms = _default_block_ms(args)
    if not 1.0 <= args.block_ms <= 10000.0:
        raise InputError(f"--block-ms {args.block_ms}: must be between 1 and 10000")
    if args.duration is not None and args.duration <= 0:
        raise InputError(f"--duration {args.duration}: must be > 0")
    if not args.buffer_s > 0:
        raise InputError(f"--buffer-s {args.buffer_s}: must be > 0")
    if args.serial_baud is not None and (args.serial is None or args.serial_baud <= 0):
        raise InputError(f"--serial-baud {args.serial_baud}: needs --serial PORT and a positive baud rate")
    if not args.level_every >= 0:
        raise InputError(f"--level-every {args.level_every}: must be >= 0")
    array = _load_array(args)
    model = _load_model(args)
    block = round(args.block_ms * model.frontend.sample_rate / 1000.0)
    blocks: Any
    if args.input is not None:
        blocks = FileSource(
            args.input, block_size=block, expected_channels=None if array is None else array.n_mics, array=array
        )
        if array is None and blocks.channels > 1:
            log.warning("%s: %d channels and no --board/--array: events get no direction", args.input, blocks.channels)
    elif args.serial is not None:
        from firmware_bridge.source import SerialSource

        if array is None:
            raise InputError("--serial needs --board or --array (the channel count and order come from it)")
        from firmware_bridge.protocol import DEFAULT_BAUD

        baud = DEFAULT_BAUD if args.serial_baud is None else args.serial_baud
        blocks = SerialSource(args.serial, array, block_size=block, duration_s=args.duration, baud=baud)
    else:
        if array is None:
            raise InputError("--device needs --board or --array (the channel count and order come from it)")
        device: str | int | None = args.device or None
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        blocks = MicrophoneSource(device, array, block_size=block, duration_s=args.duration, queue_s=args.buffer_s)
    base = PipelineConfig(
        sed=SedConfig(
            threshold_scale=args.threshold_scale,
            thresholds=load_thresholds(args.thresholds) if args.thresholds else (),
        ),
        localiser=LocaliserConfig(method=args.doa_method),
        dsp_backend=_dsp_backend(args),
    )
    pipeline = EdgePipeline(model, array, latency_config(args.latency, model.output_hop_frames, base))
    from edge.cli_states import birth_model, wrap_pipeline

    pipeline = wrap_pipeline(args, pipeline)  # issue 7: states, anomaly, enrolled classes
    builder = TokenBuilder(args.device_id, model.id, wall_start=time.time(), stream_times=True)
    sink = open(args.events, "w", encoding="utf-8") if args.events else None
    pub = agent = None
    n_closed = 0
    try:
        pub = _open_publisher(args, birth_model(model, pipeline), array)
        if ota_store is not None and pub is not None:
            agent = start_listen_agent(args, ota_store, pub.target)
            blocks = agent.until_restart(blocks)
        for ev in _events_and_levels(blocks, pipeline, pub, args.level_every, builder):
            tok = builder.build(ev)
            if args.serial is not None:
                blocks.show_event(tok)  # the event's direction on the MCU's LED ring
            if pub is not None:
                pub.publish_token(tok)
            if sink is not None:
                sink.write(json.dumps(tok, separators=(",", ":")) + "\n")
                sink.flush()
            if args.json:
                print(json.dumps(tok, separators=(",", ":")), flush=True)
            else:
                line = format_event(tok)
                if line is not None:
                    print(line, flush=True)
            n_closed += tok["ph"] == "off"
    finally:
        if sink is not None:
            sink.close()
        if agent is not None:
            agent.close()
        if pub is not None:
            pub.close()
    if not args.json:
        print(f"{n_closed} event(s)" + (f"; written to {args.events}" if args.events else ""), file=sys.stderr)
        if pub is not None:
            st = pub.stats
            print(
                f"MQTT {pub.target.label}: {st.acked} message(s) delivered"
                + (f", {st.pending} left in the spool for the next run" if st.pending else ""),
                file=sys.stderr,
            )
    return 0


def _events_and_levels(blocks: Any, pipeline: Any, pub: Any, every_s: float, builder: Any) -> Iterator[Any]:
    """The pipeline's events; with a publisher, also a level reading every `every_s` of stream time
    on the `level` topic: {"v", "dev", "t" (epoch s), "leq" (dBFS over the last `every_s`)}. When the
    source raises, the open events are closed first, then the error goes on."""
    from edge.tokens import SCHEMA_VERSION

    next_level = every_s
    source = iter(blocks)
    while True:
        try:
            block = next(source)
        except StopIteration:
            break
        except TympanError:
            # the source failed (a file damaged part-way, a device gone): the events still open are
            # closed at the last sample analysed, so no subscriber is left with an `on` and no `off`
            yield from pipeline.flush()
            raise
        yield from pipeline.process(block)
        if pub is not None and every_s > 0 and pipeline.stream_time >= next_level:
            leq = pipeline.level_dbfs(every_s)
            if leq is not None:
                t = round(builder.wall_start + pipeline.stream_time, 3)
                pub.publish_level({"v": SCHEMA_VERSION, "dev": builder.device_id, "t": t, "leq": leq})
            while next_level <= pipeline.stream_time:
                next_level += every_s
    yield from pipeline.flush()


def _tag_rows(model: Any, path: str, top: int, dsp_backend: str = "numpy") -> dict[str, Any]:
    from edge.dsp import backends
    from edge.sources import read_audio

    x = read_audio(path)
    # the recording's log-mel (of its channel mean) through the chosen DSP backend: a batch of one
    scores = model.tag(backends.get("logmel_batch", dsp_backend)(x[None], model.frontend)[0])
    order = np.argsort(-scores)[:top]
    return {
        "file": path,
        "model": model.id,
        "scores": {lb.name: round(float(s), 4) for lb, s in zip(model.labels, scores, strict=True)},
        "top": [
            {"label": model.labels[i].name, "mid": model.labels[i].mid, "p": round(float(scores[i]), 4)} for i in order
        ],
    }


def cmd_tag(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise InputError(f"--top {args.top}: must be >= 1")
    model = _load_model(args)

    dsp = _dsp_backend(args)

    def work(path: str) -> None:
        row = _tag_rows(model, path, args.top, dsp)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(path)
            for t in row["top"]:
                print(f"  {t['p']:.3f}  {t['label']}  ({t['mid']})")

    return _per_file(args.files, work)


def locate_rows(
    path: str, array: Any, max_sources: int, method: str = "srp-phat", dsp_backend: str = "numpy"
) -> dict[str, Any]:
    from edge.dsp import backends
    from edge.localise import Localiser, LocaliserConfig, locate_recording
    from edge.sources import read_audio

    x = read_audio(path, expected_channels=array.n_mics, array=array)
    loc = Localiser(array, config=LocaliserConfig(max_sources=max_sources, method=method, backend=dsp_backend))
    spectra = backends.get("stft", dsp_backend)(x, loc.spec)
    if spectra.shape[2] == 0:
        raise InputError(f"{path}: shorter than one analysis frame ({loc.spec.win} samples)")
    bearings = locate_recording(spectra, loc)
    sources = [
        {"azimuth_deg": b.azimuth, "elevation_deg": b.elevation, "spread_deg": b.spread, "power": b.power}
        | ({"mirror_azimuth_deg": b.mirror} if b.ambiguous else {})
        for b in bearings
    ]
    first = bearings[0] if bearings else None
    return {
        "file": path,
        "array": array.name,
        "azimuth_deg": None if first is None else first.azimuth,
        "elevation_deg": None if first is None else first.elevation,
        "ambiguous": array.geometry == "linear",
        "sources": sources,
    }


def cmd_locate(args: argparse.Namespace) -> int:
    if args.max_sources < 1:
        raise InputError(f"--max-sources {args.max_sources}: must be >= 1")
    array = _load_array(args)
    dsp = _dsp_backend(args)

    def work(path: str) -> None:
        row = locate_rows(path, array, args.max_sources, args.method, dsp)
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(path)
            for s in row["sources"]:
                el = "" if s["elevation_deg"] is None else f"  el {s['elevation_deg']:.1f}°"
                mirror = "" if s.get("mirror_azimuth_deg") is None else f" (or {s['mirror_azimuth_deg']:.1f}°)"
                az = f"az {s['azimuth_deg']:.1f}°{mirror}{el}"
                print(f"  {az}  spread {s['spread_deg']:.1f}°  power {s['power']:.2f}")
            if not row["sources"]:
                print("  no directional source found")

    return _per_file(args.files, work)
