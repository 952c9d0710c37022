"""The MQTT publisher against a real mosquitto: round trips, outages, restarts, refusals, last will, CLI.

A raw paho subscriber checks what reached the broker. Skipped when mosquitto is not installed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.errors import ConfigError, MqttError
from edge.ha_discovery import discovery_configs, ha_object_id
from edge.mqtt_url import PASSWORD_ENV, check_tls_files, parse_mqtt_url, redact
from edge.publish import Publisher, TlsFiles, Topics, topic_base
from tests.broker import Mosquitto, free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parents[1]
SITE = "lab"


# --- helpers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> Any:
    from edge.inference import Model

    return Model()


@pytest.fixture(scope="module")
def birth(model: Any) -> dict[str, Any]:
    from edge.tokens import build_birth

    return build_birth("t1", SITE, model, None, "0.1.0")


def make_token(model: Any, seq: int, dev: str = "t1") -> dict[str, Any]:
    lb = model.labels[seq % len(model.labels)]
    t0 = 1_790_000_000.0 + seq
    return {
        "v": 1, "dev": dev, "seq": seq, "id": seq // 2, "ph": "on" if seq % 2 == 0 else "off",
        "t0": t0, "t1": None if seq % 2 == 0 else t0 + 0.5, "lat": 240, "lbl": lb.name, "mid": lb.mid,
        "c": lb.index, "p": 0.75, "az": -35.5, "el": None, "dsd": 4.2, "trk": None, "lvl": -23.4, "m": model.id,
    }  # fmt: skip


class Subscriber:
    """A raw paho client that records every message (topic, payload, qos, retain)."""

    def __init__(self, url: str, topic: str, client_id: str | None = None, persistent: bool = False) -> None:
        t = parse_mqtt_url(url)
        self.topic = topic
        self.messages: list[tuple[str, bytes, int, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"sub-{time.monotonic_ns()}",
            clean_session=not persistent,
        )
        self.c.reconnect_delay_set(1, 1)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.c.on_message = self._on_message
        self.c.connect(t.host, t.port)
        self.c.loop_start()
        assert self._subscribed.wait(5), "subscriber did not subscribe"

    def _on_message(self, c: mqtt.Client, u: Any, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((m.topic, bytes(m.payload), m.qos, bool(m.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _, _ in self.messages if t == topic]

    def wait(self, cond: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.02)
        return cond()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def retained(url: str, topic: str, timeout: float = 3.0) -> bytes | None:
    """The retained message a late subscriber gets on `topic` (None if none)."""
    s = Subscriber(url, topic)
    s.wait(lambda: bool(s.on(topic)), timeout)
    s.close()
    got = s.on(topic)
    return got[-1] if got else None


def seqs(payloads: list[bytes]) -> list[int]:
    return [json.loads(p)["seq"] for p in payloads]


# --- URLs (no broker) --------------------------------------------------------------------------
def test_mqtt_url_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    t = parse_mqtt_url("mqtt://broker.local")
    assert (t.host, t.port, t.tls, t.username, t.password) == ("broker.local", 1883, False, None, None)
    assert t.transport == "tcp"
    t = parse_mqtt_url("mqtts://dev%40home:p%40ss%3Aw@10.0.0.2:9883")
    assert (t.host, t.port, t.tls, t.username, t.password) == ("10.0.0.2", 9883, True, "dev@home", "p@ss:w")
    assert parse_mqtt_url("mqtts://h").port == 8883
    assert parse_mqtt_url("mqtt://[::1]:1884").host == "::1"
    assert "p@ss" not in repr(t) and t.label == "mqtts://dev@home@10.0.0.2:9883"
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert parse_mqtt_url("mqtt://u@h").password == "from-env"
    assert parse_mqtt_url("mqtt://u:url@h").password == "url"
    assert parse_mqtt_url("mqtt://h").password is None  # no user, no password


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://h", "scheme"),
        ("h:1883", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://:pw@:1883", "no host"),
        ("mqtt://h:abc", "port"),
        ("mqtt://h:70000", "port"),
        ("mqtt://h:0", "port"),
        ("mqtt://h:", "empty port"),
        ("mqtt://h/topic", "no path"),
        ("mqtt://h?x=1", "no path"),
        ("mqtt://:pw@h", "empty user"),
    ],
)
def test_mqtt_url_rejections(url: str, why: str) -> None:
    with pytest.raises(MqttError, match=why):
        parse_mqtt_url(url)


def test_redact_never_shows_the_password() -> None:
    assert redact("mqtt://u:s3cret@h:1") == "mqtt://u:***@h:1"
    assert redact("mqtt://h:1") == "mqtt://h:1"
    with pytest.raises(MqttError) as e:
        parse_mqtt_url("mqtt://u:s3cret@h:99999")
    assert "s3cret" not in str(e.value)


def test_topics_and_names() -> None:
    assert Topics.for_device("home", "k1").events == "tympan/v1/home/k1/events"
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ConfigError):
            topic_base(bad, "k1")
        with pytest.raises(ConfigError):
            topic_base("home", bad)


def test_ha_discovery_configs() -> None:
    cfgs = discovery_configs("tympan/v1/home/k 1", "k 1", "home", "tympan-sed-s1", "0.1.0")
    assert len(cfgs) >= 1
    ids = set()
    for topic, payload in cfgs:
        assert topic.startswith("homeassistant/sensor/tympan_home_k_1/") and topic.endswith("/config")
        c = json.loads(payload)
        assert c["availability_topic"] == "tympan/v1/home/k 1/status"
        assert c["state_topic"] == "tympan/v1/home/k 1/events"
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        assert c["device"]["identifiers"] == ["tympan_home_k_1"] and c["device"]["sw_version"] == "0.1.0"
        ids.add(c["unique_id"])
    assert len(ids) == len(cfgs)
    assert ha_object_id("a/b+c") == "a_b_c"


# --- against mosquitto -------------------------------------------------------------------------
@pytest.mark.parametrize(("qos", "protocol"), [(0, "3.1.1"), (1, "3.1.1"), (1, "5")])
def test_round_trip_both_forms(
    broker: Mosquitto,
    tmp_path: Path,
    model: Any,
    birth: dict[str, Any],
    qos: Literal[0, 1],
    protocol: Literal["3.1.1", "5"],
) -> None:
    from edge.token_codec import decode_json, decode_packed, encode_json, encode_packed

    topics = Topics.for_device(SITE, "t1")
    sub = Subscriber(broker.url, f"tympan/v1/{SITE}/t1/#")
    toks = [make_token(model, i) for i in range(20)]
    url = parse_mqtt_url(broker.url)
    with Publisher(url, "t1", SITE, birth=birth, spool=tmp_path / "sp", qos=qos, protocol=protocol) as pub:
        for tok in toks:
            pub.publish_token(tok)
        assert pub.wait_delivered(5)
    assert sub.wait(lambda: len(sub.on(topics.tokens)) == 20 and len(sub.on(topics.events)) == 20)
    sub.close()
    assert sub.on(topics.events) == [encode_json(t) for t in toks]
    assert sub.on(topics.tokens) == [encode_packed(t) for t in toks]
    assert [decode_json(p)["seq"] for p in sub.on(topics.events)] == list(range(20))
    assert [decode_packed(p, birth)["seq"] for p in sub.on(topics.tokens)] == list(range(20))
    assert {q for t, _, q, _ in sub.messages if t in (topics.events, topics.tokens)} == {qos}
    assert json.loads(sub.on(topics.birth)[0]) == birth
    assert sub.on(topics.status) == [b"online", b"offline"]
    assert pub.stats.acked == 40 and pub.stats.pending == 0


def test_invalid_token_is_logged_and_counted_not_raised(
    broker: Mosquitto, tmp_path: Path, model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with Publisher(parse_mqtt_url(broker.url), "t1", SITE, spool=tmp_path / "sp") as pub:
        bad = {**make_token(model, 0), "p": 7.0}
        with caplog.at_level(logging.ERROR, logger="edge.publish"):
            pub.publish_token(bad)
        pub.publish_token(make_token(model, 1))
        assert pub.wait_delivered(5)
    assert pub.stats.invalid == 1 and pub.stats.acked == 2
    assert "not published" in caplog.text


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(
    broker: Mosquitto, tmp_path: Path, model: Any, birth: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    topics = Topics.for_device(SITE, "t1")
    sub = Subscriber(broker.url, topics.events, client_id="restart-sub", persistent=True)
    n_before, n_down, n_after = 100, 200, 100
    pub = Publisher(
        parse_mqtt_url(broker.url), "t1", SITE, birth=birth, spool=tmp_path / "sp", reconnect_delay_s=(1, 2)
    ).start()
    seq = 0
    for _ in range(n_before):
        pub.publish_token(make_token(model, seq))
        seq += 1
    assert sub.wait(lambda: len(sub.on(topics.events)) >= n_before // 2)
    broker.stop()  # mid-stream: some of the first 100 are still in flight
    t_down = time.monotonic()
    for _ in range(n_down):
        pub.publish_token(make_token(model, seq))
        seq += 1
        time.sleep(0.005)  # ~1 s of events while the broker is away
    assert not pub.connected and pub.stats.pending > 0
    broker.start()
    for _ in range(n_after):
        pub.publish_token(make_token(model, seq))
        seq += 1
    assert pub.wait_delivered(20), pub.stats
    delivered_s = time.monotonic() - t_down
    pub.close(2)
    total = n_before + n_down + n_after
    assert sub.wait(lambda: len(set(seqs(sub.on(topics.events)))) >= total, 15)
    sub.close()
    got = seqs(sub.on(topics.events))
    first_seen = list(dict.fromkeys(got))  # dedupe by seq (one device), keeping first arrival
    assert first_seen == list(range(total))  # nothing lost, in order
    with capsys.disabled():
        print(
            f"\n[restart] {total} tokens, {len(got)} received, {len(got) - total} resent duplicates, "
            f"outage to all delivered {delivered_s:.1f} s, {pub.stats.connects} connects"
        )


def test_spool_survives_publisher_restart(
    tmp_path: Path, model: Any, birth: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    broker = Mosquitto(tmp_path)  # not started yet: the device boots before the broker
    url = parse_mqtt_url(broker.url)
    topics = Topics.for_device(SITE, "t1")
    with caplog.at_level(logging.WARNING, logger="edge.publish"):
        pub = Publisher(url, "t1", SITE, birth=birth, spool=tmp_path / "sp", connect_wait_s=1.0).start()
        for i in range(50):
            pub.publish_token(make_token(model, i))
        time.sleep(1.2)  # a few reconnect attempts
        pub.close(0.2)
    assert pub.stats.pending == 100 and pub.stats.acked == 0  # JSON + packed per token
    assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1  # warned once
    broker.start()
    try:
        sub = Subscriber(broker.url, f"tympan/v1/{SITE}/t1/#")
        with Publisher(url, "t1", SITE, birth=birth, spool=tmp_path / "sp") as pub2:
            pub2.publish_token(make_token(model, 50))
            assert pub2.wait_delivered(10)
        assert sub.wait(lambda: len(sub.on(topics.tokens)) == 51)
        sub.close()
        assert seqs(sub.on(topics.events)) == list(range(51))
    finally:
        broker.stop()


def test_broker_that_comes_up_after_the_device_gets_everything(tmp_path: Path, model: Any) -> None:
    broker = Mosquitto(tmp_path)
    topics = Topics.for_device(SITE, "t1")
    pub = Publisher(parse_mqtt_url(broker.url), "t1", SITE, spool=tmp_path / "sp", connect_wait_s=0.5).start()
    try:
        for i in range(10):
            pub.publish_token(make_token(model, i))
        assert not pub.connected
        broker.start()
        sub = Subscriber(broker.url, topics.events, client_id="late-sub", persistent=True)
        for i in range(10, 20):
            pub.publish_token(make_token(model, i))
        assert pub.wait_delivered(10), pub.stats
        pub.close(2)
        assert sub.wait(lambda: len(sub.on(topics.events)) >= 20)
        sub.close()
        assert list(dict.fromkeys(seqs(sub.on(topics.events)))) == list(range(20))
    finally:
        pub.close(0)
        broker.stop()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=tympan test CA",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-out", f"{name}.crt", *ext, cwd=d)  # fmt: skip
    return {n: d / n for n in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


def test_tls_with_ca_and_client_certificate(tmp_path: Path, model: Any, birth: dict[str, Any]) -> None:
    mosquitto_binary()
    pki = make_pki(tmp_path / "pki")
    broker = Mosquitto(tmp_path)
    tls_port = free_port()
    with open(broker.conf, "a") as f:  # a second listener: TLS, client certificate required
        f.write(
            f"listener {tls_port} 127.0.0.1\ncafile {pki['ca.crt']}\ncertfile {pki['server.crt']}\n"
            f"keyfile {pki['server.key']}\nrequire_certificate true\n"
        )
    url = parse_mqtt_url(f"mqtts://127.0.0.1:{tls_port}")
    topics = Topics.for_device(SITE, "t1")
    with broker:
        sub = Subscriber(broker.url, topics.events)
        tls = TlsFiles(ca=str(pki["ca.crt"]), cert=str(pki["client.crt"]), key=str(pki["client.key"]))
        with Publisher(url, "t1", SITE, birth=birth, spool=tmp_path / "sp", tls=tls) as pub:
            assert pub.connected
            for i in range(5):
                pub.publish_token(make_token(model, i))
            assert pub.wait_delivered(5)
        assert sub.wait(lambda: len(sub.on(topics.events)) == 5)
        sub.close()
        t0 = time.monotonic()
        with pytest.raises(MqttError, match="TLS certificate not trusted"):  # the system CAs do not know ours
            Publisher(url, "t1", SITE, spool=tmp_path / "sp2", tls=TlsFiles()).start()
        assert time.monotonic() - t0 < 3.0


def test_bad_tls_files_are_named_before_connecting(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    label = "mqtts://127.0.0.1:8883"
    ca, crt, key = str(pki["ca.crt"]), str(pki["client.crt"]), str(pki["client.key"])
    check_tls_files(label, ca, crt, key)  # a good set passes
    cases = [
        ((str(tmp_path / "none.pem"), None, None), r"--mqtt-ca \S*none\.pem: no such file"),
        ((str(tmp_path), None, None), r"--mqtt-ca \S+: is a directory"),
        ((str(junk), None, None), r"--mqtt-ca \S*junk\.pem: not a PEM CA certificate bundle"),
        ((ca, crt, None), "needs both --mqtt-cert and --mqtt-key"),
        ((ca, str(junk), key), r"--mqtt-cert \S*junk\.pem / --mqtt-key \S*client\.key: not a PEM certificate"),
        ((ca, crt, str(pki["server.key"])), "not a PEM certificate and its private key"),  # a key of another cert
    ]
    for (c, cert, k), message in cases:
        with pytest.raises(MqttError, match=rf"^{re.escape(label)}: .*{message}"):
            check_tls_files(label, c, cert, k)
    # the publisher checks them before paho loads them (paho's own error names no file)
    with pytest.raises(MqttError, match=r"--mqtt-ca \S*none\.pem: no such file"):
        Publisher(
            parse_mqtt_url(label), "t1", SITE, spool=tmp_path / "sp", tls=TlsFiles(ca=str(tmp_path / "none.pem"))
        ).start()


def test_wrong_password_is_a_clear_error_quickly(tmp_path: Path, model: Any) -> None:
    mosquitto_binary()
    with Mosquitto(tmp_path, users={"dev": "secret"}) as b:
        t0 = time.monotonic()
        with pytest.raises(MqttError) as e:
            Publisher(parse_mqtt_url(f"mqtt://dev:wrong@127.0.0.1:{b.port}"), "t1", SITE, spool=tmp_path / "a").start()
        assert time.monotonic() - t0 < 3.0
        assert str(e.value) == f"mqtt://dev@127.0.0.1:{b.port}: not authorised (bad user name or password)"
        assert "wrong" not in str(e.value)
        with pytest.raises(MqttError, match="not authorised"):  # anonymous is refused too
            Publisher(parse_mqtt_url(b.url), "t1", SITE, spool=tmp_path / "b").start()
        with Publisher(parse_mqtt_url(f"mqtt://dev:secret@127.0.0.1:{b.port}"), "t1", SITE, spool=tmp_path / "c") as p:
            p.publish_token(make_token(model, 0))
            assert p.connected and p.wait_delivered(5)


def test_clean_close_says_offline_and_late_subscriber_gets_birth(
    broker: Mosquitto, tmp_path: Path, birth: dict[str, Any]
) -> None:
    topics = Topics.for_device(SITE, "t1")
    extra = discovery_configs(topic_base(SITE, "t1"), "t1", SITE, "m", "0.1.0")
    with Publisher(parse_mqtt_url(broker.url), "t1", SITE, birth=birth, spool=tmp_path / "sp", extra_retained=extra):
        assert retained(broker.url, topics.status) == b"online"
        got = retained(broker.url, topics.birth)
        assert got is not None and json.loads(got) == birth
        assert retained(broker.url, extra[0][0]) == extra[0][1]
    assert retained(broker.url, topics.status) == b"offline"
    got = retained(broker.url, topics.birth)
    assert got is not None and json.loads(got) == birth  # still there for late subscribers


_CRASHER = """
import sys, time
from edge.mqtt_url import parse_mqtt_url
from edge.publish import Publisher
p = Publisher(parse_mqtt_url(sys.argv[1]), "crash", "lab", spool=sys.argv[2]).start()
print("connected" if p.connected else "not connected", flush=True)
time.sleep(60)
"""


def test_last_will_offline_when_the_connection_dies(broker: Mosquitto, tmp_path: Path) -> None:
    status = Topics.for_device(SITE, "crash").status
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHER, broker.url, str(tmp_path / "sp")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        assert retained(broker.url, status) == b"online"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # no clean close: only the broker's last will can say it
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    sub = Subscriber(broker.url, status)
    assert sub.wait(lambda: sub.on(status)[-1:] == [b"offline"], 5)
    sub.close()


def test_listen_end_to_end(broker: Mosquitto, tmp_path: Path) -> None:
    exe = ROOT / ".venv" / "bin" / "tympan"
    if not exe.exists():
        pytest.skip("the tympan console script is not installed (pip install -e .)")
    topics = Topics.for_device("lab", "t1")
    sub = Subscriber(broker.url, "#")
    r = subprocess.run(
        [str(exe), "listen", "--input", str(ROOT / "edge/data/sample_scene.flac"), "--board", "respeaker-4mic-hat",
         "--mqtt", broker.url, "--device-id", "t1", "--site", "lab", "--spool", str(tmp_path / "sp"),
         "--ha-discovery", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    printed = [json.loads(line) for line in r.stdout.splitlines()]
    assert printed
    assert sub.wait(lambda: len(sub.on(topics.tokens)) == len(printed))
    sub.close()
    wire = [json.loads(p) for p in sub.on(topics.events)]
    assert [t["seq"] for t in wire] == [t["seq"] for t in printed] == list(range(len(printed)))
    assert [t["lbl"] for t in wire] == [t["lbl"] for t in printed]
    assert all("onset" not in t for t in wire)  # stream times stay in --events records
    assert json.loads(sub.on(topics.birth)[0])["dev"] == "t1"
    assert sub.on(topics.status)[-1] == b"offline"
    assert any(t.startswith("homeassistant/sensor/") for t, _, _, _ in sub.messages)
    levels = [json.loads(p) for p in sub.on(topics.level)]  # one Leq a second of the 10 s scene (QoS 0)
    assert 8 <= len(levels) <= 10
    assert all(lv["dev"] == "t1" and -80.0 < lv["leq"] < 0.0 for lv in levels)
    assert [lv["t"] for lv in levels] == sorted(lv["t"] for lv in levels)


def test_listen_refused_is_one_line(tmp_path: Path) -> None:
    exe = ROOT / ".venv" / "bin" / "tympan"
    if not exe.exists():
        pytest.skip("the tympan console script is not installed (pip install -e .)")
    mosquitto_binary()
    with Mosquitto(tmp_path, users={"dev": "secret"}) as b:
        r = subprocess.run(
            [str(exe), "listen", "--input", str(ROOT / "edge/data/sample_scene.flac"), "--board", "respeaker-4mic-hat",
             "--mqtt", f"mqtt://dev@127.0.0.1:{b.port}", "--device-id", "t1", "--spool", str(tmp_path / "sp")],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, PASSWORD_ENV: "nope"},
        )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"tympan: error: mqtt://dev@127.0.0.1:{b.port}: not authorised (bad user name or password)"
    )
