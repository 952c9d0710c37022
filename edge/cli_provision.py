"""Provisioning subcommands: `tympan bundle build|verify|install`, `tympan keys new|id`, `tympan flash`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edge.errors import InputError, TympanError


def add_bundle(sub: Any) -> None:
    p = sub.add_parser("bundle", help="build, verify or install signed device bundles",
                       description="Signed bundles: model, board/array profile, config and MCU firmware.")  # fmt: skip
    bs = p.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)

    b = bs.add_parser("build", help="build and sign a bundle")
    g = b.add_mutually_exclusive_group(required=True)
    g.add_argument("--board", metavar="NAME", help="board or array profile name (see `tympan boards list`)")
    g.add_argument("--array", metavar="FILE", help="array geometry JSON file")
    b.add_argument("--model", required=True, metavar="PATH", help="model directory (with model.json)")
    b.add_argument("--config", metavar="FILE", help="device config JSON (default: the defaults)")
    b.add_argument("--key", required=True, metavar="KEY", help="private signing key (`tympan keys new`)")
    b.add_argument("--out", required=True, metavar="FILE", help="bundle file to write (.tar.gz)")
    b.add_argument("--version", dest="bundle_version", metavar="V", help="bundle version (default: UTC date-time)")
    b.add_argument("--mcu-firmware", metavar="FILE", help="companion-MCU firmware image to include")
    b.add_argument("--mcu-version", metavar="V", help="version of --mcu-firmware")
    b.add_argument("--selftest-clip", metavar="FILE", help="OTA self-test clip (default: the bundled sample scene)")
    b.add_argument("--selftest-label", action="append", default=[], metavar="LABEL",
                   help="a model label the clip must be tagged with (repeatable; with --selftest-clip)")  # fmt: skip
    b.add_argument("--no-selftest-check", action="store_true",
                   help="build even if the model fails the self-test devices will run (to test rollback)")  # fmt: skip
    b.set_defaults(func=cmd_bundle_build)

    v = bs.add_parser("verify", help="check a bundle's signature and contents; print its manifest summary")
    v.add_argument("file", metavar="FILE")
    v.add_argument("--pubkey", required=True, metavar="KEY", help="the public key to trust")
    v.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    v.set_defaults(func=cmd_bundle_verify)

    i = bs.add_parser("install", help="install a bundle into an OTA directory (A/B slots, self-test, rollback)")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--pubkey", required=True, metavar="KEY", help="the public key to trust")
    i.add_argument("--ota-dir", required=True, metavar="DIR", help="the device's OTA directory")
    i.add_argument("--allow-downgrade", action="store_true", help="install a bundle older than the installed one")
    i.add_argument("--json", action="store_true", help="print the result as one JSON object")
    i.set_defaults(func=cmd_bundle_install)


def add_keys(sub: Any) -> None:
    p = sub.add_parser("keys", help="make and inspect ed25519 signing keys")
    ks = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    n = ks.add_parser("new", help="write a new key pair: NAME.key (private, 0600) and NAME.pub")
    n.add_argument("--out", required=True, metavar="DIR", help="directory for the key files (created 0700)")
    n.add_argument("--name", default="tympan", help="file name stem (default: tympan)")
    n.set_defaults(func=cmd_keys_new)
    i = ks.add_parser("id", help="print the key id of a public or private key file")
    i.add_argument("file", metavar="KEY")
    i.set_defaults(func=cmd_keys_id)


def add_flash(sub: Any) -> None:
    p = sub.add_parser(
        "flash",
        help="put a bundle on an SD card's boot partition or the companion MCU",
        description="Write a verified bundle with first-boot provisioning onto a mounted boot partition "
        "(--sdcard), or its MCU firmware to the array board's microcontroller (--serial).",
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--sdcard", metavar="DIR", help="mounted boot partition of the device's card")
    where.add_argument("--serial", metavar="PORT", help="serial port of the companion MCU")
    p.add_argument("bundle", metavar="BUNDLE")
    p.add_argument("--pubkey", required=True, metavar="KEY", help="public key the bundle must verify with "
                   "(also installed on the device for OTA updates)")  # fmt: skip
    sd = p.add_argument_group("--sdcard")
    sd.add_argument("--device-id", metavar="ID", help="device id (default: tympan-<6 random hex digits>)")
    sd.add_argument("--site", metavar="NAME", help="site in topics (default: the bundle config's)")
    sd.add_argument("--mqtt", metavar="URL", help="broker mqtt[s]://[user[:pass]@]host[:port] (password also from "
                    "$TYMPAN_MQTT_PASSWORD; it goes to a 0600 credentials file, never into the unit)")  # fmt: skip
    sd.add_argument("--mqtt-ca", metavar="FILE", help="the broker's CA certificate (mqtts://)")
    sd.add_argument("--boot-mount", default="/boot/firmware", metavar="PATH",
                    help="where the device mounts this partition (default /boot/firmware; /boot: older)")  # fmt: skip
    sd.add_argument("--tympan-bin", default="/usr/local/bin/tympan", metavar="PATH",
                    help="the tympan executable on the device (default /usr/local/bin/tympan)")  # fmt: skip
    sd.add_argument("--no-cmdline", action="store_true", help="do not hook first boot into cmdline.txt")
    sd.add_argument("--force", action="store_true", help="write to a DIR that does not look like a boot partition, "
                    "or replace an earlier provisioning")  # fmt: skip
    p.set_defaults(func=cmd_flash)


# --- commands ------------------------------------------------------------------------------------
def cmd_keys_new(args: argparse.Namespace) -> int:
    from edge.keys import key_id, load_public_key, new_keypair

    priv, pub = new_keypair(args.out, args.name)
    print(f"private key {priv} (keep it secret; mode 0600)")
    print(f"public key  {pub} (give it to devices)")
    print(f"key id      {key_id(load_public_key(pub))}")
    return 0


def cmd_keys_id(args: argparse.Namespace) -> int:
    from edge.keys import key_id, load_private_key, load_public_key

    data = Path(args.file).read_bytes() if Path(args.file).is_file() else b""
    key = load_private_key(args.file).public_key() if b"PRIVATE KEY" in data else load_public_key(args.file)
    print(key_id(key))
    return 0


def cmd_bundle_build(args: argparse.Namespace) -> int:
    from edge.bundle import BuildSpec, build_bundle, write_atomic
    from edge.keys import load_private_key

    key = load_private_key(args.key)
    spec = BuildSpec(model=args.model, board=args.board, array=args.array, config=args.config,
                     version=args.bundle_version, firmware=args.mcu_firmware, firmware_version=args.mcu_version,
                     selftest_clip=args.selftest_clip, selftest_labels=tuple(args.selftest_label),
                     check_selftest=not args.no_selftest_check)  # fmt: skip
    data = build_bundle(spec, key)
    out = Path(args.out)
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory; give a file name")
    write_atomic(out, data)
    print(f"{out}: {len(data)} bytes, signed", file=sys.stderr)
    return 0


def _print_summary(s: dict[str, Any]) -> None:
    print(f"{s['bundle']}: signature OK (key {s['key_id']}), {s['members']} member(s) verified, {s['bytes']} bytes")
    print(f"  version   {s['version']} (created {s['created']}, tympan {s['tympan_version']})")
    print(f"  board     {s['board'] or '-'}   array {s['array']}")
    print(f"  model     {s['model_id']}")
    print(f"  firmware  {s['firmware_version'] or '-'}")
    print(f"  config    {json.dumps(s['config'], sort_keys=True)}")
    st = s["selftest"]
    print(f"  selftest  {'sample scene' if st is None else st['clip'] + ': ' + ', '.join(st['labels'])}")
    print(f"  sha256    {s['sha256']}")


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.keys import load_public_key

    b = load_bundle(args.file, load_public_key(args.pubkey))
    s = b.summary()
    if args.json:
        print(json.dumps({"verified": True, **s, "manifest": b.manifest}))
    else:
        _print_summary(s)
    return 0


def cmd_bundle_install(args: argparse.Namespace) -> int:
    from edge.bundle import read_bundle_file
    from edge.keys import load_public_key
    from edge.ota import OtaStore, bundle_info

    store = OtaStore(args.ota_dir, load_public_key(args.pubkey), allow_downgrade=args.allow_downgrade)

    def progress(state: str, detail: str, b: Any) -> None:
        if not args.json:
            print(f"{state}: {detail}", file=sys.stderr)

    res = store.install(read_bundle_file(args.file), origin=args.file, progress=progress)
    if args.json:
        print(json.dumps({"state": res.state, "detail": res.detail, "bundle": bundle_info(res.bundle)}))
    elif res.ok:
        print(f"{res.state}: {res.detail}")
    if not res.ok:
        raise TympanError(f"{res.state}: {res.detail}")
    return 0


def cmd_flash(args: argparse.Namespace) -> int:
    from edge.bundle import read_bundle_file, verify_bundle
    from edge.keys import load_public_key

    pem_path = Path(args.pubkey)
    pub = load_public_key(pem_path)
    data = read_bundle_file(args.bundle)
    bundle = verify_bundle(data, pub, args.bundle)
    if args.serial is not None:
        for flag in ("device_id", "site", "mqtt", "mqtt_ca"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag.replace('_', '-')} is for --sdcard, not --serial")
        return _flash_serial(args.serial, bundle)
    return _flash_sdcard(args, bundle, data, pem_path.read_bytes())


def _flash_sdcard(args: argparse.Namespace, bundle: Any, data: bytes, pem: bytes) -> int:
    from edge.errors import TokenError
    from edge.mqtt_url import parse_mqtt_url
    from edge.provision import DeviceSettings, new_device_id, provision_sdcard, split_password
    from edge.token_codec import check_name

    if args.mqtt is None:
        raise InputError("--sdcard needs --mqtt URL (the broker the device reports to)")
    target = parse_mqtt_url(args.mqtt)  # validates; reads $TYMPAN_MQTT_PASSWORD for a user without one
    url, password = split_password(args.mqtt.strip())
    if password is None and target.username is not None:
        password = target.password
    if args.mqtt_ca is not None and not target.tls:
        raise InputError(f"--mqtt-ca needs an mqtts:// URL, got {target.label}")
    device_id = args.device_id or new_device_id()
    site = args.site or bundle.config.site
    try:
        check_name("device id", device_id)
        check_name("site", site)
    except TokenError as e:
        raise InputError(f"--device-id/--site: {e}") from None
    settings = DeviceSettings(device_id=device_id, mqtt_url=url, password=password, site=site,
                              ca_file=args.mqtt_ca, boot_mount=args.boot_mount, tympan_bin=args.tympan_bin)  # fmt: skip
    notes = provision_sdcard(args.sdcard, data, bundle, pem, settings, force=args.force,
                             hook_cmdline=not args.no_cmdline)  # fmt: skip
    print(f"{args.sdcard}: provisioned device {device_id} (site {site}, broker {target.label}) "
          f"with bundle {bundle.version} (model {bundle.model_id})")  # fmt: skip
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return 0


def _flash_serial(port: str, bundle: Any) -> int:
    fw = bundle.firmware
    if fw is None:
        raise InputError(f"{bundle.origin}: the bundle carries no MCU firmware (build it with --mcu-firmware)")
    image, version = fw
    try:
        from firmware_bridge.flasher import flash_serial
    except ImportError as e:
        raise TympanError(f"--serial: the firmware bridge is not available in this install ({e})") from None

    last = [-1]

    def progress(done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if pct != last[0]:
            last[0] = pct
            print(f"\rflashing {version}: {pct:3d}% ({done}/{total} bytes)", end="", file=sys.stderr, flush=True)

    result = flash_serial(port, image, version=version, progress=progress, origin=f"{bundle.origin}: MCU firmware")
    if last[0] >= 0:
        print(file=sys.stderr)
    if getattr(result, "unchanged", False):
        print(f"{port}: MCU already runs firmware {version}; nothing sent")
    else:
        slot = getattr(result, "slot_name", "?")
        prev = getattr(result, "previous_version", "") or "unknown"
        print(f"{port}: MCU firmware {version} ({len(image)} bytes) verified and running in slot {slot} "
              f"(was {prev})")  # fmt: skip
    return 0
