"""`tympan caption` against a real mosquitto: captions per device, malformed payloads, shared workers."""

from __future__ import annotations

import argparse
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.backends import TemplateBackend
from cloud.cli_caption import CaptionWorker, WorkerConfig, add_caption
from edge.errors import ConfigError, MqttError
from tests.broker import Mosquitto, free_port
from tests.test_caption_scene import Tokens

WAIT_S = 10.0


class Raw:
    """A plain paho client (MQTT v5): publishes tokens, collects what arrives on its subscriptions."""

    def __init__(self, broker: Mosquitto, subscribe: str | None = None) -> None:
        self.got: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        subscribed = threading.Event()
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect("127.0.0.1", broker.port)
        self.c.loop_start()
        if subscribe:
            self.c.subscribe(subscribe, qos=1)
            assert subscribed.wait(WAIT_S)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.topic, json.loads(msg.payload)))

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(WAIT_S)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Running:
    """A caption worker serving in a thread until the test ends."""

    def __init__(self, worker: CaptionWorker) -> None:
        self.worker, self.stop = worker, threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert worker.ready.wait(WAIT_S), "the worker did not subscribe"

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except Exception as e:  # reported by the test, not lost in the thread
            self.error = e

    def close(self) -> None:
        self.stop.set()
        self.thread.join(WAIT_S)
        assert self.error is None, self.error


def _tok(g: Tokens, id: int, ph: str, lbl: str, t0: float | None = None, dur: float = 0.5, **kw: Any) -> bytes:
    t0 = time.time() - 1.0 if t0 is None else t0
    tok = g.token(id, ph, lbl, t0, t0 + dur if ph == "off" else None, **kw)
    return json.dumps(tok).encode()


def test_captions_per_device_and_a_malformed_payload_skipped(broker: Mosquitto, caplog: Any) -> None:
    out = io.StringIO()
    worker = CaptionWorker(WorkerConfig(broker.url, site="home", every_s=0.3), TemplateBackend(), out=out)
    listener = Raw(broker, subscribe="tympan/v1/home/+/caption")
    pub = Raw(broker)
    running = Running(worker)
    try:
        with caplog.at_level(logging.WARNING, logger="cloud.cli_caption"):
            a, b = Tokens(dev="pi-a"), Tokens(dev="pi-b")
            t = time.time() - 3.0
            pub.publish("tympan/v1/home/pi-a/events", b"{not json")
            pub.publish("tympan/v1/home/pi-a/events", _tok(a, 1, "on", "Dog", t, az=90.0))
            pub.publish("tympan/v1/home/pi-b/events", _tok(b, 1, "on", "Speech", t, az=0.0))
            pub.publish("tympan/v1/home/pi-a/events", _tok(a, 1, "off", "Dog", t, az=90.0))
            pub.publish("tympan/v1/home/pi-a/events", _tok(a, 2, "on", "Dog", t + 1.0, az=-90.0))
            pub.publish("tympan/v1/home/pi-a/events", _tok(a, 2, "on", "Dog", t + 1.0, az=-90.0) + b"\xff")
            pub.publish("tympan/v1/home/pi-a/events", _tok(a, 2, "off", "Dog", t + 1.0, az=-90.0))
            final = "A dog barked twice over 1.5 seconds to the left, then to the right."

            def last(dev: str) -> dict[str, Any] | None:
                with listener.lock:
                    mine = [p for t, p in listener.got if t == f"tympan/v1/home/{dev}/caption"]
                return mine[-1] if mine else None

            _wait(lambda: (last("pi-b") or {}).get("events") == 1, "pi-b's caption")
            _wait(lambda: (last("pi-a") or {}).get("text") == final, "pi-a's caption of both dogs")
        a_cap, b_cap = last("pi-a"), last("pi-b")
        assert a_cap is not None and b_cap is not None
        assert a_cap["events"] == 2
        assert b_cap["text"].startswith("Speech could be heard in front")
        assert set(a_cap) == {"v", "dev", "t", "text", "backend", "model", "events", "window_s", "template"}
        assert (a_cap["v"], a_cap["dev"], a_cap["backend"], a_cap["window_s"]) == (1, "pi-a", "template", 30.0)
        assert abs(a_cap["t"] - time.time()) < 5
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2 and all("malformed payload on tympan/v1/home/pi-a/events" in r.getMessage()
                                          for r in warnings)  # fmt: skip
        assert all("\n" not in r.getMessage() for r in warnings)
        lines = out.getvalue().splitlines()
        assert "caption pi-b: " + b_cap["text"] in lines and "caption pi-a: " + a_cap["text"] in lines
        assert worker.handled.count(("pi-a", 0)) == 1 and len(worker.handled) == 5
    finally:
        running.close()
        listener.close()
        pub.close()


def test_two_shared_workers_split_the_messages(broker: Mosquitto) -> None:
    config = WorkerConfig(broker.url, site="s", share="capt", every_s=5.0)
    workers = [CaptionWorker(config, TemplateBackend(), out=io.StringIO()) for _ in range(2)]
    running = [Running(w) for w in workers]
    pub = Raw(broker)
    try:
        devs = [Tokens(dev=f"dev-{i}") for i in range(4)]
        sent = []
        for k in range(10):
            for g in devs:
                pub.publish(f"tympan/v1/s/{g.dev}/events", _tok(g, k, "on", "Knock"))
                sent.append((g.dev, k))
        _wait(lambda: len(workers[0].handled) + len(workers[1].handled) >= len(sent), "every token handled")
        time.sleep(0.3)  # a duplicate would arrive by now
        h0, h1 = workers[0].handled, workers[1].handled
        assert sorted(h0 + h1) == sorted(sent)  # each message handled exactly once, by one worker
        assert h0 and h1 and not set(h0) & set(h1)
    finally:
        for r in running:
            r.close()
        pub.close()


def test_cli_flags_and_count(broker: Mosquitto, capsys: Any) -> None:
    sub = argparse.ArgumentParser(prog="tympan").add_subparsers()
    add_caption(sub)
    parser = sub.choices["caption"]
    args = parser.parse_args(["--mqtt", broker.url, "--site", "lab", "--count", "1", "--every", "0.5"])
    assert (args.backend, args.window, args.share, args.few_shot, args.openai_retries) == (
        "template", 30.0, None, False, 3
    )  # fmt: skip
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(args.func(args)), daemon=True)
    thread.start()
    pub = Raw(broker)
    try:
        deadline = time.monotonic() + WAIT_S
        g = Tokens(dev="pi-1")
        while thread.is_alive() and time.monotonic() < deadline:  # until the worker has subscribed
            pub.publish("tympan/v1/lab/pi-1/events", _tok(g, 1, "on", "Cat"))
            thread.join(0.2)
        assert result == [0]
        assert "caption pi-1: A cat meowed" in capsys.readouterr().out
    finally:
        pub.close()


@pytest.mark.parametrize(
    ("argv", "error", "match"),
    [
        (["--mqtt", "http://h"], MqttError, "mqtt://"),
        (["--mqtt", "mqtt://h", "--every", "0"], ConfigError, "--every"),
        (["--mqtt", "mqtt://h", "--window", "-5"], ConfigError, "--window"),
        (["--mqtt", "mqtt://h", "--site", "a/b"], ConfigError, "--site"),
        (["--mqtt", "mqtt://h", "--share", "g+"], ConfigError, "--share"),
        (["--mqtt", "mqtt://h", "--count", "0"], ConfigError, "--count"),
        (["--mqtt", "mqtt://h", "--cafile", "ca.pem"], ConfigError, "mqtts://"),
        (["--mqtt", "mqtt://h", "--backend", "openai"], ConfigError, "--openai-url"),
    ],
)
def test_bad_flags_are_clear_errors(argv: list[str], error: type[Exception], match: str) -> None:
    sub = argparse.ArgumentParser(prog="tympan").add_subparsers()
    add_caption(sub)
    args = sub.choices["caption"].parse_args(argv)
    with pytest.raises(error, match=match):
        args.func(args)


def test_no_broker_is_a_clear_error() -> None:
    worker = CaptionWorker(WorkerConfig(f"mqtt://127.0.0.1:{free_port()}"), TemplateBackend())
    with pytest.raises(MqttError, match=r"cannot connect to mqtt://127\.0\.0\.1"):
        worker.run()


def test_a_wrong_password_is_a_clear_error(tmp_path: Path) -> None:
    with Mosquitto(tmp_path, users={"cloud": "secret"}) as b:
        url = f"mqtt://cloud:wrong@127.0.0.1:{b.port}"
        worker = CaptionWorker(WorkerConfig(url), TemplateBackend())
        with pytest.raises(MqttError, match=r"refused the connection: (Bad user name or password|Not authorized)") as e:
            worker.run()
        assert "wrong" not in str(e.value)
