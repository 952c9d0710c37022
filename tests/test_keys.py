"""Signing keys: `tympan keys new`, safe permissions, no overwrite, the key files a signer refuses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.keys import (
    PASSPHRASE_ENV,
    KeyFileError,
    key_id,
    load_private_key,
    load_public_key,
    new_keypair,
    sign,
    verify,
)
from edge.main import main


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_new_keypair_writes_private_0600_public_0644_and_they_match(tmp_path: Path) -> None:
    priv, pub = new_keypair(tmp_path / "k", "fleet")
    assert (priv.name, pub.name) == ("fleet.key", "fleet.pub")
    assert mode(priv) == 0o600 and mode(pub) == 0o644
    assert mode(tmp_path / "k") == 0o700
    sk, pk = load_private_key(priv), load_public_key(pub)
    sig = sign(sk, b"manifest")
    assert verify(pk, b"manifest", sig)
    assert not verify(pk, b"manifesT", sig)
    assert key_id(sk.public_key()) == key_id(pk) and len(key_id(pk)) == 16


def test_two_keypairs_differ_and_do_not_verify_each_other(tmp_path: Path) -> None:
    a = new_keypair(tmp_path, "a")
    b = new_keypair(tmp_path, "b")
    sig = sign(load_private_key(a[0]), b"x")
    assert key_id(load_public_key(a[1])) != key_id(load_public_key(b[1]))
    assert not verify(load_public_key(b[1]), b"x", sig)


def test_existing_key_files_are_never_overwritten(tmp_path: Path) -> None:
    priv, pub = new_keypair(tmp_path)
    before = (priv.read_bytes(), pub.read_bytes())
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        new_keypair(tmp_path)
    pub.unlink()  # only the public one gone: still refused, the private key stays as it was
    with pytest.raises(KeyFileError, match=r"tympan\.key: already exists"):
        new_keypair(tmp_path)
    assert priv.read_bytes() == before[0]


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_bad_key_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError, match="key name"):
        new_keypair(tmp_path, name)


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    priv, _ = new_keypair(tmp_path)
    os.chmod(priv, 0o644)
    with pytest.raises(KeyFileError, match="too open"):
        load_private_key(priv)


def test_public_and_private_key_files_are_not_mixed_up(tmp_path: Path) -> None:
    priv, pub = new_keypair(tmp_path)
    for mode in (0o644, 0o600):  # as `keys new` writes it (0644): the kind is the problem, not the permissions
        os.chmod(pub, mode)
        with pytest.raises(KeyFileError, match="public key; signing needs the private key"):
            load_private_key(pub)
    with pytest.raises(KeyFileError, match="private key; give the public key"):
        load_public_key(priv)


def test_missing_garbage_and_non_ed25519_key_files_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    with pytest.raises(KeyFileError, match="no such public key file"):
        load_public_key(tmp_path / "nope.pub")
    junk = tmp_path / "junk.pub"
    junk.write_bytes(b"not a key\n")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(junk)
    ecpub = tmp_path / "ec.pub"
    ecpub.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="not an ed25519 public key"):
        load_public_key(ecpub)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_public_key(tmp_path)


def test_passphrase_protected_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    priv, pub = new_keypair(tmp_path)
    assert b"ENCRYPTED" in priv.read_bytes()
    assert verify(load_public_key(pub), b"m", sign(load_private_key(priv), b"m"))
    monkeypatch.setenv(PASSPHRASE_ENV, "wrong")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(priv)
    monkeypatch.delenv(PASSPHRASE_ENV)
    with pytest.raises(KeyFileError, match="encrypted; set"):
        load_private_key(priv)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=200), sig=st.binary(max_size=80))
def test_verify_never_raises_and_accepts_only_the_real_signature(data: bytes, sig: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sk = Ed25519PrivateKey.generate()
    assert verify(sk.public_key(), data, sign(sk, data))
    assert verify(sk.public_key(), data, sig) is (sig == sign(sk, data))  # ed25519 is deterministic


def test_cli_keys_new_and_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "new", "--out", str(tmp_path), "--name", "ops"]) == 0
    out = capsys.readouterr().out
    kid = key_id(load_public_key(tmp_path / "ops.pub"))
    assert kid in out
    assert main(["keys", "id", str(tmp_path / "ops.key")]) == 0
    assert capsys.readouterr().out.strip() == kid
    assert main(["keys", "new", "--out", str(tmp_path), "--name", "ops"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to overwrite" in err
