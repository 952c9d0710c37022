"""The store-and-forward spool: order, acknowledgement, restart, bound, torn and damaged records."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.spool import HEADER_BYTES, SEG_SUFFIX, Spool, default_spool_dir, encode_record


def _payloads(sp: Spool, n: int = 10_000) -> list[bytes]:
    return [r.payload for r in sp.peek(n)]


def _drain(sp: Spool, n: int) -> list[bytes]:
    out = []
    for r in sp.peek(n):
        out.append(r.payload)
        assert sp.ack(r.pos)
    return out


def test_fifo_peek_ack_and_fields(tmp_path: Path) -> None:
    with Spool(tmp_path / "s") as sp:
        for i in range(5):
            sp.append(f"t/{i}", f"p{i}".encode(), qos=i % 2, retain=i == 3)
        recs = sp.peek(10)
        assert [(r.topic, r.payload, r.qos, r.retain) for r in recs] == [
            (f"t/{i}", f"p{i}".encode(), i % 2, i == 3) for i in range(5)
        ]
        assert [r.payload for r in sp.peek(2, after=recs[1].pos)] == [b"p2", b"p3"]
        assert sp.ack(recs[0].pos) and not sp.ack(recs[0].pos)  # a second ack is a no-op
        with pytest.raises(ValueError, match="not the oldest"):
            sp.ack(recs[2].pos)
        assert len(sp) == 4 and _payloads(sp)[0] == b"p1"


def test_restart_delivers_unacknowledged_in_order(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d) as sp:
        for i in range(100):
            sp.append("t", str(i).encode())
        assert _drain(sp, 30) == [str(i).encode() for i in range(30)]
    with Spool(d) as sp:  # a new process: the 70 unacknowledged, in order, then new ones after them
        assert _payloads(sp) == [str(i).encode() for i in range(30, 100)]
        sp.append("t", b"new")
        assert _drain(sp, 1000)[-1] == b"new"
        assert len(sp) == 0
    with Spool(d) as sp:
        assert len(sp) == 0
    assert not list(d.glob("*" + SEG_SUFFIX)) or all(p.stat().st_size == 0 for p in d.glob("*" + SEG_SUFFIX))


def test_records_appended_after_everything_was_acked_survive(tmp_path: Path) -> None:
    """Regression: an all-acked cursor must not point past records appended later in the same segment."""
    d = tmp_path / "s"
    sp = Spool(d)
    sp.append("t", b"a")
    _drain(sp, 1)
    sp.sync()
    sp.append("t", b"b")
    sp.close()
    with Spool(d) as sp2:
        assert _payloads(sp2) == [b"b"]


def test_bounded_spool_drops_oldest_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    max_bytes = 64 * 1024
    payload = bytes(200)
    n = 2000  # ~430 KB through a 64 KiB spool
    with caplog.at_level(logging.WARNING, logger="edge.spool"), Spool(tmp_path / "s", max_bytes=max_bytes) as sp:
        for i in range(n):
            sp.append("t", i.to_bytes(4, "big") + payload)
            assert sp.disk_bytes <= max_bytes
        kept = [int.from_bytes(p[:4], "big") for p in _payloads(sp)]
        assert sp.dropped > 0 and sp.dropped + len(kept) == n
        assert kept == list(range(sp.dropped, n))  # the newest survive, contiguous, in order
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_dropped_record_ack_is_ignored(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", max_bytes=16 * 1024) as sp:
        first = sp.append("t", b"x" * 100)
        for _ in range(400):
            sp.append("t", b"y" * 100)
        assert sp.dropped > 0
        assert sp.ack(first) is False


def test_torn_final_record_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "s"
    with Spool(d) as sp:
        for i in range(3):
            sp.append("t", f"r{i}".encode())
    seg = max(d.glob("*" + SEG_SUFFIX))
    with open(seg, "ab") as f:  # power lost in the middle of the fourth record
        f.write(encode_record("t", 1, False, b"r3-torn")[:-3])
    with caplog.at_level(logging.WARNING, logger="edge.spool"), Spool(d) as sp:
        assert _payloads(sp) == [b"r0", b"r1", b"r2"]
        assert sp.corrupt == 1
        sp.append("t", b"r4")  # appends go to a fresh segment, never after the torn tail
        assert _payloads(sp) == [b"r0", b"r1", b"r2", b"r4"]
    assert "torn" in caplog.text
    with Spool(d) as sp:
        assert _payloads(sp) == [b"r0", b"r1", b"r2", b"r4"]


def test_damaged_record_in_the_middle_is_skipped_and_reader_resyncs(tmp_path: Path) -> None:
    d = tmp_path / "s"
    with Spool(d) as sp:
        for i in range(5):
            sp.append("t", f"rec{i}".encode())
    seg = max(d.glob("*" + SEG_SUFFIX))
    buf = bytearray(seg.read_bytes())
    size = len(encode_record("t", 1, False, b"rec0"))
    buf[2 * size + HEADER_BYTES + 3] ^= 0xFF  # flip a byte inside record 2's body
    seg.write_bytes(bytes(buf))
    with Spool(d) as sp:
        assert _payloads(sp) == [b"rec0", b"rec1", b"rec3", b"rec4"]
        assert sp.corrupt == 1


def test_rejects_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_bytes"):
        Spool(tmp_path / "a", max_bytes=1000)
    with Spool(tmp_path / "b", max_bytes=16 * 1024) as sp:
        with pytest.raises(ConfigError, match="larger than a spool segment"):
            sp.append("t", bytes(5000))
        with pytest.raises(ConfigError, match="qos"):
            sp.append("t", b"", qos=3)
        with pytest.raises(ConfigError, match="in use"):
            Spool(tmp_path / "b")  # one process per spool
    sp.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        sp.append("t", b"")


def test_default_dir_is_per_device_and_safe(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_spool_dir("kitchen/1") == tmp_path / "tympan" / "spool" / "kitchen_1"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert str(default_spool_dir("d")).endswith(os.path.join(".local", "state", "tympan", "spool", "d"))
