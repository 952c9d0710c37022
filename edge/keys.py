"""Signing keys: ed25519 key files -> signatures of bundle manifests, and their checks.

    new_keypair(out_dir, name="tympan") -> (private_path, public_path)
    load_private_key(path) / load_public_key(path)
    sign(private_key, data) -> 64-byte signature
    verify(public_key, data, signature) -> bool
    key_id(public_key) -> 16 hex digits (sha256 of the raw 32-byte public key)

Key files are PEM: the private key PKCS#8 (written 0600, encrypted with the passphrase in
`$TYMPAN_KEY_PASSPHRASE` when that is set), the public key SubjectPublicKeyInfo (0644). Like ssh, a
private key that others may read is refused; files are never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge.errors import InputError

PASSPHRASE_ENV = "TYMPAN_KEY_PASSPHRASE"
PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
SIGNATURE_BYTES = 64
MAX_KEY_FILE_BYTES = 16384


class KeyFileError(InputError):
    """A key file is missing, unreadable, of the wrong kind, or too open."""


def _passphrase() -> bytes | None:
    v = os.environ.get(PASSPHRASE_ENV)
    return v.encode() if v else None


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of sha256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode)
    except FileExistsError:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a key file") from None
    except OSError as e:
        raise KeyFileError(f"{path}: cannot create ({e.strerror})") from None
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away; never added any
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def new_keypair(out_dir: str | os.PathLike[str], name: str = "tympan") -> tuple[Path, Path]:
    """Write `<out_dir>/<name>.key` (private, 0600) and `<name>.pub` (0644); refuse existing files."""
    if not name or any(ch in name for ch in "/\\\0") or name.startswith("."):
        raise KeyFileError(f"key name {name!r}: must be a plain file name (no '/', not starting with '.')")
    d = Path(out_dir)
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise KeyFileError(f"{d}: cannot create the key directory ({e.strerror})") from None
    if not d.is_dir():
        raise KeyFileError(f"{d}: not a directory")
    priv_path, pub_path = d / (name + PRIVATE_SUFFIX), d / (name + PUBLIC_SUFFIX)
    for p in (priv_path, pub_path):
        if p.exists() or p.is_symlink():
            raise KeyFileError(f"{p}: already exists; refusing to overwrite a key file")
    key = Ed25519PrivateKey.generate()
    pw = _passphrase()
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(pw) if pw else serialization.NoEncryption()
    )
    _write_new(
        priv_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc), 0o600
    )
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(pub_path, pub, 0o644)
    return priv_path, pub_path


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{p}: no such {what} file") from None
    except OSError as e:
        raise KeyFileError(f"{p}: cannot read the {what} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{p}: not a regular file")
    if st.st_size > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{p}: {st.st_size} bytes is too large for a {what} file")
    return p.read_bytes()


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """An ed25519 private key from a PEM file that only its owner may read."""
    data = _read(path, "private key")
    if b"PUBLIC KEY" in data and b"PRIVATE KEY" not in data:  # before the permissions: a .pub may be 0644
        raise KeyFileError(f"{path}: this is a public key; signing needs the private key (.key)")
    if os.name == "posix":
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: private key permissions {mode:04o} are too open (others can read it); chmod 600 it"
            )
    pw = _passphrase()
    try:
        key = serialization.load_pem_private_key(data, password=pw)
    except TypeError:
        if pw is None:
            raise KeyFileError(f"{path}: the private key is encrypted; set ${PASSPHRASE_ENV}") from None
        raise KeyFileError(f"{path}: the private key is not encrypted; unset ${PASSPHRASE_ENV}") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        why = "wrong passphrase or not a PEM private key" if pw else "not a PEM private key"
        raise KeyFileError(f"{path}: {why} ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, not an ed25519 private key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """An ed25519 public key from a PEM file (`tympan keys new` writes `<name>.pub`)."""
    data = _read(path, "public key")
    if b"PRIVATE KEY" in data:
        raise KeyFileError(f"{path}: this is a private key; give the public key (.pub) to verify with")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{path}: not a PEM public key ({str(e).splitlines()[0][:80]})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, not an ed25519 public key")
    return key


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    return private_key.sign(data)


def verify(public_key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s ed25519 signature of exactly `data`."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
