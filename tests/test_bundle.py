"""Signed bundles: build -> verify -> extract, and every bundle a device must refuse.

Refused: unsigned, signed by another key, a manifest edited after signing, any member byte changed,
a member added or removed; hand-made archives with path traversal, absolute names, links, devices,
FIFOs, oversized members, too many members and compression bombs. Each refusal is a `BundleError`
naming the bundle and the problem, never another exception and never a file outside the target.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.bundle import (
    MANIFEST,
    SIGNATURE,
    BundleError,
    Limits,
    check_member_name,
    extract,
    pack_tar,
    read_members,
    verify_bundle,
    write_atomic,
)
from edge.errors import ConfigError, InputError, TympanError
from edge.inference import default_model_dir
from edge.keys import key_id
from edge.main import main
from tests.bundles import CREATED, build, members_of, raw_tar, resign

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
PUB = KEY.public_key()
FIRMWARE = bytes(range(256)) * 40


@pytest.fixture(scope="module")
def good() -> bytes:
    return build(KEY, firmware=None)


@pytest.fixture(scope="module")
def with_fw(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    d = tmp_path_factory.mktemp("fw")
    (d / "mcu.bin").write_bytes(FIRMWARE)
    (d / "cfg.json").write_text(json.dumps({"site": "barn", "threshold_scale": 1.5, "latency": "low"}))
    return build(KEY, firmware=str(d / "mcu.bin"), firmware_version="2.1.0", config=str(d / "cfg.json"),
                 version="fleet-7")  # fmt: skip


# --- round trip ----------------------------------------------------------------------------------
def test_round_trip_build_verify_extract(with_fw: bytes, tmp_path: Path) -> None:
    b = verify_bundle(with_fw, PUB, "fw.tar.gz")
    assert b.version == "fleet-7" and b.created == CREATED
    assert (b.board, b.array) == ("raspberry-pi-4", "respeaker-4mic-hat")
    assert b.model_id == json.loads((Path(default_model_dir()) / "model.json").read_text())["id"]
    assert b.config.site == "barn" and b.config.threshold_scale == 1.5 and b.config.latency == "low"
    assert b.firmware == (FIRMWARE, "2.1.0")
    assert b.key_id == key_id(PUB)
    fw = b.manifest["firmware"]
    assert fw["sha256"] == hashlib.sha256(FIRMWARE).hexdigest() and fw["size"] == len(FIRMWARE)
    out = extract(b, tmp_path / "x")
    src = Path(default_model_dir())
    for f in ("model.json", "labels.csv", "model_int8.tflite", "model_int8.onnx", "MODEL_CARD.md"):
        assert (out / "model" / f).read_bytes() == (src / f).read_bytes(), f
    assert (out / "firmware" / "mcu.bin").read_bytes() == FIRMWARE
    assert json.loads((out / "board" / "array.json").read_text())["name"] == "respeaker-4mic-hat"
    assert json.loads((out / "board" / "board.json").read_text())["name"] == "raspberry-pi-4"
    listed = set(b.manifest["members"]) | {MANIFEST, SIGNATURE}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == listed
    from edge.inference import Model

    assert Model(str(out / "model")).id == b.model_id  # the extracted model loads
    with pytest.raises(BundleError, match="already exists"):
        extract(b, out)


def test_build_is_deterministic_for_a_given_time(good: bytes) -> None:
    assert build(KEY) == good
    assert build(KEY, created=CREATED + 1) != good


def test_array_only_bundle_has_no_board(tmp_path: Path) -> None:
    b = verify_bundle(build(KEY, board="respeaker-6mic-hat"), PUB)
    assert b.board is None and b.array == "respeaker-6mic-hat"
    assert "board/board.json" not in b.members and "board/array.json" in b.members


# --- refused: signatures ---------------------------------------------------------------------------
def test_unsigned_bundle_is_refused(good: bytes) -> None:
    m = members_of(good)
    del m[SIGNATURE]
    with pytest.raises(BundleError, match=r"b\.tgz: unsigned bundle"):
        verify_bundle(pack_tar(m, CREATED), PUB, "b.tgz")


def test_bundle_signed_by_another_key_is_refused(good: bytes) -> None:
    forged = resign(members_of(good), OTHER)
    with pytest.raises(BundleError, match=f"signed by key {key_id(OTHER.public_key())}, not by the trusted key"):
        verify_bundle(forged, PUB, "b.tgz")
    verify_bundle(forged, OTHER.public_key())  # it is a good bundle for its own key


def test_wrong_trusted_key_is_refused(good: bytes) -> None:
    with pytest.raises(BundleError, match="not by the trusted key"):
        verify_bundle(good, OTHER.public_key())


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace(b'"threshold_scale": 1.0', b'"threshold_scale": 9.0'),
        lambda s: s.replace(b'"site": "default"', b'"site": "evil"'),
        lambda s: s + b" ",
        lambda s: s.replace(b"\n ", b"\n  "),  # the same JSON, indented otherwise
    ],
    ids=["config", "site", "trailing-space", "reformatted"],
)
def test_manifest_edited_after_signing_is_refused(good: bytes, edit: object) -> None:
    m = members_of(good)
    new = edit(m[MANIFEST])  # type: ignore[operator]
    assert new != m[MANIFEST]
    m[MANIFEST] = new
    with pytest.raises(BundleError, match=r"bad signature: manifest\.json was altered after signing"):
        verify_bundle(pack_tar(m, CREATED), PUB)


def test_corrupt_signature_is_refused(good: bytes) -> None:
    m = members_of(good)
    m[SIGNATURE] = bytes([m[SIGNATURE][0] ^ 1]) + m[SIGNATURE][1:]
    with pytest.raises(BundleError, match="bad signature"):
        verify_bundle(pack_tar(m, CREATED), PUB)
    m[SIGNATURE] = m[SIGNATURE][:10]
    with pytest.raises(BundleError, match="bad signature"):
        verify_bundle(pack_tar(m, CREATED), PUB)


# --- refused: members -----------------------------------------------------------------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 100), where=st.floats(0, 1, exclude_max=True), flip=st.integers(1, 255))
def test_any_member_byte_changed_is_refused(good: bytes, which: int, where: float, flip: int) -> None:
    m = members_of(good)
    names = sorted(n for n in m if n not in (MANIFEST, SIGNATURE) and m[n])
    name = names[which % len(names)]
    body = bytearray(m[name])
    i = int(where * len(body))
    body[i] ^= flip
    m[name] = bytes(body)
    with pytest.raises(BundleError, match=f"member '{name}' does not match its manifest hash"):
        verify_bundle(pack_tar(m, CREATED), PUB)


def test_member_added_or_removed_is_refused(good: bytes) -> None:
    m = members_of(good)
    m["model/extra.onnx"] = b"payload"
    with pytest.raises(BundleError, match=r"'model/extra\.onnx' is not in the signed manifest"):
        verify_bundle(pack_tar(m, CREATED), PUB)
    m = members_of(good)
    del m["model/labels.csv"]
    with pytest.raises(BundleError, match=r"'model/labels\.csv' listed in the manifest is missing"):
        verify_bundle(pack_tar(m, CREATED), PUB)


def test_signed_but_malformed_manifest_is_refused(good: bytes) -> None:
    def future(man: dict) -> None:
        man["format_version"] = 99

    with pytest.raises(BundleError, match="format version 99 is not supported"):
        verify_bundle(resign(members_of(good), KEY, future), PUB)

    def bad_cfg(man: dict) -> None:
        man["config"]["threshold_scale"] = -1

    with pytest.raises(BundleError, match="threshold_scale"):
        verify_bundle(resign(members_of(good), KEY, bad_cfg), PUB)

    def bad_latency(man: dict) -> None:
        man["config"]["latency"] = "fast"

    with pytest.raises(BundleError, match=r"'latency' = 'fast'; choose from balanced, low"):
        verify_bundle(resign(members_of(good), KEY, bad_latency), PUB)


# --- refused: hand-crafted malicious archives -------------------------------------------------------
def _reg(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    return ti


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (_reg("../evil.sh"), "path traversal"),
        (_reg("model/../../evil.sh"), "path traversal"),
        (_reg("/etc/cron.d/evil"), "absolute path"),
        (_reg("model\\..\\..\\evil"), "backslash"),
        (_reg("model/.hidden"), "not a plain file name"),
        (_reg("model//x"), "not a plain file name"),
        (_reg("a/b/c/d/e/f"), "deeper than"),
        (_special("model/labels.csv", tarfile.SYMTYPE, "/etc/passwd"), "a symbolic link"),
        (_special("model/labels.csv", tarfile.LNKTYPE, "manifest.json"), "a hard link"),
        (_special("dev/sda", tarfile.BLKTYPE), "a device file"),
        (_special("dev/tty", tarfile.CHRTYPE), "a device file"),
        (_special("pipe", tarfile.FIFOTYPE), "a FIFO"),
    ],
    ids=lambda v: v.name if isinstance(v, tarfile.TarInfo) else None,
)
def test_malicious_members_are_refused_and_nothing_is_written(
    good: bytes, entry: tarfile.TarInfo, why: str, tmp_path: Path
) -> None:
    m = members_of(good)
    body = raw_tar([_reg(n) for n in sorted(m)] + [entry], {**m, entry.name: b"#!/bin/sh\nrm -rf /\n"})
    for data in (body, gzip.compress(body)):
        with pytest.raises(BundleError, match=f"evil.tgz: member .* refused: .*{why}"):
            verify_bundle(data, PUB, "evil.tgz")
    assert not list(tmp_path.parent.glob("evil*"))


def test_oversized_member_is_refused_from_its_header(good: bytes) -> None:
    """A header claiming 40 MiB (over the 32 MiB default) is refused before its data is read."""
    ti = tarfile.TarInfo("model/model_int8.onnx")
    ti.size = 40 << 20
    data = ti.tobuf(tarfile.PAX_FORMAT) + b"\0" * 4096  # the data is not even there
    with pytest.raises(BundleError, match="over the per-member limit of 33554432"):
        read_members(data, "big.tar")


def test_compression_bomb_is_refused_without_inflating_it() -> None:
    lim = Limits(max_total_bytes=1 << 20, max_member_bytes=1 << 20)
    bomb = gzip.compress(raw_tar([_reg("model/a")], {"model/a": bytes(50 << 20)}), compresslevel=9)
    assert len(bomb) < 100_000
    with pytest.raises(BundleError, match=r"bomb\.tgz: decompresses to more than"):
        read_members(bomb, "bomb.tgz", lim)


def test_total_size_and_member_count_limits() -> None:
    many = raw_tar([_reg(f"f{i}") for i in range(65)])
    with pytest.raises(BundleError, match="more than 64 members"):
        read_members(many, "many.tar")
    two = raw_tar([_reg("a"), _reg("b")], {"a": bytes(600), "b": bytes(600)})
    with pytest.raises(BundleError, match="add up to more than 1000 bytes"):
        read_members(two, "two.tar", Limits(max_total_bytes=1000, max_member_bytes=1000))
    with pytest.raises(BundleError, match="over the bundle size limit"):
        read_members(two, "two.tar", Limits(max_archive_bytes=1000))


def test_duplicate_member_is_refused(good: bytes) -> None:
    m = members_of(good)
    body = raw_tar([_reg(n) for n in sorted(m)] + [_reg("model/labels.csv")], m)
    with pytest.raises(BundleError, match=r"'model/labels\.csv' appears twice"):
        verify_bundle(body, PUB)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 400_000), junk=st.binary(max_size=64))
def test_truncated_or_garbage_bundles_raise_only_bundle_error(good: bytes, cut: int, junk: bytes) -> None:
    for data in (good[: cut % len(good)], junk, good[:cut % 2000] + junk):
        with pytest.raises(BundleError):
            verify_bundle(data, PUB, "bad")


@given(st.text(max_size=40))
def test_member_names_accepted_stay_inside_the_target(name: str) -> None:
    if check_member_name(name) is None:
        root = Path("/srv/x")
        target = (root / name).resolve()
        assert target.is_relative_to(root) and target != root
        assert ".." not in name.split("/") and not name.startswith("/")


# --- building: bad inputs --------------------------------------------------------------------------
def test_build_refuses_bad_inputs(tmp_path: Path) -> None:
    fw = tmp_path / "mcu.bin"
    fw.write_bytes(b"\x01\x02")
    with pytest.raises(InputError, match="--mcu-firmware and --mcu-version go together"):
        build(KEY, firmware=str(fw))
    with pytest.raises(InputError, match="no such MCU firmware file"):
        build(KEY, firmware=str(tmp_path / "nope.bin"), firmware_version="1")
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"threshold_scal": 2}')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'threshold_scal'"):
        build(KEY, config=str(cfg))
    with pytest.raises(InputError, match="not a label of model"):
        build(KEY, selftest_clip=str(Path(default_model_dir()).parent.parent / "data" / "sample_scene.flac"),
              selftest_labels=("Dogg",))  # fmt: skip
    with pytest.raises(InputError, match="takes a model directory"):
        build(KEY, model=Path(default_model_dir()) / "model_int8.onnx")
    for bad in ("../x", "", "v" * 65):
        with pytest.raises(InputError, match=rf"--version {re.escape(repr(bad))}: use letters"):
            build(KEY, version=bad)


def test_write_atomic_names_the_target_and_leaves_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "b.tar.gz", tmp_path / "missing" / "b.tar.gz"):  # not a folder / no folder
        with pytest.raises(TympanError, match=rf"^{re.escape(str(target))}: cannot write \("):
            write_atomic(target, b"data")
    write_atomic(tmp_path / "b.tar.gz", b"data")
    assert (tmp_path / "b.tar.gz").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar.gz", "file"]  # no temporary file left


def test_build_refuses_a_model_that_fails_the_devices_selftest(tmp_path: Path) -> None:
    from tests.bundles import copy_model

    shuffled = copy_model(tmp_path / "m", edit_labels=lambda names: names[::-1])
    with pytest.raises(InputError, match=r"fails the OTA self-test devices would run .*dog not detected"):
        build(KEY, model=shuffled)
    clip = Path(default_model_dir()).parent.parent / "data" / "sample_scene.flac"
    with pytest.raises(InputError, match="clip not detected"):
        build(KEY, selftest_clip=str(clip), selftest_labels=("Gunshot, gunfire",))
    b = verify_bundle(build(KEY, model=shuffled, check_selftest=False), PUB)  # on purpose, to test rollback
    assert b.manifest["selftest"] is None
    b = verify_bundle(build(KEY, selftest_clip=str(clip), selftest_labels=("Dog", "Bark")), PUB)
    assert b.manifest["selftest"] == {"clip": "selftest/clip.flac", "labels": ["Dog", "Bark"]}
    assert b.members["selftest/clip.flac"] == clip.read_bytes()


# --- CLI -------------------------------------------------------------------------------------------
def test_cli_build_verify_json_and_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "--out", str(tmp_path / "k")]) == 0
    out = tmp_path / "b.tar.gz"
    rc = main(["bundle", "build", "--board", "raspberry-pi-4", "--model", default_model_dir(),
               "--key", str(tmp_path / "k/tympan.key"), "--out", str(out), "--version", "v1"])  # fmt: skip
    assert rc == 0
    capsys.readouterr()
    assert main(["bundle", "verify", "--pubkey", str(tmp_path / "k/tympan.pub"), "--json", str(out)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["verified"] is True and s["version"] == "v1" and s["board"] == "raspberry-pi-4"
    assert s["manifest"]["members"]["model/labels.csv"]["size"] > 0
    assert main(["bundle", "verify", "--pubkey", str(tmp_path / "k/tympan.pub"), str(out)]) == 0
    assert "signature OK" in capsys.readouterr().out
    m = members_of(out.read_bytes())
    m["model/labels.csv"] += b"99,/m/x,Evil\n"
    out.write_bytes(pack_tar(m, CREATED))
    assert main(["bundle", "verify", "--pubkey", str(tmp_path / "k/tympan.pub"), str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'model/labels.csv' does not match its manifest hash" in err
    assert main(["bundle", "verify", "--pubkey", str(tmp_path / "k/tympan.pub"), str(tmp_path / "no.tgz")]) == 1
    assert "no such bundle file" in capsys.readouterr().err


def test_extract_refuses_a_hand_built_bundle_with_a_bad_name(good: bytes, tmp_path: Path) -> None:
    from dataclasses import replace

    b = verify_bundle(good, PUB)
    evil = replace(b, members={**b.members, "../escape": b"x"})
    with pytest.raises(BundleError, match="path traversal"):
        extract(evil, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


def test_tar_io_roundtrip_of_pack_tar() -> None:
    data = pack_tar({MANIFEST: b"{}", "a/b": b"xyz"}, CREATED)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tf:
        assert tf.getnames() == [MANIFEST, "a/b"]
        assert all(m.isreg() and m.mode == 0o644 and m.mtime == CREATED for m in tf.getmembers())


_KINDS = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE]


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(["a", "model/x", "../x", "/x", "a/../b", ".x", "a//b", "m/n/o/p/q"]),
                st.text(st.characters(codec="ascii"), min_size=1, max_size=12),
            ),
            st.sampled_from(_KINDS),
            st.integers(0, 3000),
        ),
        max_size=8,
    ),
    gz=st.booleans(),
)
def test_any_archive_yields_only_safe_regular_members_or_a_bundle_error(
    entries: list[tuple[str, bytes, int]], gz: bool
) -> None:
    """Structure-aware fuzzing of the reader: whatever entries an archive holds, `read_members` either
    refuses it with BundleError or returns regular files with safe names within the limits."""
    lim = Limits(max_member_bytes=2000, max_total_bytes=4000, max_members=6)
    infos, data = [], {}
    for name, kind, size in entries:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            ti.linkname = "target"
        infos.append(ti)
        data[name] = bytes(size)
    try:
        raw = raw_tar(infos, data)
    except (ValueError, tarfile.TarError, UnicodeError):
        return  # tarfile itself cannot write this entry
    try:
        got = read_members(gzip.compress(raw) if gz else raw, "fuzz.tar", lim)
    except BundleError as e:
        assert str(e).startswith("fuzz.tar: ")
        return
    assert len(got) <= lim.max_members and sum(map(len, got.values())) <= lim.max_total_bytes
    for name, body in got.items():
        assert check_member_name(name, lim) is None and len(body) <= lim.max_member_bytes
        kinds = [k for n, k, _ in entries if n.split("\x00", 1)[0] == name]  # a tar header ends a name at NUL
        assert tarfile.REGTYPE in kinds and all(k in (tarfile.REGTYPE, tarfile.DIRTYPE) for k in kinds)
