"""A firmware image -> the companion MCU's inactive slot, verified, switched to and proven running.

    flash_serial(port, image, version=...) -> FlashResult

1. The image is checked (a `firmware_bridge.image` header must be self-consistent and carry
   `version`); a bare body is wrapped in a header first (`wrap=True`).
2. HELLO, then BOOT_STATUS: if the running slot already holds exactly this image, nothing is sent.
3. FLASH_STATUS (what the MCU holds from an earlier, interrupted transfer), then FLASH_BEGIN: the MCU
   keeps a partial transfer of the same image and answers with the offset it has; chunks go from there.
4. FLASH_VERIFY (the MCU hashes the slot), FLASH_COMMIT (mark the slot to try, reboot).
5. The MCU's bootloader runs its self-test: HELLO is polled until it answers, then BOOT_STATUS must
   show the new slot running this image's SHA-256. A failed self-test leaves the old slot running
   (rolled back) and raises FlashError saying so.

When the link fails at any point (no answer after every retry, the port vanishing during a power
cycle), the port is closed, opened again (waiting up to `reconnect_s` for it to come back) and the
transfer resumes from the offset the MCU reports. Either the new image ends verified and running, or
the old one keeps running intact: slots are only switched by a verified COMMIT.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.errors import InputError
from firmware_bridge import image as fwimage
from firmware_bridge import protocol as P
from firmware_bridge.client import BridgeClient
from firmware_bridge.errors import FlashError, LinkError, NakError

log = logging.getLogger(__name__)

RECONNECT_S = 30.0
"""How long to keep trying to reopen a port that went away (a power cycle, a USB re-enumeration)."""
MAX_RECONNECTS = 20
MAX_HASH_RESTARTS = 2
"""A slot that hashes wrong is sent again from the start at most this often."""


@dataclass(frozen=True)
class FlashResult:
    """How a flash went. `resumed_from`: the offset the MCU already held when the last pass of the
    transfer began (0: sent from the start); `bytes_sent`: image bytes put on the line, all passes;
    `reconnects`: how often the link was lost and the port reopened; `unchanged`: the image was
    already running and nothing was sent."""

    port: str
    version: str
    previous_version: str
    slot: int
    size: int
    sha256: str
    bytes_sent: int
    resumed_from: int
    reconnects: int
    retries: int
    elapsed_s: float
    unchanged: bool = False

    @property
    def slot_name(self) -> str:
        return P.slot_name(self.slot)


def prepare_image(
    image: bytes, version: str, *, wrap: bool = True, check: bool = True, origin: str = "firmware image"
) -> bytes:
    """The bytes to send: `image` checked against `version`, or a bare body wrapped in a header.
    Errors name `origin` (the image's file, where it came from one).

    `check=False` sends an image with a header as it is (to test an MCU's self-test and rollback).
    """
    if not image:
        raise InputError(f"{origin}: empty (0 bytes)")
    if fwimage.has_header(image):
        if not check:
            return image
        head = fwimage.check_image(image, origin)
        if head.version != version:
            raise InputError(f"{origin}: says version {head.version!r}, expected {version!r}")
        return image
    if not wrap:
        raise InputError(f"{origin}: has no TYFW header (wrap=False)")
    return fwimage.build_image(image, version)


class _Session:
    """One flash_serial call: the state that survives reconnects."""

    def __init__(
        self,
        port: str,
        data: bytes,
        version: str,
        progress: Callable[[int, int], None] | None,
        make_client: Callable[[], BridgeClient],
        chunk_size: int,
    ) -> None:
        self.port = port
        self.data = data
        self.version = version
        self.sha = hashlib.sha256(data).digest()
        self.progress = progress
        self.make_client = make_client
        self.chunk_size = chunk_size
        self.committed_slot: int | None = None
        self.previous_version = ""
        self.resumed_from: int | None = None
        self.bytes_sent = 0
        self.retries = 0
        self.hash_restarts = 0
        self.slot = -1
        self.force = False
        self.unchanged = False
        self.committed_at = 0.0
        self.boots_before = 0
        self.boot_timeout_s = P.BOOT_TIMEOUT_S

    def open(self, deadline: float | None) -> BridgeClient:
        """A client with a completed HELLO, retrying until `deadline` (the port may be coming back);
        None: one try (the first connection: a wrong port or a silent MCU fails at once)."""
        last: Exception | None = None
        while True:
            client = self.make_client()
            try:
                client.open()
                return client
            except LinkError as e:
                last = e
                self.retries += client.stats.retries
                client.close()
                if deadline is None:
                    raise
            if time.monotonic() >= deadline:
                raise LinkError(f"{self.port}: the MCU did not come back ({last})")
            time.sleep(0.1)

    def running_this(self, status: P.BootStatus) -> bool:
        run = status.running
        return run.valid and run.size == len(self.data) and run.sha256 == self.sha

    def attempt(self, client: BridgeClient) -> bool:
        """Drive the update as far as it goes on one connection; True once the new image runs."""
        status = client.boot_status()
        if self.committed_slot is not None and status.boot_count == self.boots_before:
            staged = client.flash_status()
            if staged.state == P.FlashState.VERIFIED and staged.sha256 == self.sha:
                log.info("%s: the COMMIT never arrived; sending it again", self.port)
                self.committed_slot = None  # the verified transfer is still there: BEGIN/VERIFY/COMMIT again
        if self.committed_slot is not None:
            return self.check_boot(status)
        self.boots_before = status.boot_count
        if self.running_this(status) and not self.force:
            self.unchanged = True
            self.slot = status.active_slot
            self.previous_version = status.running.version
            return True
        if not self.previous_version:
            self.previous_version = status.running.version
        staged = client.flash_status()
        if staged.state != P.FlashState.IDLE and staged.sha256 == self.sha:
            log.info("%s: MCU holds %d of %d bytes of this image; resuming", self.port, staged.offset, staged.size)
        slot, offset, max_chunk = client.flash_begin(len(self.data), self.sha, self.version)
        self.slot = slot
        self.resumed_from = offset
        chunk = max(1, min(self.chunk_size, max_chunk))
        size = len(self.data)
        while offset < size:
            piece = self.data[offset : offset + chunk]
            try:
                nxt = client.flash_chunk(offset, piece)
            except NakError as e:
                if e.code != P.Nak.BAD_OFFSET:
                    raise
                log.info("%s: MCU expects offset %d, not %d", self.port, e.detail, offset)
                offset = e.detail
                continue
            self.bytes_sent += len(piece)
            offset = nxt
            if self.progress is not None:
                self.progress(offset, size)
        try:
            digest = client.flash_verify(size)
        except NakError as e:
            if e.code != P.Nak.HASH_MISMATCH or self.hash_restarts >= MAX_HASH_RESTARTS:
                raise
            self.hash_restarts += 1
            log.warning("%s: slot %s did not verify; sending the image again", self.port, P.slot_name(slot))
            return False
        if digest != self.sha:
            raise FlashError(f"{self.port}: MCU verified a different SHA-256 ({digest.hex()[:16]}...)")
        self.committed_slot = slot
        self.committed_at = time.monotonic()
        client.flash_commit(slot)
        return False  # the MCU reboots now: the next connection checks what it booted

    def check_boot(self, status: P.BootStatus) -> bool:
        slot = self.committed_slot
        assert slot is not None
        if status.boot_count == self.boots_before:  # not reset yet: what it says is from before COMMIT
            if time.monotonic() > self.committed_at + self.boot_timeout_s:
                raise FlashError(
                    f"{self.port}: the MCU did not reboot within {self.boot_timeout_s:g} s of the switch to slot "
                    f"{P.slot_name(slot)}; slot {P.slot_name(status.active_slot)} runs {status.running.version!r}"
                )
            return False
        if self.running_this(status):
            return True
        if status.tried_slot == slot and status.boot_result in (P.BootResult.ROLLED_BACK, P.BootResult.NO_IMAGE):
            running = status.running
            now = (
                f"slot {P.slot_name(status.active_slot)} runs {running.version!r}"
                if running.valid
                else "no valid image runs (recovery mode)"
            )
            raise FlashError(
                f"{self.port}: firmware {self.version} failed its boot self-test in slot {P.slot_name(slot)}; "
                f"the MCU rolled back: {now}"
            )
        if status.slots[slot].sha256 != self.sha or not status.slots[slot].valid:
            raise FlashError(
                f"{self.port}: after the switch slot {P.slot_name(slot)} does not hold firmware {self.version}; "
                f"slot {P.slot_name(status.active_slot)} runs {status.running.version!r}"
            )
        raise FlashError(
            f"{self.port}: the MCU rebooted but does not run slot {P.slot_name(slot)}; "
            f"slot {P.slot_name(status.active_slot)} runs {status.running.version!r}"
        )


def flash_serial(
    port: str,
    image: bytes,
    *,
    version: str,
    progress: Callable[[int, int], None] | None = None,
    baud: int = P.DEFAULT_BAUD,
    chunk_size: int = P.DEFAULT_CHUNK,
    ack_timeout: float = P.ACK_TIMEOUT_S,
    retries: int = P.RETRIES,
    reconnect_s: float = RECONNECT_S,
    max_reconnects: int = MAX_RECONNECTS,
    boot_timeout_s: float = P.BOOT_TIMEOUT_S,
    wrap: bool = True,
    check: bool = True,
    force: bool = False,
    origin: str = "firmware image",
) -> FlashResult:
    """Flash `image` (firmware `version`) to the MCU on `port`; see the module docstring.

    `origin` names the image in errors. `progress(done, total)` is called after each chunk. `force`:
    flash even when the running slot already holds this image. `check=False`: send an image with a
    header unchecked. Raises FlashError (a DeviceError) when the update cannot be completed; its
    message says what the MCU runs. InputError for a bad image.
    """
    if not 1 <= chunk_size <= P.MAX_CHUNK:
        raise InputError(f"chunk size {chunk_size!r}: must be 1-{P.MAX_CHUNK} bytes")
    data = prepare_image(image, version, wrap=wrap, check=check, origin=origin)
    if len(data) > 0xFFFFFFFF:
        raise InputError(f"firmware image of {len(data)} bytes is too large")

    def make_client() -> BridgeClient:
        return BridgeClient(port, baud=baud, ack_timeout=ack_timeout, retries=retries)

    s = _Session(port, data, version, progress, make_client, chunk_size)
    s.force = force
    s.boot_timeout_s = boot_timeout_s
    start = time.monotonic()
    reconnects = 0
    deadline: float | None = None
    while True:
        try:
            client = s.open(deadline)
        except LinkError as e:
            if deadline is None:
                raise  # never connected: a wrong port or a silent MCU; nothing was changed
            raise FlashError(_gave_up(s, str(e))) from None
        try:
            if s.attempt(client):
                return _result(s, start, reconnects)
        except NakError as e:
            raise FlashError(f"{e}; {_where(s)}") from None
        except LinkError as e:
            log.warning("%s: link lost (%s); reopening to resume", port, e)
            if s.committed_slot is None:
                reconnects += 1
        finally:
            s.retries += client.stats.retries
            client.close()
        if reconnects > max_reconnects:
            raise FlashError(_gave_up(s, f"the link failed {reconnects} times"))
        # after a COMMIT the MCU reboots: give it boot_timeout_s; otherwise reconnect_s per outage
        deadline = time.monotonic() + (boot_timeout_s if s.committed_slot is not None else reconnect_s)
        time.sleep(P.REBOOT_DELAY_S if s.committed_slot is not None else 0.05)


def _where(s: _Session) -> str:
    if s.committed_slot is not None:
        return f"firmware {s.version} was committed to slot {P.slot_name(s.committed_slot)}"
    return f"the running firmware ({s.previous_version or 'unknown'}) was not changed"


def _gave_up(s: _Session, why: str) -> str:
    return f"{s.port}: flashing {s.version} failed: {why}; {_where(s)}; run the same command again to resume"


def _result(s: _Session, start: float, reconnects: int) -> FlashResult:
    return FlashResult(
        port=s.port,
        version=s.version,
        previous_version=s.previous_version,
        slot=s.committed_slot if s.committed_slot is not None else s.slot,
        size=len(s.data),
        sha256=s.sha.hex(),
        bytes_sent=s.bytes_sent,
        resumed_from=s.resumed_from or 0,
        reconnects=reconnects,
        retries=s.retries,
        elapsed_s=time.monotonic() - start,
        unchanged=s.unchanged,
    )
