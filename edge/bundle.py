"""Model + profiles + config + MCU image -> signed bundle (tar.gz) -> verified members -> a directory.

    data = build_bundle(BuildSpec(...), private_key)     # bytes of a .tar.gz
    b = verify_bundle(data, public_key, origin="x.tar.gz") # every check below, or BundleError
    extract(b, dest)                                       # dest must not exist yet

Format (docs/bundles.md): a gzip-compressed POSIX tar of regular files only:

    manifest.json        canonical JSON (sorted keys); lists every other member with sha256 and size
    manifest.sig         64 bytes: the ed25519 signature of manifest.json's exact bytes
    config.json          the device config (edge/device_config.py), also copied into the manifest
    model/...            model.json, the label file, the model files it lists, MODEL_CARD.md if present
    board/board.json     the board profile (when built for a board), board/array.json the array profile
    firmware/mcu.bin     optional companion-MCU image; its version, size and sha256 in the manifest
    selftest/...         optional self-test clip for OTA (else the bundled sample scene is used)

A device accepts a bundle only if it is signed by its key, the signature covers the manifest byte for
byte, and the members are exactly those the manifest lists with matching sizes and hashes. Reading is
bounded before anything is trusted: the compressed size, the decompressed size, the number of members
and each member's size have limits (`Limits`), and member names must be plain relative paths
(no `..`, no absolute path, no backslash, no hidden or odd characters); links, devices and FIFOs are
refused. Every refusal raises `BundleError` naming the bundle and the problem.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.device_config import DeviceConfig, config_from_dict
from edge.errors import ConfigError, InputError, TympanError
from edge.keys import key_id, sign, verify

FORMAT = "tympan-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
CONFIG = "config.json"
MODEL_DIR = "model"
BOARD_JSON = "board/board.json"
ARRAY_JSON = "board/array.json"
FIRMWARE = "firmware/mcu.bin"
SELFTEST_DIR = "selftest"
MODEL_CARD = "MODEL_CARD.md"
MiB = 1 << 20
TAR_BLOCK = 512
_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class BundleError(InputError):
    """A bundle is unsigned, tampered with, signed by another key, malformed or over a limit."""


@dataclass(frozen=True)
class Limits:
    """Bounds checked while reading, before anything in the bundle is trusted."""

    max_archive_bytes: int = 64 * MiB  # the .tar.gz itself (also the OTA payload limit)
    max_total_bytes: int = 64 * MiB  # sum of the members' uncompressed sizes
    max_member_bytes: int = 32 * MiB
    max_members: int = 64
    max_name_len: int = 200
    max_depth: int = 4

    @property
    def max_tar_bytes(self) -> int:
        """Largest plain tar these limits allow: data padded to 512-byte blocks, a header and a pax
        header per member, the end-of-archive blocks and tarfile's record padding."""
        return self.max_total_bytes + self.max_members * 4 * TAR_BLOCK + 20 * TAR_BLOCK


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class BuildSpec:
    model: str  # a Tympan model directory
    board: str | None = None  # board or array name (or array file path)
    array: str | None = None  # array JSON file (instead of board)
    config: str | None = None  # device config JSON file (None: the defaults)
    version: str | None = None  # bundle version (default: UTC date-time)
    firmware: str | None = None  # MCU image file
    firmware_version: str | None = None
    selftest_clip: str | None = None
    selftest_labels: Sequence[str] = ()
    created: int | None = None  # epoch s (default: now)
    check_selftest: bool = True  # refuse to build a bundle whose model fails its own OTA self-test


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: the manifest and every member's bytes (all checked against it)."""

    origin: str
    manifest: Mapping[str, Any]
    members: Mapping[str, bytes] = field(repr=False)
    sha256: str  # of the archive bytes
    key_id: str

    @property
    def identity(self) -> str:
        """sha256 of the signed manifest: names the bundle's content, however it was packed."""
        return _sha(self.members[MANIFEST])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def created(self) -> int:
        return int(self.manifest["created"])

    @property
    def model_id(self) -> str:
        return str(self.manifest["model"]["id"])

    @property
    def board(self) -> str | None:
        b = self.manifest["board"]
        return None if b is None else str(b)

    @property
    def array(self) -> str:
        return str(self.manifest["array"])

    @property
    def config(self) -> DeviceConfig:
        return config_from_dict(self.manifest["config"], f"{self.origin}: manifest config")

    @property
    def firmware(self) -> tuple[bytes, str] | None:
        """(image, version) of the MCU firmware, if the bundle carries one."""
        fw = self.manifest.get("firmware")
        if fw is None:
            return None
        return self.members[fw["path"]], str(fw["version"])

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        fw = m.get("firmware")
        return {
            "bundle": self.origin,
            "sha256": self.sha256,
            "identity": self.identity,
            "version": m["version"],
            "created": m["created"],
            "tympan_version": m["tympan_version"],
            "board": m["board"],
            "array": m["array"],
            "model_id": m["model"]["id"],
            "firmware_version": None if fw is None else fw["version"],
            "config": m["config"],
            "selftest": m.get("selftest"),
            "members": len(m["members"]),
            "bytes": sum(int(v["size"]) for v in m["members"].values()),
            "key_id": self.key_id,
        }


# --- names ---------------------------------------------------------------------------------------
def check_member_name(name: str, limits: Limits = DEFAULT_LIMITS) -> str | None:
    """None if `name` is a safe relative member path, else why it is not."""
    if not name:
        return "empty name"
    if len(name) > limits.max_name_len:
        return f"name longer than {limits.max_name_len} characters"
    if "\\" in name or "\0" in name:
        return "backslash or NUL in the name"
    if name.startswith("/"):
        return "absolute path"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return "'..' in the path (path traversal)"
    if len(parts) > limits.max_depth:
        return f"deeper than {limits.max_depth} levels"
    for p in parts:
        if not _NAME_PART.match(p):
            return f"path part {p!r} is not a plain file name ([A-Za-z0-9_] then [A-Za-z0-9._-])"
    return None


# --- reading -------------------------------------------------------------------------------------
def _gunzip_bounded(data: bytes, origin: str, cap: int) -> bytes:
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, cap + 1)
    except zlib.error as e:
        raise BundleError(f"{origin}: corrupt gzip stream ({e})") from None
    if len(out) > cap:
        raise BundleError(f"{origin}: decompresses to more than {cap} bytes (limit; a compression bomb?)")
    if not d.eof:
        raise BundleError(f"{origin}: truncated gzip stream")
    return out


def read_members(data: bytes, origin: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, bytes]:
    """Every member of a bundle archive, with the safety checks and limits; trusts nothing yet."""
    if len(data) > limits.max_archive_bytes:
        raise BundleError(f"{origin}: {len(data)} bytes is over the bundle size limit of {limits.max_archive_bytes}")
    raw = _gunzip_bounded(data, origin, limits.max_tar_bytes) if data[:2] == b"\x1f\x8b" else data
    if len(raw) > limits.max_tar_bytes:
        raise BundleError(f"{origin}: {len(raw)} bytes of tar is over the limit of {limits.max_tar_bytes}")
    out: dict[str, bytes] = {}
    total = 0
    n = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
            while True:
                ti = tf.next()
                if ti is None:
                    break
                n += 1
                if n > limits.max_members:
                    raise BundleError(f"{origin}: more than {limits.max_members} members (limit)")
                why = check_member_name(ti.name.rstrip("/") if ti.isdir() else ti.name, limits)
                if why is not None:
                    raise BundleError(f"{origin}: member {ti.name!r} refused: {why}")
                if ti.isdir():
                    continue
                if not ti.isreg():
                    kind = (
                        "a symbolic link" if ti.issym() else "a hard link" if ti.islnk()
                        else "a device file" if ti.ischr() or ti.isblk() else "a FIFO" if ti.isfifo()
                        else f"of tar type {ti.type!r}"
                    )  # fmt: skip
                    raise BundleError(f"{origin}: member {ti.name!r} refused: {kind}; only regular files are allowed")
                if ti.name in out:
                    raise BundleError(f"{origin}: member {ti.name!r} appears twice")
                if ti.size > limits.max_member_bytes:
                    raise BundleError(
                        f"{origin}: member {ti.name!r} is {ti.size} bytes, over the per-member limit of "
                        f"{limits.max_member_bytes}"
                    )
                total += ti.size
                if total > limits.max_total_bytes:
                    raise BundleError(f"{origin}: members add up to more than {limits.max_total_bytes} bytes (limit)")
                f = tf.extractfile(ti)
                body = b"" if f is None else f.read(ti.size + 1)
                if len(body) != ti.size:
                    raise BundleError(f"{origin}: member {ti.name!r} is truncated")
                out[ti.name] = body
    except tarfile.TarError as e:
        raise BundleError(f"{origin}: not a readable tar archive ({e})") from None
    except EOFError:
        raise BundleError(f"{origin}: truncated tar archive") from None
    if not out:
        raise BundleError(f"{origin}: empty archive; not a Tympan bundle")
    return out


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _need(cond: bool, origin: str, what: str) -> None:
    if not cond:
        raise BundleError(f"{origin}: malformed manifest: {what}")


def _check_manifest(m: Any, origin: str) -> None:
    _need(isinstance(m, dict), origin, "not a JSON object")
    _need(m.get("format") == FORMAT, origin, f"format is {m.get('format')!r}, not {FORMAT!r}")
    fv = m.get("format_version")
    if fv != FORMAT_VERSION:
        raise BundleError(
            f"{origin}: bundle format version {fv!r} is not supported (this tympan reads {FORMAT_VERSION})"
        )
    for k, t in (("version", str), ("created", int), ("tympan_version", str), ("array", str), ("key_id", str)):
        ok = isinstance(m.get(k), t) and not isinstance(m.get(k), bool)
        _need(ok, origin, f"{k!r} missing or not a {t.__name__}")
    _need(m.get("board") is None or isinstance(m.get("board"), str), origin, "'board' must be a string or null")
    _need(isinstance(m.get("config"), dict), origin, "'config' missing")
    model = m.get("model")
    _need(isinstance(model, dict) and isinstance(model.get("id"), str), origin, "'model.id' missing")
    members = m.get("members")
    _need(isinstance(members, dict) and bool(members), origin, "'members' missing or empty")
    for name, e in members.items():
        _need(
            isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int),
            origin, f"member entry {name!r} needs sha256 and size",
        )  # fmt: skip
    fw = m.get("firmware")
    if fw is not None:
        _need(
            isinstance(fw, dict) and fw.get("path") == FIRMWARE and isinstance(fw.get("version"), str),
            origin, "'firmware' needs path and version",
        )  # fmt: skip
        _need(FIRMWARE in members, origin, f"firmware listed but {FIRMWARE} is not a member")
    st = m.get("selftest")
    if st is not None:
        _need(
            isinstance(st, dict) and isinstance(st.get("clip"), str) and isinstance(st.get("labels"), list)
            and bool(st["labels"]) and all(isinstance(x, str) for x in st["labels"]) and st["clip"] in members,
            origin, "'selftest' needs a member clip and a non-empty label list",
        )  # fmt: skip
    _need(f"{MODEL_DIR}/model.json" in members, origin, f"no {MODEL_DIR}/model.json member")
    _need(CONFIG in members, origin, f"no {CONFIG} member")


def verify_bundle(
    data: bytes, public_key: Ed25519PublicKey, origin: str = "bundle", limits: Limits = DEFAULT_LIMITS
) -> Bundle:
    """The verified `Bundle`, or `BundleError` saying why the bundle is refused."""
    members = read_members(data, origin, limits)
    return verify_members(members, public_key, origin, _sha(data))


def verify_members(
    members: Mapping[str, bytes], public_key: Ed25519PublicKey, origin: str, archive_sha256: str
) -> Bundle:
    """Check the signature, the manifest and every member against it (members already read safely)."""
    if MANIFEST not in members:
        raise BundleError(f"{origin}: no {MANIFEST}; not a Tympan bundle")
    if SIGNATURE not in members:
        raise BundleError(f"{origin}: unsigned bundle (no {SIGNATURE}); only signed bundles are accepted")
    man_bytes, sig = members[MANIFEST], members[SIGNATURE]
    want_id = key_id(public_key)
    if not verify(public_key, man_bytes, sig):
        try:
            claimed = json.loads(man_bytes).get("key_id")
        except (ValueError, AttributeError):
            claimed = None
        if isinstance(claimed, str) and claimed != want_id:
            raise BundleError(
                f"{origin}: signed by key {claimed}, not by the trusted key {want_id} (wrong key, or a forged bundle)"
            )
        raise BundleError(
            f"{origin}: bad signature: {MANIFEST} was altered after signing, or the signature is corrupt "
            f"(trusted key {want_id})"
        )
    try:
        manifest = json.loads(man_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{origin}: {MANIFEST} is not JSON ({e})") from None
    _check_manifest(manifest, origin)
    listed: dict[str, Any] = manifest["members"]
    present = set(members) - {MANIFEST, SIGNATURE}
    extra = sorted(present - set(listed))
    if extra:
        raise BundleError(f"{origin}: member {extra[0]!r} is not in the signed manifest (added after signing)")
    missing = sorted(set(listed) - present)
    if missing:
        raise BundleError(f"{origin}: member {missing[0]!r} listed in the manifest is missing")
    for name in sorted(listed):
        body, entry = members[name], listed[name]
        if len(body) != entry["size"] or _sha(body) != entry["sha256"]:
            raise BundleError(f"{origin}: member {name!r} does not match its manifest hash (tampered or corrupt)")
    try:
        cfg = config_from_dict(manifest["config"], f"{origin}: manifest config")
        file_cfg = json.loads(members[CONFIG])
    except (ConfigError, ValueError) as e:
        raise BundleError(f"{origin}: bad config ({e})") from None
    if file_cfg != cfg.to_dict():
        raise BundleError(f"{origin}: {CONFIG} differs from the manifest's config")
    return Bundle(origin, manifest, dict(members), archive_sha256, want_id)


def read_bundle_file(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a bundle file, refusing one over the size limit before reading it."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > limits.max_archive_bytes:
            raise BundleError(f"{p}: {size} bytes is over the bundle size limit of {limits.max_archive_bytes}")
        with p.open("rb") as f:
            return f.read(limits.max_archive_bytes + 1)
    except FileNotFoundError:
        raise BundleError(f"{p}: no such bundle file") from None
    except IsADirectoryError:
        raise BundleError(f"{p}: is a directory, not a bundle file") from None
    except OSError as e:
        raise BundleError(f"{p}: cannot read ({e.strerror})") from None


def load_bundle(
    path: str | os.PathLike[str], public_key: Ed25519PublicKey, limits: Limits = DEFAULT_LIMITS
) -> Bundle:
    return verify_bundle(read_bundle_file(path, limits), public_key, str(path), limits)


# --- extraction ----------------------------------------------------------------------------------
def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def extract(bundle: Bundle, dest: str | os.PathLike[str]) -> Path:
    """Write a verified bundle's members (and its manifest and signature) into `dest`, a new directory.

    Names were checked when the bundle was read; directories are created here, one level at a time,
    and files are opened with O_EXCL | O_NOFOLLOW, so nothing outside `dest` can be written.
    """
    root = Path(dest)
    try:
        root.mkdir(mode=0o755)
    except FileExistsError:
        raise BundleError(f"{root}: already exists; extract into a new directory") from None
    except OSError as e:
        raise BundleError(f"{root}: cannot create ({e.strerror})") from None
    base = root.resolve()
    for name in sorted(bundle.members):
        why = check_member_name(name)
        if why is not None:  # a Bundle built by hand, not by verify_bundle
            raise BundleError(f"{bundle.origin}: member {name!r} refused: {why}")
        target = base.joinpath(*PurePosixPath(name).parts)
        d = base
        for part in PurePosixPath(name).parts[:-1]:
            d = d / part
            if d.is_symlink() or (d.exists() and not d.is_dir()):
                raise BundleError(f"{bundle.origin}: {d} is not a plain directory")
            if not d.exists():
                d.mkdir(mode=0o755)
        _write_file(target, bundle.members[name])
    fd = os.open(base, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return root


# --- building ------------------------------------------------------------------------------------
def _read_input(path: str, what: str, limit: int) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such {what} file")
    size = p.stat().st_size
    if size > limit:
        raise InputError(f"{path}: {size} bytes is over the bundle's per-member limit of {limit}")
    return p.read_bytes()


def _model_members(path: str, limits: Limits) -> tuple[str, dict[str, bytes]]:
    from edge.errors import ModelError

    d = Path(path)
    if not d.is_dir():
        raise InputError(f"--model {path}: a bundle takes a model directory (with model.json), not a file")
    meta_path = d / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"{path}: no model.json; not a Tympan model directory")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        model_id = str(meta["id"])
        files = [str(meta.get("labels", "labels.csv")), *(str(v) for v in dict(meta["files"]).values())]
        hashes = {str(k): str(v) for k, v in dict(meta.get("sha256", {})).items()}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{meta_path}: unreadable or malformed ({e})") from None
    out = {f"{MODEL_DIR}/model.json": meta_path.read_bytes()}
    if (d / MODEL_CARD).is_file():
        files.append(MODEL_CARD)
    for f in files:
        name = f"{MODEL_DIR}/{f}"
        why = check_member_name(name, limits)
        if why is not None:
            raise ModelError(f"{meta_path}: file {f!r} cannot go into a bundle ({why})")
        body = _read_input(str(d / f), "model", limits.max_member_bytes)
        want = hashes.get(f)
        if want is not None and _sha(body) != want:
            raise ModelError(f"{d / f}: sha256 does not match model.json's; the model directory is inconsistent")
        out[name] = body
    return model_id, out


def _profile_members(spec: BuildSpec) -> tuple[str | None, str, dict[str, bytes]]:
    from boards.profiles import kind_of, load_array, load_board, resolve

    def dump(d: Mapping[str, Any]) -> bytes:
        return (json.dumps(d, indent=1) + "\n").encode()

    if spec.board is not None and spec.array is None and kind_of(spec.board) == "board":
        board = load_board(spec.board)
        array = load_array(board.default_array)
        return board.name, array.name, {BOARD_JSON: dump(board.to_dict()), ARRAY_JSON: dump(array.to_dict())}
    array = resolve(spec.board, spec.array)
    return None, array.name, {ARRAY_JSON: dump(array.to_dict())}


def canonical_json(d: Mapping[str, Any]) -> bytes:
    return (json.dumps(d, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


def build_bundle(spec: BuildSpec, private_key: Ed25519PrivateKey, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a signed bundle (.tar.gz), built deterministically from `spec` (given `created`)."""
    import edge
    from edge.device_config import DeviceConfig, load_config
    from edge.inference import Model

    if spec.board is None and spec.array is None:
        raise InputError("a bundle needs --board NAME or --array FILE")
    created = int(time.time()) if spec.created is None else int(spec.created)
    # only an absent version defaults to the date-time: an empty --version is a mistake, refused below
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created)) if spec.version is None else spec.version
    if not _VERSION.match(version):
        raise InputError(f"--version {version!r}: use letters, digits and . _ + - (at most 64)")
    cfg = DeviceConfig() if spec.config is None else load_config(spec.config)
    model_id, members = _model_members(spec.model, limits)
    model = Model(spec.model, runtime=cfg.runtime)  # it must load (hashes, frontend, output shape) to ship
    board, array, prof = _profile_members(spec)
    members.update(prof)
    members[CONFIG] = (json.dumps(cfg.to_dict(), indent=1) + "\n").encode()
    firmware = None
    if (spec.firmware is None) != (spec.firmware_version is None):
        raise InputError("--mcu-firmware and --mcu-version go together")
    if spec.firmware is not None and spec.firmware_version is not None:
        if not _VERSION.match(spec.firmware_version):
            raise InputError(f"--mcu-version {spec.firmware_version!r}: use letters, digits and . _ + -")
        image = _read_input(spec.firmware, "MCU firmware", limits.max_member_bytes)
        if not image:
            raise InputError(f"{spec.firmware}: empty MCU firmware image")
        members[FIRMWARE] = image
        firmware = {"path": FIRMWARE, "version": spec.firmware_version, "size": len(image), "sha256": _sha(image)}
    selftest = None
    if (spec.selftest_clip is None) != (not spec.selftest_labels):
        raise InputError("--selftest-clip and --selftest-label go together")
    if spec.selftest_clip is not None:
        ext = Path(spec.selftest_clip).suffix.lower()
        if ext not in (".wav", ".flac", ".ogg"):
            raise InputError(f"{spec.selftest_clip}: a self-test clip is .wav, .flac or .ogg")
        unknown = [lb for lb in spec.selftest_labels if lb not in model.label_names]
        if unknown:
            raise InputError(f"--selftest-label {unknown[0]!r}: not a label of model {model_id}")
        clip = f"{SELFTEST_DIR}/clip{ext}"
        members[clip] = _read_input(spec.selftest_clip, "self-test clip", limits.max_member_bytes)
        selftest = {"clip": clip, "labels": list(spec.selftest_labels)}
    if spec.check_selftest:
        from edge.selftest import run_selftest

        res = run_selftest(spec.model, spec.selftest_clip, tuple(spec.selftest_labels), runtime=cfg.runtime)
        if not res.passed:
            raise InputError(f"--model {spec.model}: fails the OTA self-test devices would run ({res.detail})")
    if len(members) + 2 > limits.max_members:
        raise InputError(f"the bundle would have {len(members) + 2} members, over the limit of {limits.max_members}")
    total = sum(len(b) for b in members.values())
    if total > limits.max_total_bytes:
        raise InputError(f"the bundle's members add up to {total} bytes, over the limit of {limits.max_total_bytes}")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": version,
        "created": created,
        "tympan_version": edge.__version__,
        "board": board,
        "array": array,
        "model": {"id": model_id, "dir": MODEL_DIR},
        "config": cfg.to_dict(),
        "firmware": firmware,
        "selftest": selftest,
        "members": {n: {"sha256": _sha(b), "size": len(b)} for n, b in sorted(members.items())},
        "key_id": key_id(private_key.public_key()),
    }
    man = canonical_json(manifest)
    data = pack_tar({MANIFEST: man, SIGNATURE: sign(private_key, man), **members}, created)
    if len(data) > limits.max_archive_bytes:
        raise InputError(f"the bundle is {len(data)} bytes, over the limit of {limits.max_archive_bytes}")
    return data


def pack_tar(members: Mapping[str, bytes], mtime: int) -> bytes:
    """A deterministic tar.gz of regular files (manifest first, then by name)."""
    buf = io.BytesIO()
    order = [n for n in (MANIFEST, SIGNATURE) if n in members] + sorted(
        n for n in members if n not in (MANIFEST, SIGNATURE)
    )
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for name in order:
            ti = tarfile.TarInfo(name)
            ti.size = len(members[name])
            ti.mtime = mtime
            ti.mode = 0o644
            ti.uname = ti.gname = ""
            tf.addfile(ti, io.BytesIO(members[name]))
    return gzip.compress(buf.getvalue(), compresslevel=9, mtime=0)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` through a temporary file and a rename (never a half-written file)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), mode)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, p)
    except OSError as e:
        with contextlib.suppress(OSError):  # the folder may not exist, or not be one
            tmp.unlink()
        raise TympanError(f"{p}: cannot write ({e.strerror})") from None
