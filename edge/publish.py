"""Token -> MQTT: the device's publisher, with on-disk store and forward (nothing lost while the broker is away).

    with Publisher(parse_mqtt_url(url), "kitchen-1", site="home", birth=birth) as pub:
        pub.publish_token(tok)          # returns at once: the token is in the spool
    # leaving the block: flush what the broker takes within `close_timeout_s`, then "offline"

Topics (`tympan/v1/<site>/<device>/...`):
    status  "online" / "offline", retained, QoS 1; "offline" is also the last will (an unclean loss)
    birth   retained JSON (software version, model, label table, array), sent on every connect
    events  each token as JSON, QoS 1 (default)
    tokens  the same token packed (binary), QoS 1 (default)
    level   optional periodic JSON, QoS 0, never spooled

Every event message goes through the `Spool` first; a sender thread publishes spooled records in
order while connected (at most `inflight` unacknowledged at a time) and acknowledges each one in the
spool when the broker's PUBACK arrives. paho's network thread (`loop_start`) reconnects with
exponential backoff (`reconnect_delay_set`) and re-sends what was in flight. So the audio side never
waits on the network, records survive a broker outage and a process restart, and a subscriber sees
every token at least once, in order (dedupe by device + `seq` removes the rare resend).

Errors: one root, `MqttError`. On the first connect a refusal (bad user name or password, not
authorised, ...) raises within `connect_wait_s`; an unreachable broker is warned about once and
retried forever while events are spooled.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import ConfigError, MqttError, TokenError
from edge.mqtt_url import MqttTarget, check_tls_files
from edge.spool import DEFAULT_MAX_BYTES, Position, Spool, default_spool_dir
from edge.token_codec import TOPIC_PREFIX, encode_json, encode_packed

log = logging.getLogger(__name__)

TOPIC_ROOT = TOPIC_PREFIX
ONLINE = b"online"
OFFLINE = b"offline"
FSYNC_INTERVAL_S = 1.0
AUTH_REASONS = {134: "bad user name or password", 135: "bad user name or password"}  # MQTT 5 codes (3.1.1: 4, 5)
_WIRE_DROP = ("onset", "offset")  # `--events` record keys, not part of the v1 token


def _close_sockets_of(e: BaseException) -> None:
    """Close the sockets a failed connect left behind (paho 2.2 does not close a socket whose TLS
    handshake failed; it would be closed, with a ResourceWarning, only when garbage collected)."""
    tb = e.__traceback__
    while tb is not None:
        for v in tb.tb_frame.f_locals.values():
            if isinstance(v, socket.socket):
                v.close()
        tb = tb.tb_next


def topic_base(site: str, device_id: str) -> str:
    """`tympan/v1/<site>/<device>`; both parts must be single, wildcard-free topic levels."""
    for what, v in (("site", site), ("device id", device_id)):
        if not v or any(ch in v for ch in "/+#\0"):
            raise ConfigError(f"{what} {v!r}: must be non-empty without '/', '+', '#'")
    return f"{TOPIC_ROOT}/{site}/{device_id}"


@dataclass(frozen=True)
class Topics:
    status: str
    birth: str
    events: str
    tokens: str
    level: str

    @classmethod
    def for_device(cls, site: str, device_id: str) -> Topics:
        b = topic_base(site, device_id)
        return cls(f"{b}/status", f"{b}/birth", f"{b}/events", f"{b}/tokens", f"{b}/level")


@dataclass(frozen=True)
class TlsFiles:
    """`ca`: CA bundle to trust (None: the system's); `cert`/`key`: a client certificate, if the broker wants one."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class PublisherStats:
    sent: int  # spooled records handed to the broker (resends included)
    acked: int  # records the broker acknowledged (removed from the spool)
    rejected: int  # MQTT 5 negative PUBACKs (logged, removed)
    pending: int  # records in the spool, not yet acknowledged
    dropped: int  # oldest records dropped because the spool was full (this run)
    connects: int
    invalid: int  # tokens the codec rejected (logged, not published)


class Publisher:
    """An MQTT client for one device; a context manager. See the module docstring."""

    def __init__(
        self,
        target: MqttTarget,
        device_id: str,
        site: str = "default",
        *,
        birth: Mapping[str, Any] | None = None,
        spool: Spool | str | os.PathLike[str] | None = None,
        spool_max_bytes: int = DEFAULT_MAX_BYTES,
        tls: TlsFiles | None = None,
        extra_retained: Iterable[tuple[str, bytes]] = (),
        qos: Literal[0, 1] = 1,
        protocol: Literal["3.1.1", "5"] = "3.1.1",
        keepalive_s: int = 30,
        connect_wait_s: float = 5.0,
        close_timeout_s: float = 5.0,
        inflight: int = 20,
        reconnect_delay_s: tuple[int, int] = (1, 30),
    ) -> None:
        if qos not in (0, 1):
            raise ConfigError(f"qos {qos!r}: must be 0 or 1")
        if not 1 <= inflight <= 1000:
            raise ConfigError(f"inflight {inflight!r}: must be in 1..1000")
        self.target = target
        self.device_id = device_id
        self.topics = Topics.for_device(site, device_id)
        self.qos = qos
        self.connect_wait_s = connect_wait_s
        self.close_timeout_s = close_timeout_s
        self._birth = None if birth is None else json.dumps(birth, separators=(",", ":")).encode()
        self._extra = list(extra_retained)
        self._window = inflight
        if isinstance(spool, Spool):
            self.spool = spool
        else:
            self.spool = Spool(default_spool_dir(device_id) if spool is None else Path(spool), spool_max_bytes)
        try:
            self._client = self._make_client(protocol, tls, keepalive_s, reconnect_delay_s)
        except BaseException:
            self.spool.close()
            raise
        self._keepalive = keepalive_s
        # state shared between paho's thread, the sender thread and the caller
        self._connected = threading.Event()
        self._first = threading.Event()
        self._refused: str | None = None
        self._ever_connected = False
        self._warned_unreachable = False
        self._acks: queue.SimpleQueue[tuple[int, bool]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._inflight: deque[list[Any]] = deque()  # [pos, acked] in send order
        self._by_mid: dict[int, list[Any]] = {}
        self._last_sent: Position | None = None
        self._sender: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._warned_packed = False
        self._n_sent = self._n_acked = self._n_rejected = self._n_connects = self._n_invalid = 0

    # --- setup ---------------------------------------------------------------------------------
    def _make_client(
        self, protocol: str, tls: TlsFiles | None, keepalive_s: int, delay: tuple[int, int]
    ) -> mqtt.Client:
        proto = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tympan-{self.device_id}", protocol=proto)
        if log.isEnabledFor(logging.DEBUG):  # paho's own chatter (it logs retries as errors) only with -vv
            c.enable_logger(logging.getLogger(__name__ + ".paho"))
        c.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        if self.target.username is not None:
            c.username_pw_set(self.target.username, self.target.password)
        if self.target.tls or tls is not None:
            t = tls or TlsFiles()
            check_tls_files(self.target.label, t.ca, t.cert, t.key)
            try:
                c.tls_set(ca_certs=t.ca, certfile=t.cert, keyfile=t.key, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as e:
                raise MqttError(f"{self.target.label}: TLS setup failed ({e})") from None
        c.max_inflight_messages_set(self._window)
        c.reconnect_delay_set(min_delay=delay[0], max_delay=delay[1])
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        return c

    def start(self) -> Publisher:
        """Connect; raises MqttError if the broker refuses the first connect or its TLS certificate.

        An unreachable broker is not an error: it is warned about once and retried in the background
        (backoff) while events are spooled.
        """
        if self._started:
            return self
        self._started = True
        host, port = self.target.host, self.target.port
        try:
            self._client.connect(host, port, keepalive=self._keepalive)
        except ssl.SSLCertVerificationError as e:
            _close_sockets_of(e)
            self._abort()
            raise MqttError(
                f"{self.target.label}: TLS certificate not trusted ({e.verify_message}); "
                "give the broker's CA with --mqtt-ca FILE"
            ) from None
        except ssl.SSLError as e:
            _close_sockets_of(e)
            self._abort()
            raise MqttError(f"{self.target.label}: TLS handshake failed ({e.reason or e})") from None
        except ValueError as e:
            self._abort()
            raise MqttError(f"{self.target.label}: cannot connect ({e})") from None
        except OSError as e:  # refused, unreachable, timed out, no DNS yet: retry in the background
            self._warn_unreachable(e.strerror or str(e) or type(e).__name__)
            self._client.connect_async(host, port, keepalive=self._keepalive)
        self._client.loop_start()
        self._sender = threading.Thread(target=self._send_loop, name=f"tympan-mqtt-{self.device_id}", daemon=True)
        self._sender.start()
        self._first.wait(self.connect_wait_s)
        if self._refused is not None:
            reason = self._refused
            self._shutdown(flush_s=0.0, say_offline=False)
            raise MqttError(f"{self.target.label}: {reason}")
        if not self._connected.is_set():
            self._warn_unreachable("no answer")
        return self

    def _abort(self) -> None:
        self._client.loop_stop()
        self.spool.close()
        self._closed = True

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close(self.close_timeout_s)

    # --- the caller's side ---------------------------------------------------------------------
    def publish_token(self, tok: Mapping[str, Any]) -> None:
        """Spool one token (JSON on `events`, packed on `tokens`) and return; the sender delivers it.

        A token the codec rejects is logged and counted (`stats.invalid`), not raised.
        """
        self._check_open()
        wire = {k: v for k, v in tok.items() if k not in _WIRE_DROP}
        try:
            data = encode_json(wire)
        except TokenError as e:  # a bug upstream must not stop the device listening: count and log it
            self._n_invalid += 1
            log.error("token seq %s not published (%s); %d invalid this run", wire.get("seq"), e, self._n_invalid)
            return
        self.spool.append(self.topics.events, data, self.qos)
        try:
            packed = encode_packed(wire)
        except TokenError as e:
            if not self._warned_packed:
                log.warning("token seq %s: no packed form (%s); only JSON is published", wire.get("seq"), e)
                self._warned_packed = True
        else:
            self.spool.append(self.topics.tokens, packed, self.qos)
        self._wake.set()

    def publish_raw(self, topic: str, payload: bytes, qos: Literal[0, 1] = 1, retain: bool = False) -> None:
        """Spool any message (delivered in order with the tokens)."""
        self._check_open()
        self.spool.append(topic, payload, qos, retain)
        self._wake.set()

    def publish_level(self, level: Mapping[str, Any]) -> None:
        """Send a level reading on `level` at QoS 0 if connected; dropped otherwise (never spooled)."""
        self._check_open()
        if self._connected.is_set():
            self._client.publish(self.topics.level, json.dumps(level, separators=(",", ":")), qos=0)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(
            sent=self._n_sent,
            acked=self._n_acked,
            rejected=self._n_rejected,
            pending=len(self.spool),
            dropped=self.spool.dropped,
            connects=self._n_connects,
            invalid=self._n_invalid,
        )

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until the spool is empty (everything acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.spool) > 0:
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.02)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Deliver what the broker takes within `timeout` s, say "offline", disconnect. Idempotent."""
        if self._closed:
            return
        if not self._started:
            self.spool.close()
            self._closed = True
            return
        self._shutdown(self.close_timeout_s if timeout is None else timeout, say_offline=True)

    def _check_open(self) -> None:
        if self._closed:
            raise MqttError(f"{self.target.label}: publisher is closed")

    def _shutdown(self, flush_s: float, say_offline: bool) -> None:
        deadline = time.monotonic() + flush_s
        if flush_s > 0:
            self.wait_delivered(flush_s)
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join()
        if say_offline and self._connected.is_set():
            info = self._client.publish(self.topics.status, OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass
        self._client.disconnect()
        self._client.loop_stop()
        self._drain_acks()
        left = len(self.spool)
        if left:
            log.warning(
                "%s: %d message(s) not yet acknowledged stay in the spool %s and are sent on the next run",
                self.target.label, left, self.spool.dir,
            )  # fmt: skip
        self.spool.close()
        self._closed = True

    # --- paho's thread -------------------------------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        if rc.is_failure:
            reason = AUTH_REASONS.get(rc.value)
            text = f"not authorised ({reason})" if reason else f"connection refused ({rc.getName()})"
            if not self._ever_connected:
                self._refused = text
                client.disconnect()  # stop the retries: start() raises
                self._first.set()
            else:
                log.error("%s: %s; retrying", self.target.label, text)
            return
        self._n_connects += 1
        client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        if self._birth is not None:
            client.publish(self.topics.birth, self._birth, qos=1, retain=True)
        for topic, payload in self._extra:
            client.publish(topic, payload, qos=1, retain=True)
        if self._ever_connected or self._warned_unreachable:
            log.warning("%s: connected; %d spooled message(s) to deliver", self.target.label, len(self.spool))
        self._ever_connected = True
        self._warned_unreachable = False
        self._connected.set()
        self._first.set()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._first.set()
        self._warn_unreachable("connection failed")

    def _warn_unreachable(self, why: str) -> None:
        if not self._warned_unreachable and not self._connected.is_set():
            self._warned_unreachable = True
            log.warning(
                "%s: broker unreachable (%s); events are spooled in %s and sent when it returns (retrying)",
                self.target.label, why, self.spool.dir,
            )  # fmt: skip

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Properties | None
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stop.is_set():
            log.warning("%s: connection lost (%s); spooling and reconnecting", self.target.label, rc.getName())
            self._warned_unreachable = True

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Properties) -> None:
        self._acks.put((mid, bool(rc.is_failure)))
        self._wake.set()

    # --- the sender thread ---------------------------------------------------------------------
    def _send_loop(self) -> None:
        last_sync = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._drain_acks()
                if self._connected.is_set():
                    self._send_more()
                if time.monotonic() - last_sync >= FSYNC_INTERVAL_S:
                    self.spool.sync()
                    last_sync = time.monotonic()
            except Exception:  # keep delivering whatever one bad record did
                log.exception("%s: sender error", self.target.label)
                time.sleep(0.5)

    def _send_more(self) -> None:
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        for rec in self.spool.peek(room, after=self._last_sent):
            info = self._client.publish(rec.topic, rec.payload, qos=rec.qos, retain=rec.retain)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                log.warning("%s: publish to %s failed (%s)", self.target.label, rec.topic, mqtt.error_string(info.rc))
                return
            entry: list[Any] = [rec.pos, False]
            self._inflight.append(entry)
            self._by_mid[info.mid] = entry
            self._last_sent = rec.pos
            self._n_sent += 1

    def _drain_acks(self) -> None:
        while True:
            try:
                mid, failed = self._acks.get_nowait()
            except queue.Empty:
                break
            entry = self._by_mid.pop(mid, None)
            if entry is None:
                continue  # status / birth / level
            if failed:
                self._n_rejected += 1
                log.error("%s: broker rejected a message on publish; dropped from the spool", self.target.label)
            entry[1] = True
        while self._inflight and self._inflight[0][1]:
            pos = self._inflight.popleft()[0]
            if self.spool.ack(pos):
                self._n_acked += 1
