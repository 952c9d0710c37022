"""`tympan caption`: event tokens from MQTT -> scene windows -> captions published back over MQTT.

This module is the captioner's only I/O: the paho client (MQTT v5) runs its network loop in its own
thread and hands messages to a queue; the worker's thread decodes them, feeds the pure `Captioner`,
asks it what is due, publishes each caption as JSON on `tympan/v1/<site>/<dev>/caption` (QoS 1) and
prints `caption <dev>: <text>` on stdout. With `--share GROUP` the subscription is the MQTT 5 shared
subscription `$share/GROUP/tympan/v1/<site>/+/events`: the broker gives each message to one worker of
the group. (Brokers spread a shared subscription per message, not per device: a worker then sees only
part of each device's events. Run one worker per site, or a broker with sticky/hash dispatch, when the
captions must reflect every event.)
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.backends import BACKENDS, CaptionBackend, backend_class
from cloud.captioner import DEFAULT_EVERY_S, Captioner, Due, events_topic, parse_events_topic
from cloud.scene import DEFAULT_WINDOW_S
from edge.errors import ConfigError, MqttError, TokenError
from edge.mqtt_url import MqttTarget, add_ca_option, check_tls_files, parse_mqtt_url
from edge.token_codec import decode_json

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
TICK_S = 0.1  # how often due captions are checked when no message arrives
PUBLISH_WAIT_S = 5.0  # on exit, how long to wait for the last captions to be acknowledged


def _topic_level(flag: str, v: str, wildcard_ok: bool) -> str:
    bad = set("/#\0") | (set() if wildcard_ok else {"+"})
    if not v or any(ch in bad for ch in v) or (wildcard_ok and "+" in v and v != "+"):
        raise ConfigError(f"{flag} {v!r}: expected one MQTT topic level (no '/', '#'{'' if wildcard_ok else ', +'})")
    return v


@dataclass(frozen=True)
class WorkerConfig:
    """Where to listen and how often to caption; each default written once, here."""

    mqtt: str = field(repr=False)  # may hold a password
    site: str = "+"
    share: str | None = None
    every_s: float = DEFAULT_EVERY_S
    window_s: float = DEFAULT_WINDOW_S
    count: int | None = None  # stop after publishing this many captions
    cafile: str | None = None
    client_id: str | None = None
    protocol: str = "5"  # MQTT 5 (shared subscriptions) or "3.1.1" for brokers without it

    def __post_init__(self) -> None:
        if self.protocol not in ("5", "3.1.1"):
            raise ConfigError(f"MQTT protocol {self.protocol!r}: expected '5' or '3.1.1'")
        if self.share is not None and self.protocol != "5":
            raise ConfigError(f"--share {self.share!r} needs MQTT 5 (shared subscriptions)")
        _topic_level("--site", self.site, wildcard_ok=True)
        if self.share is not None:
            _topic_level("--share", self.share, wildcard_ok=False)
        if self.count is not None and self.count < 1:
            raise ConfigError(f"--count must be 1 or more, got {self.count!r}")


class CaptionWorker:
    """One caption worker: connect, subscribe, caption, publish, until `stop` is set or `count` is reached.

    `ready` is set once the broker has acknowledged the subscription; `handled` lists the (dev, seq) of
    every token this worker decoded (tests use it to check that a shared subscription splits the load).
    """

    def __init__(
        self,
        config: WorkerConfig,
        backend: CaptionBackend,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.target: MqttTarget = parse_mqtt_url(config.mqtt)
        if config.cafile and not self.target.tls:
            raise ConfigError(f"--mqtt-ca/--cafile {config.cafile!r} needs an mqtts:// URL, got {self.target.label}")
        self.captioner = Captioner(backend, window_s=config.window_s, every_s=config.every_s)
        self.out = out if out is not None else sys.stdout
        self.clock = clock
        self.ready = threading.Event()
        self.handled: list[tuple[str, int]] = []
        self.published = 0
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._failure: str | None = None
        self._connected = threading.Event()

    # --- paho callbacks (network thread): only hand over to the worker thread --------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None) -> None:
        if rc.is_failure:
            self._failure = f"broker {self.target.label} refused the connection: {rc}"
            self._connected.set()
            return
        self._connected.set()
        client.subscribe(events_topic(self.config.site, self.config.share), qos=1)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any) -> None:
        if any(rc.is_failure for rc in rcs):
            self._failure = f"broker {self.target.label} refused the subscription: {', '.join(map(str, rcs))}"
        self.ready.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._inbox.put((msg.topic, bytes(msg.payload)))

    # --- the worker thread ---------------------------------------------------------------------------

    def _client(self) -> mqtt.Client:
        cid = self.config.client_id or f"tympan-caption-{uuid.uuid4().hex[:12]}"
        proto = mqtt.MQTTv5 if self.config.protocol == "5" else mqtt.MQTTv311
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=proto)
        if self.target.username is not None:
            c.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            check_tls_files(self.target.label, self.config.cafile)
            try:
                c.tls_set(ca_certs=self.config.cafile)
            except (OSError, ValueError, ssl.SSLError) as e:
                raise MqttError(f"{self.target.label}: TLS setup failed: {e}") from None
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        return c

    def handle(self, topic: str, payload: bytes) -> list[Due]:
        """One message -> captions due now; a malformed payload is one warning line and nothing else."""
        try:
            site, _ = parse_events_topic(topic)
            token = decode_json(payload)
            due = self.captioner.feed(site, token, self.clock())
        except TokenError as e:
            log.warning("caption: skipped a malformed payload on %s: %s", topic, e)
            return []
        self.handled.append((token["dev"], token["seq"]))
        return due

    def run(self, stop: threading.Event | None = None) -> int:
        """Serve until `stop` is set or `count` captions are out; MqttError if the broker refuses us."""
        stop = stop or threading.Event()
        client = self._client()
        try:
            if self.config.protocol == "5":
                client.connect(self.target.host, self.target.port, keepalive=KEEPALIVE_S, clean_start=True)
            else:
                client.connect(self.target.host, self.target.port, keepalive=KEEPALIVE_S)
        except (OSError, ValueError) as e:
            raise MqttError(f"cannot connect to {self.target.label}: {e}") from None
        client.loop_start()
        pending: list[mqtt.MQTTMessageInfo] = []
        try:
            if not self._connected.wait(CONNECT_TIMEOUT_S):
                raise MqttError(f"no answer from {self.target.label} within {CONNECT_TIMEOUT_S:g} s")
            while not stop.is_set():
                if self._failure:
                    raise MqttError(self._failure)
                try:
                    topic, payload = self._inbox.get(timeout=TICK_S)
                    due = self.handle(topic, payload)
                except queue.Empty:
                    due = []
                due += self.captioner.tick(self.clock())
                for d in due:
                    pending.append(self._publish(client, d))
                    if self.config.count is not None and self.published >= self.config.count:
                        return 0
                pending = [p for p in pending if not p.is_published()]
            return 0
        finally:
            for p in pending:
                if not p.is_published():
                    p.wait_for_publish(PUBLISH_WAIT_S)
            client.disconnect()
            client.loop_stop()

    def _publish(self, client: mqtt.Client, due: Due) -> mqtt.MQTTMessageInfo:
        if due.caption is None:
            log.warning("caption: no caption for %s this time: %s", due.topic, due.error)
            return mqtt.MQTTMessageInfo(0)
        c = due.caption
        info = client.publish(due.topic, json.dumps(c.payload(), ensure_ascii=False), qos=1)
        self.published += 1
        print(f"caption {c.dev}: {c.text}", file=self.out, flush=True)
        return info


def add_caption(sub: Any) -> None:
    p = sub.add_parser(
        "caption",
        help="caption the event tokens of every device on an MQTT broker",
        description="Subscribe to tympan/v1/<site>/+/events, keep a scene window per device and publish "
        "captions to tympan/v1/<site>/<device>/caption.",
    )
    p.add_argument("--mqtt", required=True, metavar="URL", help="broker: mqtt://[user[:pass]@]host[:port] or mqtts://")
    p.add_argument("--site", default=WorkerConfig.site, metavar="S", help="site to listen to (default: + = all)")
    p.add_argument("--backend", default="template", choices=sorted(BACKENDS), help="caption backend (default template)")
    p.add_argument("--every", type=float, default=DEFAULT_EVERY_S, metavar="S",
                   help=f"caption a changed window every S seconds (default {DEFAULT_EVERY_S:g}); "
                   "a changed scene is captioned at once")  # fmt: skip
    p.add_argument("--window", type=float, default=DEFAULT_WINDOW_S, metavar="S",
                   help=f"scene window length in seconds (default {DEFAULT_WINDOW_S:g})")  # fmt: skip
    p.add_argument(
        "--share",
        metavar="GROUP",
        help="share the load with other workers (MQTT 5 shared subscription $share/GROUP/...)",
    )
    p.add_argument("--few-shot", action="store_true", help="few-shot prompt (example captions) for LLM backends")
    p.add_argument("--count", type=int, metavar="N", help="exit after publishing N captions")
    add_ca_option(p)
    p.add_argument("--client-id", metavar="ID", help="MQTT client id (default: random)")
    p.add_argument(
        "--mqtt-version", default=WorkerConfig.protocol, choices=["5", "3.1.1"],
        help="MQTT protocol (default 5; 3.1.1 for brokers without MQTT 5, no --share then)",
    )  # fmt: skip
    for cls in BACKENDS.values():
        cls.add_arguments(p)
    p.set_defaults(func=cmd_caption)


def cmd_caption(args: argparse.Namespace) -> int:
    config = WorkerConfig(
        mqtt=args.mqtt,
        site=args.site,
        share=args.share,
        every_s=args.every,
        window_s=args.window,
        count=args.count,
        cafile=args.cafile,
        client_id=args.client_id,
        protocol=args.mqtt_version,
    )
    backend = backend_class(args.backend).from_args(args)
    worker = CaptionWorker(config, backend)
    log.info("caption: %s, backend %s, topic %s", worker.target.label, backend.name,
             events_topic(config.site, config.share))  # fmt: skip
    return worker.run()
