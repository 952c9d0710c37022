"""`tympan demo`: the whole system in one command, nothing else to start.

    embedded MQTT broker (amqtt, a free loopback port; or --mqtt URL)
      <- edge: the bundled 4-channel scene -> pipeline -> event tokens -> Publisher (spool, QoS 1)
      -> cloud: CaptionWorker (template captioner) -> captions on .../caption
and prints events and captions as they happen, then shuts everything down cleanly (the device says
`offline`, the broker stops). The scene is played at `--speed` times real time.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from importlib import resources
from typing import Any

from edge import __version__
from edge.errors import ConfigError, InputError, MqttError

log = logging.getLogger(__name__)

DEFAULT_SPEED = 4.0
DEFAULT_EVERY_S = 2.0
SETTLE_S = 0.5  # after the last token: time for the final captions to be decided and printed


def add_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="one command, no setup: embedded broker + bundled scene -> events -> captions",
        description="Run the edge pipeline on the bundled scene, publish its tokens to an MQTT broker "
        "(an embedded one unless --mqtt is given) and caption them with the template captioner.",
    )
    p.add_argument("--mqtt", metavar="URL", help="use this broker instead of the embedded one")
    p.add_argument("--input", metavar="FILE", help="scene to play (default: the bundled sample scene)")
    p.add_argument("--board", default="respeaker-4mic-hat", metavar="NAME", help="board or array of the scene")
    p.add_argument(
        "--speed", type=float, default=DEFAULT_SPEED,
        help=f"play the scene at this many times real time (default {DEFAULT_SPEED:g}; 0: no pacing)",
    )  # fmt: skip
    p.add_argument(
        "--every", type=float, default=DEFAULT_EVERY_S, metavar="S",
        help=f"caption every S seconds of wall time when the scene changed (default {DEFAULT_EVERY_S:g})",
    )  # fmt: skip
    p.add_argument("--site", default="demo", help="site in the topics (default demo)")
    p.add_argument("--device-id", default="demo-0", metavar="ID", help="device id (default demo-0)")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from boards.profiles import resolve
    from cloud.backends.template import TemplateBackend
    from cloud.cli_caption import CaptionWorker, WorkerConfig
    from cloud.embedded_broker import EmbeddedBroker
    from edge.cli import format_event
    from edge.inference import Model
    from edge.mqtt_url import parse_mqtt_url
    from edge.pipeline import EdgePipeline, run
    from edge.publish import Publisher
    from edge.sources import FileSource
    from edge.tokens import TokenBuilder, build_birth

    if args.speed < 0:
        raise InputError(f"--speed {args.speed}: must be >= 0")
    if args.every <= 0:
        raise InputError(f"--every {args.every}: must be > 0")
    scene = args.input or str(resources.files("edge").joinpath("data", "sample_scene.flac"))
    array = resolve(args.board, None)
    model = Model(None)
    source = FileSource(scene, block_size=1600, expected_channels=array.n_mics, array=array)

    broker = None if args.mqtt else EmbeddedBroker().start()
    url = args.mqtt or (broker.url if broker else "")
    target = parse_mqtt_url(url)
    print(f"demo: broker {target.label}{' (embedded)' if broker else ''}, scene {scene}", flush=True)
    stop = threading.Event()
    failure: list[BaseException] = []
    worker = CaptionWorker(
        WorkerConfig(mqtt=url, site=args.site, every_s=args.every, protocol="3.1.1" if broker else "5"),
        TemplateBackend(),
        out=sys.stdout,
    )

    def serve() -> None:
        try:
            worker.run(stop)
        except BaseException as e:  # handed to the main thread
            failure.append(e)
            worker.ready.set()

    thread = threading.Thread(target=serve, name="tympan-demo-captioner", daemon=True)
    try:
        thread.start()
        if not worker.ready.wait(15.0):
            raise MqttError(f"the captioner could not subscribe at {target.label}")
        if failure:
            raise failure[0]
        birth = build_birth(args.device_id, args.site, model, array, __version__)
        builder = TokenBuilder(args.device_id, model.id, wall_start=time.time(), stream_times=True)
        with (
            tempfile.TemporaryDirectory(prefix="tympan-demo-spool-") as spool,
            Publisher(target, args.device_id, args.site, birth=birth, spool=spool) as pub,
        ):
            t_start = time.monotonic()
            n = 0
            for ev in run(source, EdgePipeline(model, array)):
                if args.speed > 0:  # pace: the event is printed when its decision time comes
                    wait = ev.emitted / args.speed - (time.monotonic() - t_start)
                    if wait > 0:
                        time.sleep(wait)
                tok = builder.build(ev)
                line = format_event(tok)
                if line is not None:
                    print(f"event {line}", flush=True)
                wire = {k: v for k, v in tok.items() if k not in ("onset", "offset")}
                pub.publish_token(wire)
                n += 1
            if not pub.wait_delivered(10.0):
                log.warning("demo: not every token was acknowledged by the broker")
        # let the captioner see the last tokens, then wait for its next periodic caption
        before = worker.published
        deadline = time.monotonic() + args.every + SETTLE_S + 5.0
        time.sleep(SETTLE_S)
        while worker.published == before and time.monotonic() < deadline and not failure:
            time.sleep(0.05)
        if failure:
            raise failure[0]
        print(f"demo: {n} event tokens, {worker.published} captions; done", flush=True)
        return 0
    except ConfigError:
        raise
    finally:
        stop.set()
        thread.join(10.0)
        if broker is not None:
            broker.stop()
