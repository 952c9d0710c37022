"""OTA: A/B install with self-test and rollback, and the device's listener taking bundles over MQTT.

The MQTT tests run a real mosquitto (tests/broker.py); a raw paho client plays the operator, sending
bundles on `tympan/v1/<site>/<device>/ota` and reading `.../ota/status`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from edge.bundle import MANIFEST, SIGNATURE, Limits, pack_tar
from edge.keys import PUBLIC_SUFFIX, new_keypair
from edge.main import main
from edge.mqtt_url import parse_mqtt_url
from edge.ota import OtaAgent, OtaStore
from edge.selftest import run_selftest
from tests.broker import Mosquitto
from tests.bundles import CREATED, build, copy_model, members_of, resign

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
SITE, DEV = "lab", "pi-7"
NEW_ID = "tympan-ota-test-2"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("models")
    renamed = copy_model(d / "renamed", model_id=NEW_ID)
    shuffled = copy_model(d / "shuffled", model_id="tympan-shuffled", edit_labels=lambda names: names[::-1])
    good = build(KEY)
    m = members_of(good)
    onnx = bytearray(m["model/model_int8.onnx"])
    onnx[len(onnx) // 2 :] = bytes(len(onnx) - len(onnx) // 2)
    m["model/model_int8.onnx"] = bytes(onnx)
    tfl = bytearray(m["model/model_int8.tflite"])
    tfl[len(tfl) // 2 :] = bytes(len(tfl) - len(tfl) // 2)
    m["model/model_int8.tflite"] = bytes(tfl)

    def later(man: dict) -> None:
        man["created"] = CREATED + 50
        man["version"] = "corrupt-model"

    return {
        "good": good,
        "new": build(KEY, model=renamed, created=CREATED + 100, version="v2"),
        "shuffled": build(KEY, model=shuffled, created=CREATED + 200, version="shuffled", check_selftest=False),
        "corrupt": resign(m, KEY, later),  # signed, but the model files are damaged
        "old": build(KEY, created=CREATED - 100, version="old"),
    }


def store(tmp_path: Path, **kw: Any) -> OtaStore:
    return OtaStore(tmp_path / "ota", PUB, **kw)


# --- the store -------------------------------------------------------------------------------------
def test_selftest_passes_on_the_shipped_model_and_fails_on_shuffled_labels(tmp_path: Path) -> None:
    from edge.inference import default_model_dir

    ok = run_selftest(default_model_dir())
    assert ok.passed, ok.detail
    assert "dog: Dog" in ok.detail or "dog: Bark" in ok.detail
    bad = copy_model(tmp_path / "m", edit_labels=lambda n: n[::-1])
    res = run_selftest(str(bad))
    assert not res.passed and "dog not detected" in res.detail


def test_install_good_bundle_then_update_switches_slots(tmp_path: Path, bundles: dict[str, bytes]) -> None:
    s = store(tmp_path)
    assert s.current() is None
    seen: list[str] = []
    r = s.install(bundles["good"], progress=lambda st, d, b: seen.append(st))
    assert r.state == "installed", r.detail
    assert seen == ["verifying", "selftest", "installing"]
    assert os.readlink(s.root / "current") == "slots/a"
    r2 = s.install(bundles["new"])
    assert r2.state == "installed", r2.detail
    cur = s.current()
    assert cur is not None and cur.slot == "b" and cur.bundle.model_id == NEW_ID
    assert s.install(bundles["new"]).state == "unchanged"
    back = s.rollback()
    assert back.slot == "a" and s.current_slot() == "a"
    assert not list((s.root / "slots").glob(".*staging"))


@pytest.mark.parametrize("which", ["shuffled", "corrupt"])
def test_bundle_failing_its_selftest_is_rolled_back(tmp_path: Path, bundles: dict[str, bytes], which: str) -> None:
    s = store(tmp_path)
    assert s.install(bundles["good"]).state == "installed"
    before = {p: p.read_bytes() for p in (s.root / "slots" / "a").rglob("*") if p.is_file()}
    r = s.install(bundles[which])
    assert r.state == "rolled_back" and "self-test failed" in r.detail
    assert ("dog not detected" if which == "shuffled" else "model does not load") in r.detail
    assert s.current_slot() == "a"
    cur = s.current()
    assert cur is not None and cur.bundle.version == verify_version(bundles["good"])
    assert {p: p.read_bytes() for p in (s.root / "slots" / "a").rglob("*") if p.is_file()} == before
    assert not (s.root / "slots" / "b").exists()
    assert not list((s.root / "slots").glob(".*staging"))


def verify_version(data: bytes) -> str:
    return str(json.loads(members_of(data)[MANIFEST])["version"])


def test_tampered_unsigned_and_foreign_bundles_are_rejected(tmp_path: Path, bundles: dict[str, bytes]) -> None:
    s = store(tmp_path)
    m = members_of(bundles["good"])
    unsigned = pack_tar({k: v for k, v in m.items() if k != SIGNATURE}, CREATED)
    m2 = dict(m)
    m2["config.json"] = m2["config.json"].replace(b"1.0", b"2.0")
    foreign = resign(m, Ed25519PrivateKey.generate())
    for data, why in ((unsigned, "unsigned"), (pack_tar(m2, CREATED), "does not match"), (foreign, "signed by key"),
                      (b"\x1f\x8b garbage", "gzip")):  # fmt: skip
        r = s.install(data)
        assert r.state == "rejected" and why in r.detail, r.detail
    assert s.current_slot() is None and not (s.root / "slots" / "a").exists()


def test_downgrade_is_refused_unless_allowed(tmp_path: Path, bundles: dict[str, bytes]) -> None:
    s = store(tmp_path)
    assert s.install(bundles["good"]).state == "installed"
    r = s.install(bundles["old"])
    assert r.state == "rejected" and "downgrade refused" in r.detail
    assert store(tmp_path, allow_downgrade=True).install(bundles["old"]).state == "installed"


def test_a_slot_corrupted_on_disk_falls_back_to_the_other(tmp_path: Path, bundles: dict[str, bytes]) -> None:
    s = store(tmp_path)
    s.install(bundles["good"])
    s.install(bundles["new"])
    onnx = s.root / "slots" / "b" / "model" / "model_int8.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\0")
    cur = s.current()
    assert cur is not None and cur.slot == "a" and s.current_slot() == "a"
    # an update while the slot in use is damaged replaces that slot and keeps the other as the fallback
    labels = s.root / "slots" / "a" / "model" / "labels.csv"
    labels.write_text(labels.read_text() + "\n")
    r = s.install(bundles["new"])
    assert r.state == "installed" and s.current_slot() == "a"
    assert s.load_slot("a").bundle.model_id == NEW_ID


def test_power_loss_before_the_switch_leaves_the_old_bundle_running(
    tmp_path: Path, bundles: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new slot is written but `current` not yet switched when the power goes: the device comes back
    on the old bundle, and the same update installs cleanly afterwards."""
    s = store(tmp_path)
    assert s.install(bundles["good"]).state == "installed"

    def power_loss(self: OtaStore, slot: str) -> None:
        raise KeyboardInterrupt("power lost")

    monkeypatch.setattr(OtaStore, "_switch", power_loss)
    with pytest.raises(KeyboardInterrupt):
        s.install(bundles["new"])
    monkeypatch.undo()
    after = store(tmp_path)  # the next boot
    cur = after.current()
    assert cur is not None and cur.slot == "a" and cur.bundle.model_id != NEW_ID
    r = after.install(bundles["new"])
    assert r.state == "installed" and after.current_slot() == "b"


# --- the listener uses the installed bundle ---------------------------------------------------------
def test_listen_runs_the_installed_bundles_model_and_config(
    tmp_path: Path, bundles: dict[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.inference import default_model_dir

    priv, pub = new_keypair(tmp_path / "k")
    from edge.keys import load_private_key

    key = load_private_key(priv)
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"threshold_scale": 1.0}')
    renamed = copy_model(tmp_path / "renamed", model_id=NEW_ID)
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(build(key, model=renamed, config=str(cfg)))
    ota = tmp_path / "ota"
    assert main(["bundle", "install", "--pubkey", str(pub), "--ota-dir", str(ota), str(bundle)]) == 0
    assert "installed: slot a" in capsys.readouterr().out
    scene = str(Path(default_model_dir()).parent.parent / "data" / "sample_scene.flac")
    assert main(["listen", "--input", scene, "--ota-dir", str(ota), "--ota-pubkey", str(pub), "--json"]) == 0
    toks = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert toks and {t["m"] for t in toks} == {NEW_ID}
    assert any(t["az"] is not None for t in toks)  # the bundle's array gave directions
    assert main(["listen", "--input", scene, "--ota-dir", str(ota)]) == 1
    assert "--ota-dir needs --ota-pubkey" in capsys.readouterr().err


def test_cli_bundle_install_reports_a_rollback(tmp_path: Path, bundles: dict[str, bytes],
                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    pub = tmp_path / ("k" + PUBLIC_SUFFIX)
    from cryptography.hazmat.primitives import serialization

    pub.write_bytes(PUB.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "s.tgz").write_bytes(bundles["shuffled"])
    assert main(["bundle", "install", "--pubkey", str(pub), "--ota-dir", str(tmp_path / "o"),
                 str(tmp_path / "s.tgz")]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert "tympan: error: rolled_back: self-test failed" in err


# --- over MQTT --------------------------------------------------------------------------------------
class Operator:
    """A paho client that sends bundles and collects the device's OTA status messages."""

    def __init__(self, url: str) -> None:
        t = parse_mqtt_url(url)
        self.status: list[dict[str, Any]] = []
        self.retained: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator")
        self.c.on_message = self._on_message
        self.c.connect(t.host, t.port)
        self.c.subscribe(f"tympan/v1/{SITE}/{DEV}/ota/status", qos=1)
        self.c.loop_start()

    def _on_message(self, c: Any, u: Any, msg: Any) -> None:
        with self.cond:
            d = json.loads(msg.payload)
            (self.retained if msg.retain else self.status).append(d)
            self.cond.notify_all()

    def send(self, data: bytes) -> None:
        self.c.publish(f"tympan/v1/{SITE}/{DEV}/ota", data, qos=1).wait_for_publish(5)

    def wait_result(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The states seen until the n-th result (a final state)."""
        finals = ("installed", "unchanged", "rejected", "rolled_back", "failed")
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(s["state"] in finals for s in self.status) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"no result {n} in time; saw {[s['state'] for s in self.status]}"
                self.cond.wait(left)
            return list(self.status)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_ota_over_mqtt_installs_rolls_back_and_rejects(
    tmp_path: Path, broker: Mosquitto, bundles: dict[str, bytes]
) -> None:
    s = store(tmp_path, limits=Limits(max_archive_bytes=2 << 20))
    op = Operator(broker.url)
    agent = OtaAgent(s, parse_mqtt_url(broker.url), DEV, SITE).start()
    try:
        assert agent.subscribed
        op.send(bundles["good"])
        states = [m["state"] for m in op.wait_result(1)]
        assert states == ["received", "verifying", "selftest", "installing", "installed"]
        assert agent.restart_requested.is_set()
        last = op.status[-1]
        assert last["dev"] == DEV and last["bundle"]["version"] == verify_version(bundles["good"])

        op.send(bundles["shuffled"])
        res = op.wait_result(2)[-1]
        assert res["state"] == "rolled_back" and "self-test failed" in res["detail"]
        assert res["bundle"]["model_id"] == "tympan-shuffled"

        m = members_of(bundles["new"])
        m["model/labels.csv"] = m["model/labels.csv"].replace(b"Dog", b"Cat")
        op.send(pack_tar(m, CREATED))
        res = op.wait_result(3)[-1]
        assert res["state"] == "rejected" and "'model/labels.csv' does not match" in res["detail"]

        op.send(bytes(3 << 20))
        res = op.wait_result(4)[-1]
        assert res["state"] == "rejected" and "over the limit" in res["detail"]

        op.send(bundles["new"])
        assert op.wait_result(5)[-1]["state"] == "installed"
        cur = s.current()
        assert cur is not None and cur.bundle.model_id == NEW_ID and cur.slot == "b"
    finally:
        agent.close()
        op.close()
    # the last result is retained for whoever subscribes later
    late = Operator(broker.url)
    try:
        deadline = time.monotonic() + 5
        while not late.retained and time.monotonic() < deadline:
            time.sleep(0.05)
        assert late.retained and late.retained[-1]["state"] == "installed"
    finally:
        late.close()


def test_until_restart_stops_the_source_after_an_install(tmp_path: Path) -> None:
    agent = OtaAgent(store(tmp_path), parse_mqtt_url("mqtt://127.0.0.1:1"), DEV, SITE)
    closed: list[bool] = []

    def source() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.append(True)

    got = []
    for b in agent.until_restart(source()):
        got.append(b)
        if b == 4:
            agent.restart_requested.set()
    assert got == [0, 1, 2, 3, 4] and closed == [True]


def test_listen_with_mqtt_takes_a_retained_bundle_and_stops_for_the_restart(
    tmp_path: Path, broker: Mosquitto, bundles: dict[str, bytes], capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """End to end through `tympan listen`: the bundle waiting (retained) on the OTA topic is installed
    while the listener runs, reported on the status topic, and the listener stops early for its restart."""
    from cryptography.hazmat.primitives import serialization

    from edge.inference import default_model_dir

    pub = tmp_path / "trusted.pub"
    pub.write_bytes(PUB.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    op = Operator(broker.url)
    op.c.publish(f"tympan/v1/{SITE}/{DEV}/ota", bundles["new"], qos=1, retain=True).wait_for_publish(5)
    # the sample scene, then 10 minutes of silence (a few kB of FLAC): the listener must still be running
    # when the install ends (the bare 10 s scene took about as long as the install on a slow host)
    import soundfile as sf

    x, rate = sf.read(str(Path(default_model_dir()).parent.parent / "data" / "sample_scene.flac"), dtype="int16")
    scene = str(tmp_path / "scene_then_silence.flac")
    sf.write(scene, np.concatenate([x, np.zeros((600 * rate, x.shape[1]), np.int16)]), rate, subtype="PCM_16")
    ota = tmp_path / "ota"
    try:
        rc = main(["listen", "--input", scene, "--board", "respeaker-4mic-hat", "--mqtt", broker.url,
                   "--device-id", DEV, "--site", SITE, "--spool", str(tmp_path / "spool"), "--json",
                   "--ota-dir", str(ota), "--ota-pubkey", str(pub)])  # fmt: skip
        assert rc == 0
        states = [m["state"] for m in op.wait_result(1)]
        assert states[-1] == "installed", op.status[-1]
    finally:
        op.close()
    cur = OtaStore(ota, PUB).current()
    assert cur is not None and cur.bundle.model_id == NEW_ID
    assert any("stopping so the service restarts" in r.getMessage() for r in caplog.records)
    toks = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert all(t["m"] != NEW_ID for t in toks)  # this run used the model it started with


def test_an_installed_bundles_latency_mode_fills_listen_unless_given() -> None:
    """The bundle's device config sets `listen --latency` (and the rest) where the command line left the
    default; a flag given on the command line wins."""
    import argparse
    from types import SimpleNamespace

    from edge.device_config import DeviceConfig
    from edge.main import build_parser
    from edge.ota import apply_installed

    inst = SimpleNamespace(model_dir="m", array_path="a.json", config=DeviceConfig(latency="low", threshold_scale=1.5))
    args = build_parser().parse_args(["listen", "--input", "x.wav"])
    assert isinstance(args, argparse.Namespace) and args.latency == "balanced"
    apply_installed(args, inst)  # type: ignore[arg-type]
    assert (args.latency, args.threshold_scale, args.model) == ("low", 1.5, "m")
    args = build_parser().parse_args(["listen", "--input", "x.wav", "--threshold-scale", "2"])
    apply_installed(args, inst)  # type: ignore[arg-type]
    assert (args.latency, args.threshold_scale) == ("low", 2.0)
