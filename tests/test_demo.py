"""`tympan demo` end to end: embedded broker (amqtt) or a real mosquitto, events, captions, clean exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.broker import Mosquitto


def tympan() -> str:
    exe = shutil.which("tympan", path=str(Path(sys.executable).parent))
    assert exe, "the tympan console script is not installed"
    return exe


def test_demo_with_its_embedded_broker_prints_events_and_captions() -> None:
    pytest.importorskip("amqtt")
    p = subprocess.run([tympan(), "demo", "--speed", "0", "--every", "0.5"], capture_output=True, text=True,
                       timeout=180)  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    captions = [line for line in lines if line.startswith("caption demo-0: ")]
    events = [line for line in lines if line.startswith("event ")]
    assert events and captions
    text = " ".join(captions).lower()
    assert "dog" in text and "bark" in text  # the scene's first source
    assert "Traceback" not in p.stderr


def test_demo_against_mosquitto_publishes_captions_and_says_offline(tmp_path: Path) -> None:
    got: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    with Mosquitto(tmp_path) as broker:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

        def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
            with lock:
                got.append((m.topic, bytes(m.payload)))

        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("tympan/v1/demo/demo-0/#", qos=1)
        sub.loop_start()
        try:
            p = subprocess.run([tympan(), "demo", "--mqtt", broker.url, "--speed", "0", "--every", "0.5"],
                               capture_output=True, text=True, timeout=180)  # fmt: skip
            assert p.returncode == 0, p.stderr
        finally:
            sub.loop_stop()
            sub.disconnect()
    topics = [t for t, _ in got]
    captions = [json.loads(b) for t, b in got if t.endswith("/caption")]
    assert captions and all(c["backend"] == "template" and c["dev"] == "demo-0" for c in captions)
    assert any(t.endswith("/events") for t in topics) and any(t.endswith("/tokens") for t in topics)
    status = [b for t, b in got if t.endswith("/status")]
    assert status[-1] == b"offline"  # a clean exit says so
