"""Outgoing message -> on-disk spool -> the same message, in order, until acknowledged (store and forward).

The device keeps its events here while the broker is away; the publisher removes each one after the
broker's PUBACK. Pure file I/O: nothing here knows MQTT.

Layout of a spool directory (one per device; a lock file keeps a second process out):

    0000000000000007.seg   append-only segment files, numbered in write order
    ack                    "SEG OFF": every record before offset OFF of segment SEG is acknowledged
    lock                   flock()ed while a process has the spool open

Record framing (little endian), 12-byte header then body:

    b"TS" | version u8 (=1) | flags u8 (bits 0-1 qos, bit 2 retain) | body_len u32 | crc32 u32
    body = topic_len u16 | topic (UTF-8) | payload

The CRC32 covers version, flags, body_len and the body, so a torn write (power lost mid-record), a
truncated file or flipped bits are detected; such a record is counted, logged and skipped, and the
reader resynchronises on the next valid header.

Durability (the fsync policy): `append` hands each record to the kernel in one `write()` on an
O_APPEND file and never fsyncs, so a crash of the process loses nothing and the audio side never
waits on the disk. `sync()` fsyncs the segments written since the last call (and the directory after
a segment was created or the cursor replaced) and persists the ack cursor; the publisher's sender
thread calls it once per second and on close, so a power cut loses at most the last second of records.
The ack cursor may lag the acknowledgements by that much, so after a crash a few records can be sent
twice (at least once; subscribers dedupe by device + `seq`), never lost.

Bound: the segment files never take more than `max_bytes` (default 64 MiB). When a record would not
fit, the oldest segment is deleted (each segment is at most 1/16 of the bound) and the unacknowledged
records it held are counted in `dropped` and logged: never silently.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from edge.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

MAGIC = b"TS"
VERSION = 1
_HEAD = struct.Struct("<2sBBII")  # magic, version, flags, body_len, crc32
_TOPIC_LEN = struct.Struct("<H")
HEADER_BYTES = _HEAD.size
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MIN_MAX_BYTES = 16 * 1024
SEGMENTS_PER_BOUND = 16
SEG_SUFFIX = ".seg"
ACK_FILE = "ack"
LOCK_FILE = "lock"

Position = tuple[int, int]  # (segment number, byte offset): totally ordered in write order


def default_spool_dir(device_id: str) -> Path:
    """`$XDG_STATE_HOME/tympan/spool/<device>` (default `~/.local/state/tympan/spool/<device>`)."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in device_id) or "_"
    return Path(state) / "tympan" / "spool" / safe


@dataclass(frozen=True)
class SpoolRecord:
    """One message as stored. `pos` orders records and names one for `ack`."""

    pos: Position
    topic: str
    qos: int
    retain: bool
    payload: bytes


@dataclass(frozen=True)
class _Loc:
    pos: Position
    size: int  # framed size in bytes


def encode_record(topic: str, qos: int, retain: bool, payload: bytes) -> bytes:
    """The framed bytes of one record (header + body)."""
    t = topic.encode("utf-8")
    if len(t) > 0xFFFF:
        raise ConfigError(f"topic {topic[:40]!r}...: longer than 65535 bytes")
    if qos not in (0, 1, 2):
        raise ConfigError(f"qos {qos!r}: must be 0, 1 or 2")
    flags = qos | (4 if retain else 0)
    body = _TOPIC_LEN.pack(len(t)) + t + payload
    crc = zlib.crc32(body, zlib.crc32(struct.pack("<BBI", VERSION, flags, len(body))))
    return _HEAD.pack(MAGIC, VERSION, flags, len(body), crc) + body


def _decode_at(buf: bytes, off: int, limit: int) -> tuple[int, str, int, bool, bytes] | None:
    """(framed size, topic, qos, retain, payload) of a valid record at `off`, else None."""
    if off + HEADER_BYTES > len(buf):
        return None
    magic, version, flags, n, crc = _HEAD.unpack_from(buf, off)
    if magic != MAGIC or version != VERSION or flags & ~7 or n < _TOPIC_LEN.size or n > limit:
        return None
    end = off + HEADER_BYTES + n
    if end > len(buf):
        return None
    body = buf[off + HEADER_BYTES : end]
    if zlib.crc32(body, zlib.crc32(struct.pack("<BBI", version, flags, n))) != crc:
        return None
    (tn,) = _TOPIC_LEN.unpack_from(body)
    if _TOPIC_LEN.size + tn > n:
        return None
    try:
        topic = body[_TOPIC_LEN.size : _TOPIC_LEN.size + tn].decode("utf-8")
    except UnicodeDecodeError:
        return None
    return end - off, topic, flags & 3, bool(flags & 4), body[_TOPIC_LEN.size + tn :]


class Spool:
    """A bounded, crash-safe FIFO of (topic, qos, retain, payload) records in a directory.

    `append` adds at the tail; `peek` reads unacknowledged records in order (optionally only those
    after a position already handed out); `ack` removes the oldest one. Thread-safe: the audio side
    appends while a sender thread peeks and acks. Counters: `dropped` (oldest records deleted because
    the spool was full, this run) and `corrupt` (torn or damaged records skipped while opening).
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < MIN_MAX_BYTES:
            raise ConfigError(f"spool max_bytes={max_bytes!r}: must be at least {MIN_MAX_BYTES}")
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = max_bytes // SEGMENTS_PER_BOUND
        self.dropped = 0
        self.corrupt = 0
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one sync() at a time; taken before _lock
        self._unsynced: list[int] = []  # fds of full segments not yet fsynced
        self._locs: list[_Loc] = []  # unacknowledged records, in order, from index _head
        self._head = 0
        self._seg_sizes: dict[int, int] = {}  # segment number -> file size (every segment on disk)
        self._read_fds: dict[int, int] = {}
        self._ack_dirty = False
        self._dir_dirty = False
        self._closed = False
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise ConfigError(f"spool {str(self.dir)!r}: cannot create ({e.strerror})") from None
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._lock_fd)
                raise ConfigError(f"spool {str(self.dir)!r}: in use by another process") from None
        self._load()
        self._active = max(self._seg_sizes, default=-1) + 1  # never append after a possibly torn tail
        self._active_fd = -1

    # --- opening -------------------------------------------------------------------------------
    def _seg_path(self, n: int) -> Path:
        return self.dir / f"{n:016d}{SEG_SUFFIX}"

    def _read_ack(self) -> Position:
        try:
            a, b = (self.dir / ACK_FILE).read_text().split()
            return int(a), int(b)
        except (OSError, ValueError):
            return (-1, 0)

    def _load(self) -> None:
        segs = sorted(int(p.name[: -len(SEG_SUFFIX)]) for p in self.dir.glob("*" + SEG_SUFFIX)
                      if p.name[: -len(SEG_SUFFIX)].isdigit())  # fmt: skip
        cursor = self._read_ack()
        for n in segs:
            path = self._seg_path(n)
            if n < cursor[0]:
                path.unlink(missing_ok=True)
                continue
            buf = path.read_bytes()
            start = cursor[1] if n == cursor[0] else 0
            kept = self._scan(n, buf, start)
            if kept == 0:
                path.unlink(missing_ok=True)
            else:
                self._seg_sizes[n] = len(buf)
        if self.corrupt:
            log.warning("spool %s: skipped %d torn or damaged record(s)", self.dir, self.corrupt)
        if self._locs:
            log.info("spool %s: %d undelivered record(s) from an earlier run", self.dir, len(self._locs))

    def _scan(self, seg: int, buf: bytes, start: int) -> int:
        """Index the valid records of one segment from `start`; returns how many were kept."""
        off, kept, bad = start, 0, False
        while off < len(buf):
            rec = _decode_at(buf, off, self.max_bytes)
            if rec is None:
                if not bad:
                    self.corrupt += 1
                    bad = True
                nxt = buf.find(MAGIC, off + 1)
                off = len(buf) if nxt < 0 else nxt
                continue
            bad = False
            self._locs.append(_Loc((seg, off), rec[0]))
            kept += 1
            off += rec[0]
        return kept

    # --- writing -------------------------------------------------------------------------------
    def append(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Position:
        """Store one record at the tail (one write() to the kernel); drops the oldest ones if full."""
        frame = encode_record(topic, qos, retain, payload)
        if len(frame) > self.segment_bytes:
            raise ConfigError(
                f"spool record of {len(frame)} bytes: larger than a spool segment ({self.segment_bytes} bytes)"
            )
        with self._lock:
            self._check_open()
            self._make_room(len(frame))
            if self._active_fd < 0 or self._seg_sizes.get(self._active, 0) + len(frame) > self.segment_bytes:
                self._rotate()
            off = self._seg_sizes[self._active]
            try:
                written = os.write(self._active_fd, frame)
            except OSError as e:
                raise ConfigError(f"spool {str(self.dir)!r}: write failed ({e.strerror})") from None
            if written != len(frame):  # a short write (disk full): the tail is torn; start afresh
                self._seg_sizes[self._active] = off + written
                self._rotate()
                raise ConfigError(f"spool {str(self.dir)!r}: short write ({written} of {len(frame)} bytes)")
            self._seg_sizes[self._active] = off + len(frame)
            pos = (self._active, off)
            self._locs.append(_Loc(pos, len(frame)))
            return pos

    def _rotate(self) -> None:
        if self._active_fd >= 0:
            if self._seg_sizes.get(self._active, 0) > 0:
                self._unsynced.append(self._active_fd)  # fsynced and closed by the next sync()
            else:
                os.close(self._active_fd)
            if self._seg_sizes.get(self._active, 0) == 0:
                self._seg_path(self._active).unlink(missing_ok=True)
                self._seg_sizes.pop(self._active, None)
            self._active += 1
        path = self._seg_path(self._active)
        self._active_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self._seg_sizes[self._active] = 0
        self._dir_dirty = True

    def _make_room(self, n: int) -> None:
        dropped = 0
        while sum(self._seg_sizes.values()) + n > self.max_bytes:
            oldest = min(self._seg_sizes)
            if oldest == self._active:
                self._rotate()
            dropped += self._drop_segment(oldest)
        if dropped:
            self.dropped += dropped
            self._ack_dirty = True
            log.warning(
                "spool %s full (%d bytes): dropped the %d oldest undelivered record(s); %d dropped this run",
                self.dir, self.max_bytes, dropped, self.dropped,
            )  # fmt: skip

    def _drop_segment(self, seg: int) -> int:
        """Delete one segment; returns how many unacknowledged records went with it."""
        i = bisect.bisect_left(self._locs, (seg + 1, 0), lo=self._head, key=lambda loc: loc.pos)
        n = i - self._head
        self._head = i
        self._forget_segment(seg)
        self._compact()
        return n

    def _forget_segment(self, seg: int) -> None:
        fd = self._read_fds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        self._seg_sizes.pop(seg, None)
        self._seg_path(seg).unlink(missing_ok=True)

    def _compact(self) -> None:
        if self._head > 4096 and self._head * 2 > len(self._locs):
            del self._locs[: self._head]
            self._head = 0

    # --- reading and acknowledging -------------------------------------------------------------
    def peek(self, limit: int, after: Position | None = None) -> list[SpoolRecord]:
        """Up to `limit` unacknowledged records in order (only those after `after` if given)."""
        with self._lock:
            self._check_open()
            i = self._head
            if after is not None:
                i = bisect.bisect_right(self._locs, after, lo=self._head, key=lambda loc: loc.pos)
            return [self._read(loc) for loc in self._locs[i : i + max(0, limit)]]

    def _read(self, loc: _Loc) -> SpoolRecord:
        seg, off = loc.pos
        fd = self._read_fds.get(seg)
        if fd is None:
            fd = self._read_fds[seg] = os.open(self._seg_path(seg), os.O_RDONLY)
        buf = os.pread(fd, loc.size, off)
        rec = _decode_at(buf, 0, self.max_bytes)
        if rec is None:  # the file changed under us: nothing sane to return
            raise ConfigError(f"spool {str(self.dir)!r}: record at {seg}:{off} no longer readable")
        _, topic, qos, retain, payload = rec
        return SpoolRecord(loc.pos, topic, qos, retain, payload)

    def ack(self, pos: Position) -> bool:
        """Remove the oldest record, which must be at `pos`. False if it was already dropped or acked."""
        with self._lock:
            self._check_open()
            if self._head >= len(self._locs) or pos < self._locs[self._head].pos:
                return False
            if pos != self._locs[self._head].pos:
                raise ValueError(f"spool ack {pos}: not the oldest record {self._locs[self._head].pos}")
            self._head += 1
            self._ack_dirty = True
            seg = pos[0]
            nxt = self._locs[self._head].pos[0] if self._head < len(self._locs) else None
            if nxt != seg and seg != self._active:
                self._forget_segment(seg)  # every record of it is acknowledged
            self._compact()
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._locs) - self._head

    @property
    def disk_bytes(self) -> int:
        with self._lock:
            return sum(self._seg_sizes.values())

    # --- durability ----------------------------------------------------------------------------
    def sync(self) -> None:
        """fsync what was appended (and the directory if it changed); persist the ack cursor.

        The fsyncs run outside the lock that `append` takes, so appending never waits on the disk.
        """
        with self._sync_lock:
            with self._lock:
                if self._closed:
                    return
                fds, cursor, dir_dirty = self._sync_plan()
            self._sync_run(fds, cursor, dir_dirty)

    def _sync_plan(self) -> tuple[list[tuple[int, bool]], Position | None, bool]:
        """Under the lock: which fds to fsync (and whether to close them), the cursor to persist."""
        fds = [(fd, True) for fd in self._unsynced]
        self._unsynced = []
        if self._active_fd >= 0:
            fds.append((os.dup(self._active_fd), True))
        cursor: Position | None = None
        if self._ack_dirty:
            if self._head < len(self._locs):
                cursor = self._locs[self._head].pos
            else:  # everything acknowledged: the cursor is the tail of the segment being written
                cursor = (self._active, self._seg_sizes.get(self._active, 0))
            self._ack_dirty = False
        dir_dirty = self._dir_dirty or cursor is not None
        self._dir_dirty = False
        return fds, cursor, dir_dirty

    def _sync_run(self, fds: list[tuple[int, bool]], cursor: Position | None, dir_dirty: bool) -> None:
        for fd, close in fds:
            try:
                os.fsync(fd)
            finally:
                if close:
                    os.close(fd)
        if cursor is not None:
            tmp = self.dir / (ACK_FILE + ".tmp")
            with open(tmp, "w") as f:
                f.write(f"{cursor[0]} {cursor[1]}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / ACK_FILE)
        if dir_dirty:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def close(self) -> None:
        with self._sync_lock, self._lock:
            if self._closed:
                return
            self._sync_run(*self._sync_plan())
            for fd in self._read_fds.values():
                os.close(fd)
            self._read_fds.clear()
            if self._active_fd >= 0:
                os.close(self._active_fd)
                if self._seg_sizes.get(self._active, 0) == 0:
                    self._seg_path(self._active).unlink(missing_ok=True)
            os.close(self._lock_fd)  # releases the flock
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(f"spool {str(self.dir)!r}: already closed")

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
