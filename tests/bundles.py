"""Helpers for the bundle, flash and OTA tests: keys, model copies, bundles built, re-signed and forged."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.bundle import MANIFEST, SIGNATURE, BuildSpec, build_bundle, canonical_json, pack_tar, read_members
from edge.inference import default_model_dir
from edge.keys import key_id, sign

CREATED = 1_790_000_000


def copy_model(
    dest: Path, model_id: str | None = None, edit_labels: Callable[[list[str]], list[str]] | None = None
) -> Path:
    """A copy of the shipped model directory; optionally with another id or altered label names."""
    shutil.copytree(default_model_dir(), dest)
    if model_id is not None:
        meta = json.loads((dest / "model.json").read_text())
        meta["id"] = model_id
        (dest / "model.json").write_text(json.dumps(meta, indent=1))
    if edit_labels is not None:
        with open(dest / "labels.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        names = edit_labels([r["display_name"] for r in rows])
        with open(dest / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "mid", "display_name"])
            for r, n in zip(rows, names, strict=True):
                w.writerow([r["index"], r["mid"], n])
    return dest


def build(key: Ed25519PrivateKey, model: str | Path | None = None, created: int = CREATED, **kw: object) -> bytes:
    spec = BuildSpec(model=str(model or default_model_dir()), board=str(kw.pop("board", "raspberry-pi-4")),
                     created=created, **kw)  # type: ignore[arg-type]  # fmt: skip
    return build_bundle(spec, key)


def resign(
    members: Mapping[str, bytes], key: Ed25519PrivateKey, edit: Callable[[dict], None] | None = None
) -> bytes:
    """Re-pack `members` with a manifest recomputed from them (after `edit`) and signed by `key`."""
    man = json.loads(members[MANIFEST])
    body = {n: b for n, b in members.items() if n not in (MANIFEST, SIGNATURE)}
    man["members"] = {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in sorted(body.items())}
    man["key_id"] = key_id(key.public_key())
    if edit is not None:
        edit(man)
    m = canonical_json(man)
    return pack_tar({MANIFEST: m, SIGNATURE: sign(key, m), **body}, CREATED)


def members_of(data: bytes) -> dict[str, bytes]:
    return read_members(data, "test")


def raw_tar(entries: list[tarfile.TarInfo], data: Mapping[str, bytes] | None = None) -> bytes:
    """A plain tar of hand-made entries (links, devices, odd names) for the malicious-archive tests."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for ti in entries:
            body = (data or {}).get(ti.name, b"")
            if ti.isreg():
                ti.size = len(body)
                tf.addfile(ti, io.BytesIO(body))
            else:
                tf.addfile(ti)
    return buf.getvalue()
