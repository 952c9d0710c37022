#!/usr/bin/env python3
"""Bundle size and device-side cost: Tympan's signed tar.gz against plain tar and zip containers.

Builds the shipped model's bundle (model + board/array profiles + config) and, side by side in one run,
the same members as a plain tar (no compression) and a zip (deflate, what e.g. a naive `.zip` bundle
would use). For each: bytes on the wire (the OTA payload), and the CPU time (median of repeats,
`time.process_time`) to read every member with Tympan's bounded reader (tar) or `zipfile` and hash
them. Then the stages of one OTA install on the device: verify (signature + hashes), extract,
self-test. Writes `benchmarks/results/bundle.md` and `.json`.

    .venv/bin/python benchmarks/bench_bundle.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.bench import median_cpu as median_time  # a warm-up run, then the median of process CPU time
from edge.bundle import MANIFEST, SIGNATURE, BuildSpec, build_bundle, extract, read_members, verify_bundle
from edge.inference import default_model_dir
from edge.selftest import run_selftest

HERE = os.path.dirname(os.path.abspath(__file__))



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    spec = BuildSpec(model=default_model_dir(), board="raspberry-pi-4", created=1_790_000_000)
    t = time.process_time()
    tgz = build_bundle(spec, key)
    build_s = time.process_time() - t
    members = read_members(tgz, "bench")
    raw_total = sum(len(b) for b in members.values())
    plain = io.BytesIO()
    import tarfile

    with tarfile.open(fileobj=plain, mode="w:", format=tarfile.PAX_FORMAT) as tf:
        for n, b in members.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(b)
            tf.addfile(ti, io.BytesIO(b))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for n, b in members.items():
            zf.writestr(n, b)

    def hash_all(m: dict[str, bytes]) -> None:
        for n, b in m.items():
            if n not in (MANIFEST, SIGNATURE):
                hashlib.sha256(b).digest()

    def read_zip(data: bytes) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            hash_all({i.filename: zf.read(i) for i in zf.infolist()})

    rows = []
    readers: tuple[tuple[str, bytes, Callable[[bytes], None]], ...] = (
        ("tar.gz (Tympan)", tgz, lambda d: hash_all(read_members(d, "b"))),
        ("tar", plain.getvalue(), lambda d: hash_all(read_members(d, "b"))),
        ("zip (deflate 9)", zbuf.getvalue(), read_zip),
    )
    for name, data, reader in readers:
        ms = 1000 * median_time(lambda: reader(data), args.repeats)  # noqa: B023 (called at once)
        rows.append({"container": name, "bytes": len(data), "ratio": round(len(data) / raw_total, 3),
                     "read_hash_ms": round(ms, 2)})  # fmt: skip

    pub = key.public_key()
    verify_ms = 1000 * median_time(lambda: verify_bundle(tgz, pub), args.repeats)
    bun = verify_bundle(tgz, pub)
    tmp = tempfile.mkdtemp()
    try:
        count = [0]

        def ex() -> None:
            count[0] += 1
            extract(bun, os.path.join(tmp, str(count[0])))

        extract_ms = 1000 * median_time(ex, args.repeats)
        model_dir = os.path.join(tmp, "1", "model")
        selftest_ms = 1000 * median_time(lambda: run_selftest(model_dir), max(3, args.repeats // 2))
    finally:
        shutil.rmtree(tmp)
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "members": len(members),
        "member_bytes": raw_total,
        "build_s": round(build_s, 3),
        "containers": rows,
        "ota_stages_ms": {
            "verify": round(verify_ms, 1),
            "extract": round(extract_ms, 1),
            "selftest": round(selftest_ms, 1),
        },
        "repeats": args.repeats,
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "bundle.json"), "w") as f:
        json.dump(result, f, indent=1)
    lines = [
        "# Bundle size and device-side cost",
        "",
        f"`benchmarks/bench_bundle.py`, {result['machine']}, Python {result['python']}; CPU time "
        f"(process_time), median of {args.repeats}. Shared, noisy machine: compare rows of one run only.",
        "",
        f"The shipped model's bundle: {len(members)} members, {raw_total} bytes uncompressed "
        f"(built and signed in {build_s:.2f} s).",
        "",
        "| container | bytes (OTA payload) | / members | read + sha256 all (ms) |",
        "|---|---:|---:|---:|",
        *(f"| {r['container']} | {r['bytes']} | {r['ratio']} | {r['read_hash_ms']} |" for r in rows),
        "",
        "One OTA install on this machine: "
        + f"verify {verify_ms:.1f} ms, extract {extract_ms:.1f} ms, selftest {selftest_ms:.1f} ms"
        + " (self-test: load the model, tag the sample scene's three sources).",
        "",
    ]
    with open(os.path.join(HERE, "results", "bundle.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
