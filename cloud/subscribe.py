"""(topic, payload) -> printable records: decoded event tokens, `seq` gaps, malformed payloads.

    stream = TokenStream(packed=False)
    for rec in stream.feed(topic, payload, now):   # now: a monotonic clock, seconds
        ...                                         # Received | Gap | Problem | Birth | Status
    stream.expire(now)                              # packed tokens held too long without a birth

`TokenStream` is pure (no I/O, no clock of its own). It reads the topics of docs/tokens.md,
`tympan/v1/<site>/<device>/{status,birth,events,tokens}`: JSON tokens from `events`, or packed tokens
from `tokens` (with `packed=True`), resolved through the device's retained `birth`. Packed tokens that
arrive before their device's birth are held up to `hold_s` seconds, then reported as a `Problem`.
Per device (site + device id) it drops duplicates (same `seq`, e.g. a QoS 1 redelivery), reports
gaps in `seq` and delivers late tokens that fill an earlier gap. A new birth (another `t`) or a `seq`
far below the last one means the device restarted: its `seq` history starts again.

`MqttSubscription` is the I/O: a paho-mqtt 2.x client that connects, subscribes and hands
(topic, payload) pairs to the caller's thread through a queue.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import MqttError, TokenError
from edge.mqtt_url import MqttTarget, check_tls_files
from edge.token_codec import TOPIC_PREFIX, decode_json, decode_packed, label_table
from edge.tokens import validate_birth

log = logging.getLogger(__name__)

SEQ_WINDOW = 4096  # seqs remembered per device for duplicate detection; further back means a restart
HOLD_S = 5.0  # how long packed tokens wait for their device's birth
HOLD_MAX = 1000  # packed tokens held per device at most (older ones are reported and dropped)
PROBLEM_MAX_CHARS = 200


# --- records ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """A decoded token. `late`: it fills a gap reported earlier."""

    topic: str
    site: str
    dev: str
    token: dict[str, Any]
    late: bool = False


@dataclass(frozen=True)
class Gap:
    """`seq` jumped from `last` to `seq`: `missing` tokens of this device were not seen."""

    site: str
    dev: str
    last: int
    seq: int

    @property
    def missing(self) -> int:
        return self.seq - self.last - 1


@dataclass(frozen=True)
class Problem:
    """A payload that was skipped, and why."""

    topic: str
    message: str


@dataclass(frozen=True)
class Birth:
    site: str
    dev: str
    birth: dict[str, Any]


@dataclass(frozen=True)
class Status:
    site: str
    dev: str
    text: str


Record = Received | Gap | Problem | Birth | Status


# --- the pure part ----------------------------------------------------------------------------------------


@dataclass
class _SeqState:
    last: int | None = None
    seen: set[int] = field(default_factory=set)
    order: deque[int] = field(default_factory=deque)
    missing: set[int] = field(default_factory=set)

    def remember(self, seq: int) -> None:
        self.seen.add(seq)
        self.order.append(seq)
        while len(self.order) > SEQ_WINDOW:
            self.seen.discard(self.order.popleft())


@dataclass
class _Device:
    birth: dict[str, Any] | None = None
    seqs: _SeqState = field(default_factory=_SeqState)
    held: deque[tuple[float, str, bytes]] = field(default_factory=deque)


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """`tympan/v1/<site>/<device>/<kind>` -> (site, device, kind); None for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_PREFIX or not all(parts[2:]):
        return None
    return parts[2], parts[3], parts[4]


def topic_filters(site: str | None, device: str | None, packed: bool) -> list[str]:
    """The subscriptions: the device's birth and status, and its events (JSON) or tokens (packed)."""
    base = f"{TOPIC_PREFIX}/{site or '+'}/{device or '+'}"
    return [f"{base}/birth", f"{base}/status", f"{base}/{'tokens' if packed else 'events'}"]


def _short(e: Exception | str) -> str:
    text = str(e)
    return text if len(text) <= PROBLEM_MAX_CHARS else text[: PROBLEM_MAX_CHARS - 3] + "..."


class TokenStream:
    """Decodes, dedupes and gap-checks the tokens of many devices (see the module docstring)."""

    def __init__(self, packed: bool = False, hold_s: float = HOLD_S) -> None:
        self.packed = packed
        self.hold_s = hold_s
        self.duplicates = 0
        self._devices: dict[tuple[str, str], _Device] = {}

    def _device(self, site: str, dev: str) -> _Device:
        return self._devices.setdefault((site, dev), _Device())

    def feed(self, topic: str, payload: bytes, now: float) -> list[Record]:
        """The records of one message (possibly none: a duplicate, a held packed token)."""
        where = parse_topic(topic)
        if where is None:
            return [Problem(topic, "not a tympan/v1/<site>/<device>/<kind> topic")]
        site, dev, kind = where
        if kind == "status":
            return self._status(topic, site, dev, payload)
        if kind == "birth":
            return self._birth(topic, site, dev, payload, now)
        if kind == "events" and not self.packed:
            try:
                tok = decode_json(payload)
            except TokenError as e:
                return [Problem(topic, _short(e))]
            return self._accept(topic, site, dev, tok)
        if kind == "tokens" and self.packed:
            d = self._device(site, dev)
            if d.birth is None:
                out: list[Record] = []
                d.held.append((now, topic, bytes(payload)))
                if len(d.held) > HOLD_MAX:
                    _, t, _ = d.held.popleft()
                    out.append(Problem(t, f"no birth message from device {dev!r}: held packed token dropped"))
                return out + self.expire(now)
            return self._packed(topic, site, dev, d.birth, payload)
        return []  # a kind this stream does not read (level, caption, ...)

    def expire(self, now: float) -> list[Record]:
        """Problems for packed tokens that waited more than `hold_s` for their device's birth."""
        out: list[Record] = []
        for (_, dev), d in self._devices.items():
            while d.held and now - d.held[0][0] > self.hold_s:
                _, topic, _ = d.held.popleft()
                out.append(Problem(topic, f"no birth message from device {dev!r} within {self.hold_s:g} s: "
                                          "packed token skipped"))  # fmt: skip
        return out

    def _status(self, topic: str, site: str, dev: str, payload: bytes) -> list[Record]:
        try:
            text = payload.decode("utf-8").strip()
        except UnicodeDecodeError:
            return [Problem(topic, "status is not UTF-8 text")]
        if text not in ("online", "offline"):
            return [Problem(topic, f"status {text[:40]!r}: expected 'online' or 'offline'")]
        return [Status(site, dev, text)]

    def _birth(self, topic: str, site: str, dev: str, payload: bytes, now: float) -> list[Record]:
        d = self._device(site, dev)
        if not payload:  # the retained birth was cleared
            d.birth = None
            return []
        try:
            b = validate_birth(decode_json_object(payload))
            label_table(b)
        except TokenError as e:
            return [Problem(topic, _short(e))]
        if b["dev"] != dev or b["site"] != site:
            return [Problem(topic, f"birth of {b['site']}/{b['dev']} published on the topic of {site}/{dev}")]
        if d.birth is not None and d.birth.get("t") != b.get("t"):
            d.seqs = _SeqState()  # a restarted device counts seq again
        d.birth = b
        out: list[Record] = [Birth(site, dev, b)]
        held, d.held = d.held, deque()
        for _, t, p in held:
            out += self._packed(t, site, dev, b, p)
        return out

    def _packed(self, topic: str, site: str, dev: str, birth: dict[str, Any], payload: bytes) -> list[Record]:
        try:
            tok = decode_packed(payload, birth)
        except TokenError as e:
            return [Problem(topic, _short(e))]
        return self._accept(topic, site, dev, tok)

    def _accept(self, topic: str, site: str, dev: str, tok: dict[str, Any]) -> list[Record]:
        if tok["dev"] != dev:
            return [Problem(topic, f"token of device {tok['dev']!r} published on the topic of {dev!r}")]
        s = self._device(site, dev).seqs
        seq: int = tok["seq"]
        out: list[Record] = []
        late = False
        if seq in s.seen:
            self.duplicates += 1
            log.debug("%s: duplicate seq %d ignored", topic, seq)
            return []
        if s.last is None or seq == s.last + 1:
            s.last = seq
        elif seq > s.last + 1:
            out.append(Gap(site, dev, s.last, seq))
            s.missing.update(range(max(s.last + 1, seq - SEQ_WINDOW), seq))
            if len(s.missing) > SEQ_WINDOW:
                s.missing = {q for q in s.missing if q > seq - SEQ_WINDOW}
            s.last = seq
        elif seq in s.missing or s.last - seq < SEQ_WINDOW:
            late = True
        else:  # far below anything recent: the device started counting again
            out.append(Problem(topic, f"device {dev!r} restarted its seq ({s.last} -> {seq})"))
            s.last = seq
            s.seen.clear()
            s.order.clear()
            s.missing.clear()
        s.missing.discard(seq)
        s.remember(seq)
        out.append(Received(topic, site, dev, tok, late))
        return out


def decode_json_object(payload: bytes) -> dict[str, Any]:
    """A JSON object of at most 1 MiB (a birth message); TokenError for anything else."""
    if len(payload) > 1 << 20:
        raise TokenError(f"message of {len(payload)} bytes is too large")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise TokenError(f"not JSON: {_short(e)}") from None
    if not isinstance(obj, dict):
        raise TokenError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


# --- output -----------------------------------------------------------------------------------------------


def _num(x: Any, fmt: str) -> str | None:
    return None if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x) else format(x, fmt)


def format_token(tok: dict[str, Any], late: bool = False) -> str:
    """One readable line: `12:03:04.512 kitchen-pi  #41 off  Dog  p=0.87  az 61° ±39°  -19.7 dBFS  0.32 s`.

    The time is the event's (onset for on/upd, offset for off), local time of day.
    """
    t = tok["t1"] if tok["t1"] is not None else tok["t0"]
    secs, ms = divmod(round(t * 1000), 1000)
    clock = time.strftime("%H:%M:%S", time.localtime(secs)) + f".{ms:03d}"
    parts = [f"{clock} {tok['dev']}", f"#{tok['seq']} {tok['ph']:<3}", f"{tok['lbl']} (ev {tok['id']})",
             f"p={tok['p']:.2f}"]  # fmt: skip
    az, el, dsd = _num(tok.get("az"), ".0f"), _num(tok.get("el"), ".0f"), _num(tok.get("dsd"), ".0f")
    if az is not None:
        where = f"az {az}°" + ("?" if tok.get("amb") else "")
        where += "" if el is None else f" el {el}°"
        where += "" if dsd is None else f" ±{dsd}°"
        parts.append(where)
    lvl = _num(tok.get("lvl"), ".1f")
    if lvl is not None:
        parts.append(f"{lvl} dBFS")
    if tok["t1"] is not None:
        parts.append(f"{tok['t1'] - tok['t0']:.2f} s")
    if late:
        parts.append("(late)")
    return "  ".join(parts)


def format_gap(g: Gap) -> str:
    return f"gap: device {g.site}/{g.dev} seq {g.last} -> {g.seq} ({g.missing} missing)"


def format_json(tok: dict[str, Any]) -> str:
    return json.dumps(tok, separators=(",", ":"))


# --- the I/O ----------------------------------------------------------------------------------------------

CONNECT_TIMEOUT_S = 10.0


class MqttSubscription:
    """A paho-mqtt 2.x client subscribed to `filters` at QoS 1; `get()` hands over (topic, payload).

    `__enter__` returns once the broker accepted the connection and the subscriptions, or raises
    MqttError with a one-line reason (refused, bad credentials, unknown host, TLS). Reconnects (with
    paho's backoff) and re-subscribes on its own afterwards. `client_id` makes the session persistent,
    so QoS 1 messages published while this subscriber is away are delivered when it comes back.
    """

    def __init__(self, target: MqttTarget, filters: list[str], cafile: str | None = None,
                 client_id: str | None = None) -> None:  # fmt: skip
        if cafile is not None and not target.tls:
            raise MqttError(f"{target.label}: --mqtt-ca/--cafile needs an mqtts:// URL")
        self.target = target
        self.filters = filters
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._ready = threading.Event()
        self._failure: str | None = None
        self._lock = threading.Lock()
        self._suback_mid: int | None = None
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or "",
            clean_session=client_id is None,
            protocol=mqtt.MQTTv311,
        )
        if target.username is not None:
            self._client.username_pw_set(target.username, target.password)
        if target.tls:
            check_tls_files(target.label, cafile)
            try:
                self._client.tls_set(ca_certs=cafile, cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ValueError, ssl.SSLError) as e:
                raise MqttError(f"{target.label}: TLS setup failed: {e}") from None
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect

    def __enter__(self) -> MqttSubscription:
        label = self.target.label
        try:
            self._client.connect(self.target.host, self.target.port, keepalive=30)
        except ConnectionRefusedError:
            raise MqttError(f"{label}: connection refused (is a broker listening there?)") from None
        except ssl.SSLError as e:
            raise MqttError(f"{label}: TLS handshake failed: {e.reason or e}") from None
        except OSError as e:
            if isinstance(e, TimeoutError) or "timed out" in str(e):
                raise MqttError(f"{label}: no answer from the broker (timed out)") from None
            why = e.strerror or str(e)
            if "Name or service not known" in why or "nodename nor servname" in why or "getaddrinfo" in why:
                raise MqttError(f"{label}: unknown host {self.target.host!r}") from None
            raise MqttError(f"{label}: cannot connect: {why}") from None
        self._client.loop_start()
        if not self._ready.wait(CONNECT_TIMEOUT_S):
            self._failure = self._failure or f"no answer from the broker within {CONNECT_TIMEOUT_S:g} s"
        if self._failure is not None:
            self._stop()
            raise MqttError(f"{label}: {self._failure}")
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop()

    def _stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def get(self, timeout: float) -> tuple[str, bytes] | None:
        """The next message, or None after `timeout` seconds without one."""
        try:
            return self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    # paho's thread
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode,
                    props: Properties | None) -> None:  # fmt: skip
        if rc.is_failure:
            why = str(rc)
            hint = ""
            if rc.value in (4, 5, 0x86, 0x87):
                hint = (" (check the user name and password)" if self.target.username is not None
                        else " (no user name given: mqtt://USER:PASS@HOST)")  # fmt: skip
            self._failure = f"the broker refused the connection: {why}{hint}"
            self._ready.set()
            client.disconnect()
            return
        with self._lock:
            _, self._suback_mid = client.subscribe([(f, 1) for f in self.filters])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode],
                      props: Properties | None) -> None:  # fmt: skip
        with self._lock:
            if mid != self._suback_mid:
                return
        bad = [f for f, rc in zip(self.filters, rcs, strict=False) if rc.is_failure]
        if bad:
            self._failure = f"the broker refused the subscription to {', '.join(bad)}"
            client.disconnect()
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._queue.put((msg.topic, bytes(msg.payload)))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, rc: ReasonCode,
                       props: Properties | None) -> None:  # fmt: skip
        if self._ready.is_set() and self._failure is None and rc.is_failure:
            log.warning("%s: connection lost (%s); reconnecting", self.target.label, rc)
