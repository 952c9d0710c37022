"""`tympan flash`: a bundle plus first-boot provisioning onto a boot partition, and MCU firmware over serial."""

from __future__ import annotations

import importlib.util
import json
import shutil
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.bundle import pack_tar, verify_bundle
from edge.keys import load_private_key, load_public_key, new_keypair
from edge.main import main
from edge.mqtt_url import PASSWORD_ENV
from edge.provision import CMDLINE_HOOK, split_password
from tests.bundles import CREATED, build, members_of, resign

CMDLINE = "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 fsck.repair=yes rootwait"
FIRMWARE = b"\x7fMCU" + bytes(range(256)) * 16


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return new_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def bundle(keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("b")
    (d / "mcu.bin").write_bytes(FIRMWARE)
    (d / "cfg.json").write_text('{"site": "farm"}')
    p = d / "b.tar.gz"
    p.write_bytes(build(load_private_key(keys[0]), firmware=str(d / "mcu.bin"), firmware_version="1.4.2",
                        config=str(d / "cfg.json"), version="r12"))  # fmt: skip
    return p


@pytest.fixture
def boot(tmp_path: Path) -> Path:
    """A Raspberry Pi OS boot partition as mounted on the workstation."""
    b = tmp_path / "bootfs"
    (b / "overlays").mkdir(parents=True)
    (b / "config.txt").write_text("dtparam=audio=on\n")
    (b / "cmdline.txt").write_text(CMDLINE + "\n")
    return b


def flash(boot: Path, bundle: Path, pub: Path, *extra: str) -> int:
    return main(["flash", "--sdcard", str(boot), str(bundle), "--pubkey", str(pub), *extra])


def test_sdcard_layout(boot: Path, bundle: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc = flash(boot, bundle, keys[1], "--mqtt", "mqtt://ops:s3cr%40t@broker.lan:1883", "--device-id", "barn-1")
    assert rc == 0
    out = capsys.readouterr().out
    assert "provisioned device barn-1 (site farm, broker mqtt://ops@broker.lan:1883)" in out
    t = boot / "tympan"
    # the bundle, byte for byte, verifiable with the key put beside it
    assert (t / "bundle.tar.gz").read_bytes() == bundle.read_bytes()
    assert (t / "bundle.pub").read_bytes() == keys[1].read_bytes()
    verify_bundle((t / "bundle.tar.gz").read_bytes(), load_public_key(t / "bundle.pub"))
    dev = json.loads((t / "device.json").read_text())
    assert dev["device_id"] == "barn-1" and dev["site"] == "farm" and dev["board"] == "raspberry-pi-4"
    assert dev["mqtt_url"] == "mqtt://ops@broker.lan:1883" and dev["bundle_version"] == "r12"
    # credentials: 0600, and only there
    env = t / "mqtt.env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert env.read_text() == f"{PASSWORD_ENV}=s3cr@t\n"
    for f in t.iterdir():
        if f.name not in ("mqtt.env", "bundle.tar.gz"):
            assert b"s3cr" not in f.read_bytes(), f.name
    # the unit runs `tympan listen` on the installed bundle, password from the env file
    unit = (t / "tympan.service").read_text()
    assert "EnvironmentFile=-/etc/tympan/mqtt.env" in unit
    exec_line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_line.removeprefix("ExecStart=").split()
    assert argv[:3] == ["/usr/local/bin/tympan", "listen", "--device"]
    opts = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert opts["--ota-dir"] == "/var/lib/tympan/ota" and opts["--ota-pubkey"] == "/etc/tympan/bundle.pub"
    assert opts["--mqtt"] == "mqtt://ops@broker.lan:1883" and opts["--device-id"] == "barn-1"
    assert opts["--site"] == "farm"
    assert "WantedBy=multi-user.target" in unit and "Restart=always" in unit
    assert "board raspberry-pi-4, array respeaker-4mic-hat" in unit.lower()
    # first boot: an executable shell script that parses, hooked into cmdline.txt once
    fb = t / "firstboot.sh"
    assert fb.stat().st_mode & stat.S_IXUSR
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", str(fb)], check=True)
    script = fb.read_text()
    assert "bundle install --pubkey /etc/tympan/bundle.pub --ota-dir /var/lib/tympan/ota" in script
    assert "systemctl enable tympan.service" in script and "install -m 0600" in script
    hook = CMDLINE_HOOK.format(script="/boot/firmware/tympan/firstboot.sh")
    cmdline = (boot / "cmdline.txt").read_text()
    assert cmdline == CMDLINE + " " + hook + "\n" and cmdline.count("\n") == 1
    # the script takes its own hook out again, leaving the original command line
    sed = next(line for line in script.splitlines() if line.strip().startswith("sed -i"))
    pattern = sed.split("'")[1]  # s| HOOK||
    assert pattern == f"s| {hook}||" and cmdline.replace(" " + hook, "").strip() == CMDLINE


def test_a_second_flash_needs_force_and_does_not_hook_twice(boot: Path, bundle: Path, keys: tuple[Path, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert flash(boot, bundle, keys[1], "--mqtt", "mqtt://broker.lan", "--device-id", "a") == 0
    assert flash(boot, bundle, keys[1], "--mqtt", "mqtt://broker.lan", "--device-id", "b") == 1
    assert "already provisioned" in capsys.readouterr().err
    assert json.loads((boot / "tympan/device.json").read_text())["device_id"] == "a"
    assert flash(boot, bundle, keys[1], "--mqtt", "mqtt://broker.lan", "--device-id", "b", "--force") == 0
    assert json.loads((boot / "tympan/device.json").read_text())["device_id"] == "b"
    assert (boot / "cmdline.txt").read_text().count("systemd.run=") == 1
    assert not (boot / "tympan/mqtt.env").exists()  # no password: no credentials file


def test_password_from_the_environment_and_generated_device_id(
    boot: Path, bundle: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert flash(boot, bundle, keys[1], "--mqtt", "mqtt://dev@broker.lan", "--site", "north") == 0
    dev = json.loads((boot / "tympan/device.json").read_text())
    assert dev["device_id"].startswith("tympan-") and len(dev["device_id"]) == 13 and dev["site"] == "north"
    assert (boot / "tympan/mqtt.env").read_text() == f"{PASSWORD_ENV}=from-env\n"


def test_a_directory_that_is_not_a_boot_partition_is_refused_unless_forced(
    tmp_path: Path, bundle: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("x")
    assert flash(home, bundle, keys[1], "--mqtt", "mqtt://b") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not look like a boot partition" in err and "--force" in err
    assert not (home / "tympan").exists()
    assert flash(home, bundle, keys[1], "--mqtt", "mqtt://b", "--force") == 0
    assert (home / "tympan/firstboot.sh").exists()
    assert "no cmdline.txt" in capsys.readouterr().err  # the operator is told how first boot runs it
    assert flash(tmp_path / "nope", bundle, keys[1], "--mqtt", "mqtt://b") == 1
    assert "no such directory" in capsys.readouterr().err


def test_cmdline_with_another_first_boot_script_is_left_alone(
    boot: Path, bundle: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    imager = CMDLINE + " systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot"
    (boot / "cmdline.txt").write_text(imager + "\n")
    assert flash(boot, bundle, keys[1], "--mqtt", "mqtt://b") == 0
    assert (boot / "cmdline.txt").read_text() == imager + "\n"
    assert "already runs another first-boot script" in capsys.readouterr().err
    assert "sed -i" not in (boot / "tympan/firstboot.sh").read_text()


def test_tampered_or_foreign_bundles_are_not_written(
    boot: Path, bundle: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = members_of(bundle.read_bytes())
    m["config.json"] = m["config.json"].replace(b"farm", b"evil")
    bad = tmp_path / "bad.tgz"
    bad.write_bytes(pack_tar(m, CREATED))
    assert flash(boot, bad, keys[1], "--mqtt", "mqtt://b") == 1
    assert "'config.json' does not match its manifest hash" in capsys.readouterr().err
    foreign = tmp_path / "foreign.tgz"
    foreign.write_bytes(resign(members_of(bundle.read_bytes()), Ed25519PrivateKey.generate()))
    assert flash(boot, foreign, keys[1], "--mqtt", "mqtt://b") == 1
    assert "not by the trusted key" in capsys.readouterr().err
    assert not (boot / "tympan").exists()
    assert (boot / "cmdline.txt").read_text() == CMDLINE + "\n"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--mqtt", "http://b"], "scheme must be mqtt"),
        (["--mqtt", "mqtt://b", "--device-id", "a/b"], "topic-safe"),
        (["--mqtt", "mqtt://b", "--mqtt-ca", "ca.pem"], "needs an mqtts:// URL"),
        ([], "needs --mqtt URL"),
    ],
)
def test_bad_flash_options_are_refused(boot: Path, bundle: Path, keys: tuple[Path, Path], args: list[str], why: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert flash(boot, bundle, keys[1], *args) == 1
    assert why in capsys.readouterr().err
    assert not (boot / "tympan").exists()


def test_split_password() -> None:
    assert split_password("mqtt://u:p%3Aw@h:1") == ("mqtt://u@h:1", "p:w")
    assert split_password("mqtts://u@h") == ("mqtts://u@h", None)
    assert split_password("mqtt://h") == ("mqtt://h", None)


# --- --serial ----------------------------------------------------------------------------------------
def test_serial_hands_the_bundles_firmware_to_the_flasher(
    bundle: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bundle's verified image and version reach `firmware_bridge.flasher.flash_serial` unchanged."""
    calls: list[tuple[str, bytes, str, str]] = []

    def fake_flash(port: str, image: bytes, *, version: str, progress: object = None, origin: str = "") -> object:
        calls.append((port, image, version, origin))
        if callable(progress):
            progress(len(image), len(image))
        return types.SimpleNamespace(unchanged=False, slot_name="B", previous_version="1.0.0")

    fake = types.ModuleType("firmware_bridge.flasher")
    fake.flash_serial = fake_flash  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "firmware_bridge.flasher", fake)
    assert main(["flash", "--serial", "/dev/ttyACM9", str(bundle), "--pubkey", str(keys[1])]) == 0
    assert calls == [("/dev/ttyACM9", FIRMWARE, "1.4.2", f"{bundle}: MCU firmware")]  # errors name the bundle
    out, err = capsys.readouterr()
    assert "1.4.2" in out and "slot B" in out and "100%" in err


def test_serial_refuses_a_bundle_without_firmware_or_sdcard_options(
    keys: tuple[Path, Path], tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.tgz"
    plain.write_bytes(build(load_private_key(keys[0])))
    assert main(["flash", "--serial", "/dev/ttyACM0", str(plain), "--pubkey", str(keys[1])]) == 1
    assert "carries no MCU firmware" in capsys.readouterr().err
    assert main(["flash", "--serial", "/dev/ttyACM0", str(bundle), "--pubkey", str(keys[1]), "--mqtt", "mqtt://b"]) == 1
    assert "--mqtt is for --sdcard" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("firmware_bridge.simulator") is None, reason="no MCU simulator")
def test_serial_flash_through_the_mcu_simulator(
    bundle: Path, keys: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware_bridge.image import parse_header
    from firmware_bridge.simulator import Simulator

    with Simulator(tmp_path / "mcu", realtime=False) as sim:
        assert main(["flash", "--serial", sim.port, str(bundle), "--pubkey", str(keys[1])]) == 0
        out = capsys.readouterr().out
        assert "1.4.2" in out and "verified and running" in out
        active = int(sim.state["active"])
        data = sim.slot_bytes(active)
        head = parse_header(data)
        assert head.version == "1.4.2"
        assert data[len(data) - head.body_length :] == FIRMWARE or FIRMWARE in data
