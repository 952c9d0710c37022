"""Verified bundle + device settings -> first-boot provisioning files on a mounted boot partition.

`tympan flash --sdcard DIR BUNDLE` writes, under `DIR/tympan/`:

    bundle.tar.gz    the bundle, byte for byte
    bundle.pub       the public key the device trusts (for this bundle and every OTA update)
    device.json      device id, site, broker URL (no password), board, array, bundle version and identity
    mqtt.env         `TYMPAN_MQTT_PASSWORD=...` (mode 0600; only when the broker takes a password)
    ca.crt           the broker's CA (only with --mqtt-ca)
    tympan.service   the systemd unit: `tympan listen --device --ota-dir ... --mqtt ...`
    firstboot.sh     run once as root on first boot: creates the `tympan` user, copies the files to
                     /etc/tympan (mqtt.env 0600 root), installs the bundle into /var/lib/tympan/ota with
                     `tympan bundle install` (signature and self-test), enables the unit, erases the boot
                     partition's copy of the password and removes its own boot hook

On Raspberry Pi OS (a `cmdline.txt` on the partition) the script is hooked into the first boot the way
Raspberry Pi Imager hooks its own (`systemd.run=... systemd.run_success_action=reboot
systemd.unit=kernel-command-line.target` on the kernel command line). Elsewhere (Jetson, or a
`cmdline.txt` that already runs another first-boot script) the caller is told to run it once by hand.
FAT boot partitions have no file modes: the 0600 of mqtt.env holds only once the script has moved it.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

import edge
from edge.bundle import Bundle, write_all, write_atomic
from edge.errors import InputError

PROVISION_DIR = "tympan"
BOOT_MARKERS = ("config.txt", "cmdline.txt", "bootcode.bin", "start.elf", "start4.elf", "overlays",
                "extlinux/extlinux.conf", "boot/extlinux/extlinux.conf", "EFI")  # fmt: skip
CMDLINE_HOOK = "systemd.run={script} systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
DEVICE_OTA_DIR = "/var/lib/tympan/ota"
DEVICE_ETC = "/etc/tympan"


@dataclass(frozen=True)
class DeviceSettings:
    device_id: str
    mqtt_url: str  # without a password
    password: str | None
    site: str
    ca_file: str | None = None
    boot_mount: str = "/boot/firmware"  # where the device mounts this partition (Raspberry Pi OS Bookworm)
    tympan_bin: str = "/usr/local/bin/tympan"


def new_device_id() -> str:
    return f"tympan-{secrets.token_hex(3)}"


def looks_like_boot_partition(d: Path) -> bool:
    return any((d / m).exists() for m in BOOT_MARKERS)


def _write_private(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        write_all(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def unit_text(s: DeviceSettings, b: Bundle) -> str:
    cmd = [s.tympan_bin, "listen", "--device", "--ota-dir", DEVICE_OTA_DIR, "--ota-pubkey",
           f"{DEVICE_ETC}/bundle.pub", "--mqtt", s.mqtt_url, "--device-id", s.device_id, "--site", s.site,
           "--spool", "/var/lib/tympan/spool"]  # fmt: skip
    if s.ca_file is not None:
        cmd += ["--mqtt-ca", f"{DEVICE_ETC}/ca.crt"]
    return f"""# Written by `tympan flash --sdcard` (tympan {edge.__version__}).
# Board {b.board or "-"}, array {b.array}, model {b.model_id}, bundle {b.version}: the listener takes the
# model, array and config of the bundle installed in {DEVICE_OTA_DIR}/current (OTA updates replace it).
[Unit]
Description=Tympan edge listener ({s.device_id})
Wants=network-online.target
After=network-online.target sound.target

[Service]
Type=simple
User=tympan
Group=tympan
SupplementaryGroups=audio
EnvironmentFile=-{DEVICE_ETC}/mqtt.env
ExecStart={" ".join(shlex.quote(c) for c in cmd)}
Restart=always
RestartSec=5
StateDirectory=tympan
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
ReadWritePaths=/var/lib/tympan
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
"""


def firstboot_text(s: DeviceSettings, hook: str | None) -> str:
    unhook = ""
    if hook is not None:
        unhook = (
            'if [ -f "$BOOT/cmdline.txt" ]; then\n'
            f"  sed -i 's| {hook}||' \"$BOOT/cmdline.txt\"\n"
            "fi\n"
        )
    return f"""#!/bin/sh
# Tympan first-boot provisioning for device {s.device_id}; written by `tympan flash --sdcard`
# (tympan {edge.__version__}). Runs once as root; safe to run again.
set -eu
HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
BOOT=$(dirname -- "$HERE")
log() {{ echo "tympan-firstboot: $*" >&2; logger -t tympan-firstboot -- "$*" 2>/dev/null || true; }}
fail() {{ log "$*"; exit 1; }}
[ "$(id -u)" -eq 0 ] || fail "must run as root"
TYMPAN={shlex.quote(s.tympan_bin)}
[ -x "$TYMPAN" ] || TYMPAN=$(command -v tympan || true)
[ -n "$TYMPAN" ] && [ -x "$TYMPAN" ] || fail "tympan is not installed (expected {s.tympan_bin})"
id tympan >/dev/null 2>&1 || useradd --system --home-dir /var/lib/tympan --shell /usr/sbin/nologin tympan
getent group audio >/dev/null 2>&1 && usermod -a -G audio tympan || true
install -d -m 0755 {DEVICE_ETC}
install -d -m 0750 -o tympan -g tympan /var/lib/tympan /var/lib/tympan/spool {DEVICE_OTA_DIR}
install -m 0644 "$HERE/bundle.pub" {DEVICE_ETC}/bundle.pub
install -m 0644 "$HERE/device.json" {DEVICE_ETC}/device.json
if [ -f "$HERE/ca.crt" ]; then install -m 0644 "$HERE/ca.crt" {DEVICE_ETC}/ca.crt; fi
if [ -f "$HERE/mqtt.env" ]; then install -m 0600 -o root -g root "$HERE/mqtt.env" {DEVICE_ETC}/mqtt.env; fi
runuser -u tympan -- "$TYMPAN" bundle install --pubkey {DEVICE_ETC}/bundle.pub --ota-dir {DEVICE_OTA_DIR} \\
  "$HERE/bundle.tar.gz" || fail "the bundle did not install (see the message above)"
install -m 0644 "$HERE/tympan.service" /etc/systemd/system/tympan.service
systemctl daemon-reload 2>/dev/null || true
systemctl enable tympan.service
if [ -f "$HERE/mqtt.env" ]; then shred -u "$HERE/mqtt.env" 2>/dev/null || rm -f "$HERE/mqtt.env"; fi
{unhook}date -u +%Y-%m-%dT%H:%M:%SZ > "$HERE/provisioned"
log "device {s.device_id} provisioned; tympan.service enabled"
"""


def provision_sdcard(
    boot_dir: str | os.PathLike[str],
    bundle_bytes: bytes,
    bundle: Bundle,
    public_key_pem: bytes,
    settings: DeviceSettings,
    *,
    force: bool = False,
    hook_cmdline: bool = True,
) -> list[str]:
    """Write the provisioning files; returns notes for the operator (what else to do, if anything)."""
    d = Path(boot_dir)
    if not d.is_dir():
        raise InputError(f"--sdcard {d}: no such directory (mount the card's boot partition first)")
    if not looks_like_boot_partition(d) and not force:
        raise InputError(
            f"--sdcard {d}: does not look like a boot partition (none of {', '.join(BOOT_MARKERS[:5])}, ...); "
            "give --force to write there anyway"
        )
    ca = None
    if settings.ca_file is not None:
        try:
            ca = Path(settings.ca_file).read_bytes()
        except OSError as e:
            raise InputError(f"--mqtt-ca {settings.ca_file}: cannot read ({e.strerror})") from None
    out = d / PROVISION_DIR
    if (out / "device.json").exists() and not force:
        raise InputError(f"--sdcard {d}: already provisioned ({out / 'device.json'}); give --force to replace it")
    out.mkdir(exist_ok=True)
    notes: list[str] = []
    write_atomic(out / "bundle.tar.gz", bundle_bytes)
    write_atomic(out / "bundle.pub", public_key_pem)
    device = {"device_id": settings.device_id, "site": settings.site, "mqtt_url": settings.mqtt_url,
              "board": bundle.board, "array": bundle.array, "model_id": bundle.model_id,
              "bundle_version": bundle.version, "bundle_identity": bundle.identity,
              "provisioned_by": f"tympan {edge.__version__}"}  # fmt: skip
    write_atomic(out / "device.json", (json.dumps(device, indent=1) + "\n").encode())
    if settings.password is not None:
        _write_private(out / "mqtt.env", f"TYMPAN_MQTT_PASSWORD={shlex.quote(settings.password)}\n")
    else:
        (out / "mqtt.env").unlink(missing_ok=True)
    if ca is not None:
        write_atomic(out / "ca.crt", ca)
    write_atomic(out / "tympan.service", unit_text(settings, bundle).encode())
    script = f"{settings.boot_mount.rstrip('/')}/{PROVISION_DIR}/firstboot.sh"
    hook = CMDLINE_HOOK.format(script=script)
    cmdline = d / "cmdline.txt"
    hooked = False
    if hook_cmdline and cmdline.is_file():
        text = cmdline.read_text(encoding="utf-8").strip()
        if hook in text:
            hooked = True
        elif "systemd.run=" in text:
            notes.append(f"{cmdline} already runs another first-boot script; run {script} once as root after it")
        else:
            write_atomic(cmdline, (text + " " + hook + "\n").encode())
            hooked = True
    elif hook_cmdline:
        notes.append(f"no cmdline.txt: on first boot run `sudo sh {script}` once (or from the image's own hook)")
    write_atomic(out / "firstboot.sh", firstboot_text(settings, hook if hooked else None).encode(), mode=0o755)
    return notes


def split_password(url: str) -> tuple[str, str | None]:
    """The URL without its password, and the password (None if it has none)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url, None
    from urllib.parse import unquote

    user, pw = userinfo.split(":", 1)
    return f"{scheme}://{user}@{hostport}{slash}{tail}", unquote(pw)
