"""`tympan subscribe`: the pure TokenStream (decoding, duplicates, gaps, held packed tokens) and the
command against a real mosquitto broker (tests/broker.py), with a raw paho client as the device."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.subscribe import Birth, Gap, Problem, Received, Status, TokenStream, format_gap, format_token
from edge.errors import ConfigError, MqttError
from edge.inference import Label
from edge.main import build_parser
from edge.token_codec import encode_json, encode_packed, topics
from edge.tokens import build_birth
from tests.broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "tympan-sed-s1-20261126"
SITE, DEV = "home", "kitchen-pi"
TOPICS = topics(SITE, DEV)
T0 = 1795713340.633


class FakeModel:
    id = MODEL_ID
    sha256 = "3aba79f7e4068c5bbfbb671e3f8d893b348bfeabfe971fdb33c5e6952cb3ed32"
    labels = (Label(0, "/m/09x0r", "Speech"), Label(18, "/m/0bt9lr", "Dog"), Label(19, "/m/05tny_", "Bark"))


def birth(t: float = T0 - 10) -> dict[str, Any]:
    return build_birth(DEV, SITE, FakeModel(), None, "0.1.0", t=t)


def token(seq: int, label: str = "Dog", ph: str = "off", dev: str = DEV) -> dict[str, Any]:
    lb = next(x for x in FakeModel.labels if x.name == label)
    return {"v": 1, "dev": dev, "seq": seq, "id": seq // 2, "ph": ph, "t0": round(T0 + seq, 3),
            "t1": round(T0 + seq + 0.32, 3) if ph == "off" else None, "lat": 600, "lbl": lb.name, "mid": lb.mid,
            "c": lb.index, "p": 0.873, "az": 61.3, "el": None, "dsd": 38.0, "trk": None, "lvl": -19.7,
            "m": MODEL_ID}  # fmt: skip


def js(seq: int, **kw: Any) -> bytes:
    return encode_json(token(seq, **kw))


# --- the pure stream --------------------------------------------------------------------------------------


def seqs(recs: list[Any]) -> list[int]:
    return [r.token["seq"] for r in recs if isinstance(r, Received)]


def test_json_tokens_duplicates_gaps_and_late_arrivals() -> None:
    s = TokenStream()
    ev = TOPICS["events"]
    out = [r for q in (0, 1, 1, 2, 5, 3, 5, 6) for r in s.feed(ev, js(q), 0.0)]
    assert seqs(out) == [0, 1, 2, 5, 3, 6]
    gaps = [r for r in out if isinstance(r, Gap)]
    assert gaps == [Gap(SITE, DEV, 2, 5)] and gaps[0].missing == 2
    assert format_gap(gaps[0]) == "gap: device home/kitchen-pi seq 2 -> 5 (2 missing)"
    assert [r.late for r in out if isinstance(r, Received)] == [False, False, False, False, True, False]
    assert s.duplicates == 2


def test_devices_are_counted_apart() -> None:
    s = TokenStream()
    other = topics(SITE, "garage-pi")["events"]
    out = (
        s.feed(TOPICS["events"], js(7), 0)
        + s.feed(other, js(0, dev="garage-pi"), 0)
        + s.feed(TOPICS["events"], js(8), 0)
    )
    assert seqs(out) == [7, 0, 8] and not any(isinstance(r, Gap) for r in out)


@pytest.mark.parametrize(
    ("topic", "payload", "needle"),
    [
        (TOPICS["events"], b"{not json", "not a JSON token"),
        (TOPICS["events"], b"\xff\x00", "not UTF-8"),
        (TOPICS["events"], json.dumps(token(1) | {"p": 7}).encode(), "'p'"),
        (TOPICS["events"], js(1, dev="garage-pi"), "published on the topic of 'kitchen-pi'"),
        ("tympan/v1/home/events", js(1), "not a tympan/v1/<site>/<device>/<kind> topic"),
        (TOPICS["birth"], b"[]", "expected a JSON object"),
        (TOPICS["birth"], json.dumps(birth() | {"labels": 3}).encode(), "'labels'"),
        (TOPICS["status"], b"maybe", "expected 'online' or 'offline'"),
    ],
)
def test_malformed_payloads_become_problems(topic: str, payload: bytes, needle: str) -> None:
    out = TokenStream().feed(topic, payload, 0.0)
    assert len(out) == 1 and isinstance(out[0], Problem) and out[0].topic == topic
    assert needle in out[0].message


def test_packed_tokens_wait_for_their_birth() -> None:
    s = TokenStream(packed=True, hold_s=5.0)
    tk = TOPICS["tokens"]
    assert s.feed(tk, encode_packed(token(0, ph="on")), 0.0) == []
    assert s.feed(tk, encode_packed(token(1)), 1.0) == []
    out = s.feed(TOPICS["birth"], json.dumps(birth()).encode(), 2.0)
    assert isinstance(out[0], Birth) and seqs(out) == [0, 1]
    back = next(r.token for r in out if isinstance(r, Received) and r.token["seq"] == 1)
    assert (
        back["lbl"] == "Dog" and back["mid"] == "/m/0bt9lr" and back["m"] == MODEL_ID and back["t1"] == token(1)["t1"]
    )
    assert seqs(s.feed(tk, encode_packed(token(2, "Bark")), 3.0)) == [2]
    # JSON events are not read by a packed stream, and vice versa
    assert s.feed(TOPICS["events"], js(3), 3.0) == []
    assert TokenStream().feed(tk, encode_packed(token(3)), 0.0) == []


def test_packed_tokens_without_birth_are_reported_after_the_hold() -> None:
    s = TokenStream(packed=True, hold_s=5.0)
    other = topics(SITE, "garage-pi")["tokens"]
    assert s.feed(other, encode_packed(token(0, dev="garage-pi")), 0.0) == []
    assert s.expire(4.0) == []
    out = s.expire(5.5)
    assert (
        len(out) == 1 and isinstance(out[0], Problem) and "no birth message from device 'garage-pi'" in out[0].message
    )


def test_packed_token_of_another_model_is_a_problem() -> None:
    s = TokenStream(packed=True)
    s.feed(TOPICS["birth"], json.dumps(birth()).encode(), 0.0)
    out = s.feed(TOPICS["tokens"], encode_packed(token(0) | {"m": "tympan-sed-s2"}), 0.0)
    assert isinstance(out[0], Problem) and "another device or model" in out[0].message


def test_a_new_birth_restarts_the_seq_count() -> None:
    s = TokenStream()
    ev = TOPICS["events"]
    s.feed(TOPICS["birth"], json.dumps(birth()).encode(), 0.0)
    assert seqs(s.feed(ev, js(0), 0) + s.feed(ev, js(1), 0)) == [0, 1]
    assert seqs(s.feed(TOPICS["birth"], json.dumps(birth()).encode(), 1.0) + s.feed(ev, js(0), 1)) == []  # same
    assert seqs(s.feed(TOPICS["birth"], json.dumps(birth(T0)).encode(), 2.0) + s.feed(ev, js(0), 2)) == [0]


def test_status_and_readable_line() -> None:
    assert TokenStream().feed(TOPICS["status"], b"offline", 0.0) == [Status(SITE, DEV, "offline")]
    line = format_token(token(41) | {"el": 10.2, "amb": True})
    assert "kitchen-pi" in line and "#41 off" in line and "Dog (ev 20)" in line and "p=0.87" in line
    assert "az 61°? el 10° ±38°" in line and "-19.7 dBFS" in line and "0.32 s" in line
    assert line[2] == ":" and line[8] == "." and line[9:12] == "953"  # HH:MM:SS.mmm of t1


# --- against mosquitto ------------------------------------------------------------------------------------


def publisher(url_port: int, user: str | None = None, password: str | None = None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-device")
    if user:
        c.username_pw_set(user, password)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    return c


def publish(c: mqtt.Client, topic: str, payload: bytes | str, retain: bool = False) -> None:
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)


class Cli:
    """`tympan subscribe ...` as a subprocess, with its stdout and stderr lines collected."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge", "subscribe", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._read, args=(s, dst), daemon=True)
                         for s, dst in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]  # fmt: skip
        for t in self._threads:
            t.start()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for t in self._threads:
            t.join(5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()

    @staticmethod
    def _read(stream: Any, dst: list[str]) -> None:
        for line in stream:
            dst.append(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(x.startswith(prefix) for x in self.err):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                raise AssertionError(f"no {prefix!r} line; stderr: {self.err}")
            time.sleep(0.02)

    def finish(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()


def test_json_tokens_through_mosquitto(broker: Mosquitto) -> None:
    dev = publisher(broker.port)
    try:
        publish(dev, TOPICS["birth"], json.dumps(birth()), retain=True)
        publish(dev, TOPICS["status"], "online", retain=True)
        cli = Cli("--mqtt", broker.url, "--site", SITE, "--count", "5", "--timeout", "30")
        cli.wait_for("birth: device home/kitchen-pi")  # the retained birth: subscribed
        for payload in (js(0, ph="on"), js(1), js(1), b'{"v":1,"dev":"kitchen-pi"', js(2, label="Bark"), js(5), js(6)):
            publish(dev, TOPICS["events"], payload)
        rc = cli.finish()
    finally:
        dev.loop_stop()
        dev.disconnect()
    assert rc == 0, cli.err
    assert len(cli.out) == 5
    assert [line.split()[2] for line in cli.out] == ["#0", "#1", "#2", "#5", "#6"]  # the duplicate of #1 dropped
    assert "Dog (ev 0)" in cli.out[0] and "Bark (ev 1)" in cli.out[2] and "az 61°" in cli.out[1]
    assert "gap: device home/kitchen-pi seq 2 -> 5 (2 missing)" in cli.err
    assert "status: device home/kitchen-pi online" in cli.err
    warn = [x for x in cli.err if "WARNING" in x]
    assert len(warn) == 1 and TOPICS["events"] in warn[0] and "not a JSON token" in warn[0], cli.err


def test_packed_tokens_through_mosquitto_as_json_lines(broker: Mosquitto) -> None:
    dev = publisher(broker.port)
    try:
        publish(dev, TOPICS["status"], "online", retain=True)
        cli = Cli("--mqtt", broker.url, "--device", DEV, "--packed", "--json", "--count", "3", "--timeout", "30")
        cli.wait_for("status: device home/kitchen-pi online")
        for q in (0, 1):  # before the birth: held
            publish(dev, TOPICS["tokens"], encode_packed(token(q)))
        publish(dev, TOPICS["tokens"], b"\xa1\x02")  # truncated
        publish(dev, TOPICS["birth"], json.dumps(birth()), retain=True)
        publish(dev, TOPICS["tokens"], encode_packed(token(2, "Bark")))
        rc = cli.finish()
    finally:
        dev.loop_stop()
        dev.disconnect()
    assert rc == 0, cli.err
    toks = [json.loads(x) for x in cli.out]
    assert [t["seq"] for t in toks] == [0, 1, 2]
    assert [t["lbl"] for t in toks] == ["Dog", "Dog", "Bark"]
    assert toks[1]["t1"] == token(1)["t1"] and toks[1]["dev"] == DEV and toks[1]["m"] == MODEL_ID
    warn = [x for x in cli.err if "WARNING" in x]
    assert len(warn) == 1 and TOPICS["tokens"] in warn[0], cli.err


def run_cli(*argv: str) -> int:
    args = build_parser("subscribe").parse_args(["subscribe", *argv])
    return int(args.func(args))


def test_wrong_password_is_a_clear_error(tmp_path: Path) -> None:
    with Mosquitto(tmp_path, users={"u": "p"}) as b:
        with pytest.raises(MqttError, match=r"mqtt://u@127\.0\.0\.1:\d+: the broker refused the connection: .*"
                                            r"\(check the user name and password\)"):  # fmt: skip
            run_cli("--mqtt", f"mqtt://u:wrong@127.0.0.1:{b.port}", "--timeout", "5")
        # the right password connects (and times out quietly with nothing published)
        assert run_cli("--mqtt", f"mqtt://u:p@127.0.0.1:{b.port}", "--timeout", "0.3") == 0


def test_connection_refused_and_bad_flags() -> None:
    with pytest.raises(MqttError, match="connection refused"):
        run_cli("--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--timeout", "1")
    with pytest.raises(MqttError, match="scheme must be"):
        run_cli("--mqtt", "http://127.0.0.1", "--timeout", "1")
    with pytest.raises(MqttError, match="--cafile needs an mqtts:// URL"):
        run_cli("--mqtt", f"mqtt://127.0.0.1:{free_port()}", "--cafile", "ca.pem")
    with pytest.raises(ConfigError, match="--device"):
        run_cli("--mqtt", "mqtt://127.0.0.1", "--device", "a/b")
    with pytest.raises(ConfigError, match="--count"):
        run_cli("--mqtt", "mqtt://127.0.0.1", "--count", "0")


def test_unknown_host_is_a_clear_error() -> None:
    with pytest.raises(MqttError, match=r"unknown host 'no-such-host\.invalid'|cannot connect"):
        run_cli("--mqtt", "mqtt://no-such-host.invalid:1883", "--timeout", "1")


def test_errors_print_one_line_through_the_entry_point(tmp_path: Path) -> None:
    with Mosquitto(tmp_path, users={"u": "p"}) as b:
        r = subprocess.run([sys.executable, "-m", "edge", "subscribe", "--mqtt", f"mqtt://u:bad@127.0.0.1:{b.port}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tympan: error: mqtt://u@127.0.0.1:") and "bad" not in lines[0]


def test_broker_restart_mid_stream_loses_and_duplicates_nothing(broker: Mosquitto) -> None:
    dev = publisher(broker.port)
    cli = None
    try:
        publish(dev, TOPICS["birth"], json.dumps(birth()), retain=True)
        cli = Cli("--mqtt", broker.url, "--client-id", "test-sub", "--count", "6", "--timeout", "60")
        cli.wait_for("birth: device home/kitchen-pi")
        for q in range(3):
            publish(dev, TOPICS["events"], js(q))
        deadline = time.monotonic() + 20
        while len(cli.out) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        broker.stop()
        broker.start()
        deadline = time.monotonic() + 20
        while not dev.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        for q in range(3, 6):  # queued by the broker for the subscriber's persistent session
            publish(dev, TOPICS["events"], js(q))
        rc = cli.finish(60)
    finally:
        if cli is not None:
            cli.kill()
        dev.loop_stop()
        dev.disconnect()
    assert rc == 0, cli.err
    assert [line.split()[2] for line in cli.out] == [f"#{q}" for q in range(6)]
    assert not any(x.startswith("gap:") for x in cli.err), cli.err
