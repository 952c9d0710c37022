"""Signed bundle -> installed A/B slot (self-tested, atomic, rolled back on failure); OTA over MQTT.

On-device layout of the OTA directory (`--ota-dir`):

    slots/a/  slots/b/    two extracted bundles (manifest.json, manifest.sig, model/, board/, config.json, ...)
    current -> slots/a    symlink to the slot in use; switched by an atomic rename of a new symlink
    .lock                 flock held while installing (the listener and `tympan bundle install` share it)

Installing (`OtaStore.install`): verify the signature and every member (edge/bundle.py), refuse a bundle
older than the installed one (downgrade) unless allowed, extract into a staging directory, run the
self-test (edge/selftest.py) on the staged model, then move the staging directory into the slot not in
use and switch `current` to it. A bundle that fails its self-test is discarded and `current` is left
alone: that is the rollback. After the switch the installed slot is verified again from disk; if that
fails (a bad write), `current` is switched back. At start `OtaStore.current()` verifies the slot in use
and falls back to the other slot if it does not verify.

MQTT (`OtaAgent`): the listener subscribes to `tympan/v1/<site>/<device>/ota` (QoS 1, persistent
session, so a bundle sent while the device is away arrives when it returns; a retained bundle is
recognised as already installed). The payload is the bundle file itself, at most
`Limits.max_archive_bytes` (64 MiB; the broker's own `message_size_limit` may be lower). Progress and
the result go to `.../ota/status` as JSON:

    {"v": 1, "dev": ID, "t": epoch s, "state": STATE, "detail": str, "bundle": {...} | null}

STATE is one of received, verifying, selftest, installing (progress, not retained) and installed,
unchanged, rejected, rolled_back, failed (the result, retained). After `installed` the listener stops
so that its service manager restarts it on the new model (`restart_requested`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.bundle import (
    ARRAY_JSON,
    DEFAULT_LIMITS,
    MODEL_DIR,
    Bundle,
    BundleError,
    Limits,
    extract,
    verify_bundle,
    verify_members,
)
from edge.device_config import DeviceConfig
from edge.errors import ConfigError, TympanError

log = logging.getLogger(__name__)

SLOTS = ("a", "b")
CURRENT = "current"
LOCK = ".lock"
STATUS_VERSION = 1
PROGRESS_STATES = ("received", "verifying", "selftest", "installing")
RESULT_STATES = ("installed", "unchanged", "rejected", "rolled_back", "failed")

Progress = Callable[[str, str, "Bundle | None"], None]


@dataclass(frozen=True)
class Installed:
    """The verified bundle in one slot of the OTA directory."""

    slot: str
    dir: Path
    bundle: Bundle

    @property
    def model_dir(self) -> str:
        return str(self.dir / MODEL_DIR)

    @property
    def array_path(self) -> str:
        return str(self.dir / ARRAY_JSON)

    @property
    def config(self) -> DeviceConfig:
        return self.bundle.config


@dataclass(frozen=True)
class InstallResult:
    state: str  # one of RESULT_STATES
    detail: str
    bundle: Bundle | None = None
    installed: Installed | None = None

    @property
    def ok(self) -> bool:
        return self.state in ("installed", "unchanged")


def bundle_info(b: Bundle | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"version": b.version, "created": b.created, "model_id": b.model_id, "identity": b.identity,
            "board": b.board, "array": b.array}  # fmt: skip


def _read_slot(slot_dir: Path, limits: Limits) -> dict[str, bytes]:
    """Every regular file under an installed slot, refusing links and anything over the limits."""
    out: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(slot_dir, followlinks=False):
        for d in dirnames:
            if (Path(dirpath) / d).is_symlink():
                raise BundleError(f"{slot_dir}: {Path(dirpath) / d} is a symlink")
        for f in filenames:
            p = Path(dirpath) / f
            st = p.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{slot_dir}: {p} is not a regular file")
            total += st.st_size
            if len(out) >= limits.max_members or total > limits.max_total_bytes:
                raise BundleError(f"{slot_dir}: more files or bytes than a bundle may hold")
            out[p.relative_to(slot_dir).as_posix()] = p.read_bytes()
    return out


class OtaStore:
    """The A/B slots of one device's OTA directory; `public_key` is the only key it trusts."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        public_key: Ed25519PublicKey,
        *,
        limits: Limits = DEFAULT_LIMITS,
        runtime: str = "auto",
        allow_downgrade: bool = False,
        selftest: Callable[[str, str | None, tuple[str, ...], str], Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.public_key = public_key
        self.limits = limits
        self.runtime = runtime
        self.allow_downgrade = allow_downgrade
        if selftest is None:
            from edge.selftest import run_selftest

            selftest = run_selftest
        self._selftest = selftest
        try:
            (self.root / "slots").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--ota-dir {self.root}: cannot create ({e.strerror})") from None
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"--ota-dir {self.root}: not writable")

    # --- reading -------------------------------------------------------------------------------
    def slot_dir(self, slot: str) -> Path:
        return self.root / "slots" / slot

    def current_slot(self) -> str | None:
        link = self.root / CURRENT
        if not link.is_symlink():
            return None
        target = os.readlink(link)
        slot = Path(target).name
        return slot if slot in SLOTS and target == f"slots/{slot}" else None

    def load_slot(self, slot: str) -> Installed:
        """The slot's bundle, verified from disk (signature and every member hash)."""
        d = self.slot_dir(slot)
        if not d.is_dir() or d.is_symlink():
            raise BundleError(f"{d}: no installed bundle")
        b = verify_members(_read_slot(d, self.limits), self.public_key, str(d), "")
        return Installed(slot, d, b)

    def current(self) -> Installed | None:
        """The bundle in use, verified; if it does not verify, the other slot's (switched to) or an error."""
        slot = self.current_slot()
        if slot is None:
            return None
        try:
            return self.load_slot(slot)
        except BundleError as e:
            other = SLOTS[1 - SLOTS.index(slot)]
            try:
                prev = self.load_slot(other)
            except BundleError:
                raise BundleError(f"{self.root}: installed bundle does not verify ({e}); no fallback") from None
            log.error("%s: slot %s does not verify (%s); rolled back to slot %s (%s)", self.root, slot, e, other,
                      prev.bundle.version)  # fmt: skip
            with self._locked():
                if self.current_slot() == slot:  # unless an install switched it meanwhile
                    self._switch(other)
            return prev

    # --- installing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _fsync_dir(self, d: Path) -> None:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _switch(self, slot: str) -> None:
        """Point `current` at `slot` atomically (a new symlink renamed over the old one)."""
        tmp = self.root / f".{CURRENT}.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"slots/{slot}", tmp)
        os.replace(tmp, self.root / CURRENT)
        self._fsync_dir(self.root)

    def rollback(self) -> Installed:
        """Switch `current` to the other slot, if that holds a bundle that verifies."""
        with self._locked():
            slot = self.current_slot()
            if slot is None:
                raise BundleError(f"{self.root}: nothing installed to roll back from")
            other = SLOTS[1 - SLOTS.index(slot)]
            prev = self.load_slot(other)
            self._switch(other)
            return prev

    def install(self, data: bytes, origin: str = "bundle", progress: Progress | None = None) -> InstallResult:
        """Verify, self-test and install a bundle; never raises for a bad bundle (see `InstallResult`)."""

        def say(state: str, detail: str, b: Bundle | None = None) -> None:
            if progress is not None:
                progress(state, detail, b)

        say("verifying", f"{len(data)} bytes")
        try:
            bundle = verify_bundle(data, self.public_key, origin, self.limits)
        except TympanError as e:
            return InstallResult("rejected", str(e))
        with self._locked():
            return self._install_locked(bundle, say)

    def _install_locked(self, bundle: Bundle, say: Callable[[str, str, Bundle | None], None]) -> InstallResult:
        slot = self.current_slot()
        cur: Installed | None = None
        if slot is not None:
            try:
                cur = self.load_slot(slot)
            except BundleError as e:
                log.warning("%s: the slot in use does not verify (%s); installing over the other one", self.root, e)
        if cur is not None and cur.bundle.identity == bundle.identity:
            return InstallResult("unchanged", f"bundle {bundle.version} is already installed", bundle, cur)
        if cur is not None and bundle.created < cur.bundle.created and not self.allow_downgrade:
            return InstallResult(
                "rejected",
                f"{bundle.origin}: bundle {bundle.version} (created {bundle.created}) is older than the installed "
                f"{cur.bundle.version} (created {cur.bundle.created}); downgrade refused",
                bundle,
            )
        if slot is None:
            target = SLOTS[0]
        elif cur is None:  # the slot in use is damaged: replace it, keep the other as the fallback
            target = slot
        else:
            target = SLOTS[1 - SLOTS.index(slot)]
        kept = "kept the installed bundle" if cur is not None else "nothing installed"
        staging = self.root / "slots" / f".{target}.staging"
        if staging.is_symlink() or staging.is_file():
            staging.unlink()
        elif staging.exists():
            shutil.rmtree(staging)
        try:
            extract(bundle, staging)
            st = bundle.manifest.get("selftest")
            clip = None if st is None else str(staging / st["clip"])
            labels = () if st is None else tuple(st["labels"])
            say("selftest", "clip " + (st["clip"] if st else "sample scene"), bundle)
            res = self._selftest(str(staging / MODEL_DIR), clip, labels, bundle.config.runtime)
            if not res.passed:
                return InstallResult("rolled_back", f"self-test failed: {res.detail}; {kept}", bundle, cur)
            say("installing", f"slot {target}", bundle)
            final = self.slot_dir(target)
            if final.is_symlink() or final.is_file():
                final.unlink()
            elif final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
            self._fsync_dir(final.parent)
            self._switch(target)
        except OSError as e:
            why = f"{self.root}: install failed ({e.strerror or e}); {kept}"
            return InstallResult("failed", why, bundle, cur)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        try:
            now = self.load_slot(target)
        except BundleError as e:  # written wrong: go back to what ran before
            if slot is not None and cur is not None:
                self._switch(slot)
            return InstallResult("rolled_back", f"installed bundle does not verify from disk ({e})", bundle, cur)
        return InstallResult("installed", f"slot {target}: {res.detail}", bundle, now)


def apply_installed(args: Any, inst: Installed) -> None:
    """Fill `tympan listen` options from the installed bundle where the command line left the default."""
    if args.model is None:
        args.model = inst.model_dir
    if args.board is None and args.array is None:
        args.array = inst.array_path
    defaults = DeviceConfig().to_dict()  # the listen flags' defaults
    for key, value in inst.config.to_dict().items():
        if getattr(args, key) == defaults[key]:
            setattr(args, key, value)


def listen_ota_store(args: Any) -> OtaStore | None:
    """`tympan listen --ota-dir DIR --ota-pubkey KEY`: the store, with `args` filled from its bundle."""
    if args.ota_dir is None:
        if args.ota_pubkey is not None:
            raise ConfigError("--ota-pubkey needs --ota-dir DIR")
        return None
    if args.ota_pubkey is None:
        raise ConfigError("--ota-dir needs --ota-pubkey KEY (the key bundles must be signed with)")
    from edge.keys import load_public_key

    store = OtaStore(args.ota_dir, load_public_key(args.ota_pubkey))
    inst = store.current()
    if inst is None:
        log.warning("%s: no bundle installed yet; running %s", store.root, args.model or "the bundled model")
    else:
        log.info("%s: running bundle %s (slot %s, model %s)", store.root, inst.bundle.version, inst.slot,
                 inst.bundle.model_id)  # fmt: skip
        apply_installed(args, inst)
    return store


def start_listen_agent(args: Any, store: OtaStore, target: Any) -> OtaAgent:
    from edge.publish import TlsFiles

    tls = TlsFiles(args.mqtt_ca, args.mqtt_cert, args.mqtt_key) if (args.mqtt_ca or args.mqtt_cert) else None
    return OtaAgent(store, target, args.device_id, args.site, tls=tls).start()


# --- MQTT ----------------------------------------------------------------------------------------
class OtaAgent:
    """Receives bundles on `.../ota`, installs them through an `OtaStore`, reports on `.../ota/status`."""

    def __init__(
        self,
        store: OtaStore,
        target: Any,
        device_id: str,
        site: str = "default",
        *,
        tls: Any = None,
        keepalive_s: int = 30,
    ) -> None:
        from edge.publish import topic_base

        self.store = store
        self.target = target
        self.device_id = device_id
        base = topic_base(site, device_id)
        self.topic = f"{base}/ota"
        self.status_topic = f"{base}/ota/status"
        self.max_bytes = store.limits.max_archive_bytes
        self.restart_requested = threading.Event()
        self.results: list[InstallResult] = []
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._client = self._make_client(tls, keepalive_s)
        self._keepalive = keepalive_s
        self._subscribed = threading.Event()
        self._worker: threading.Thread | None = None

    def _make_client(self, tls: Any, keepalive_s: int) -> Any:
        import ssl

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tympan-{self.device_id}-ota", clean_session=False)
        if self.target.username is not None:
            c.username_pw_set(self.target.username, self.target.password)
        if self.target.tls or tls is not None:
            from edge.mqtt_url import check_tls_files

            check_tls_files(
                self.target.label, getattr(tls, "ca", None), getattr(tls, "cert", None), getattr(tls, "key", None)
            )
            try:
                c.tls_set(ca_certs=getattr(tls, "ca", None), certfile=getattr(tls, "cert", None),
                          keyfile=getattr(tls, "key", None), cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
            except (OSError, ssl.SSLError, ValueError) as e:
                from edge.errors import MqttError

                raise MqttError(f"{self.target.label}: TLS setup failed ({e})") from None
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        return c

    def start(self, wait_s: float = 5.0) -> OtaAgent:
        """Connect in the background (retrying) and subscribe; waits up to `wait_s` for the subscription."""
        self._worker = threading.Thread(target=self._work, name=f"tympan-ota-{self.device_id}", daemon=True)
        self._worker.start()
        self._client.connect_async(self.target.host, self.target.port, keepalive=self._keepalive)
        self._client.loop_start()
        if not self._subscribed.wait(wait_s):
            log.warning("%s: OTA topic not subscribed yet (broker unreachable?); retrying", self.target.label)
        return self

    def close(self) -> None:
        self._queue.put(None)
        if self._worker is not None:
            self._worker.join()
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> OtaAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    def until_restart(self, blocks: Iterable[Any]) -> Iterator[Any]:
        """`blocks`, stopping after the first block that ends after an installed update."""
        it = iter(blocks)
        try:
            for b in it:
                yield b
                if self.restart_requested.is_set():
                    log.warning("OTA: a new bundle is installed; stopping so the service restarts on it")
                    return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    # --- paho's thread -------------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            log.error("%s: OTA connection refused (%s)", self.target.label, rc.getName())
            return
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._subscribed.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic != self.topic:
            return
        n = len(msg.payload)
        if n == 0:  # clearing a retained bundle
            return
        if n > self.max_bytes:
            self._status("rejected", f"OTA payload of {n} bytes is over the limit of {self.max_bytes}", None, True)
            return
        self._status("received", f"{n} bytes", None, False)
        self._queue.put(bytes(msg.payload))

    # --- the worker thread ---------------------------------------------------------------------
    def _status(self, state: str, detail: str, b: Bundle | None, final: bool) -> None:
        msg = {"v": STATUS_VERSION, "dev": self.device_id, "t": round(time.time(), 3), "state": state,
               "detail": detail, "bundle": bundle_info(b)}  # fmt: skip
        (log.warning if state in ("rejected", "rolled_back", "failed") else log.info)("OTA %s: %s", state, detail)
        self._client.publish(self.status_topic, json.dumps(msg, separators=(",", ":")), qos=1, retain=final)

    def _work(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                return
            try:
                res = self.store.install(
                    data, origin=f"OTA bundle on {self.topic}",
                    progress=lambda s, d, b: self._status(s, d, b, False),
                )  # fmt: skip
            except Exception as e:  # the listener keeps running whatever one update did
                log.exception("OTA install failed")
                res = InstallResult("failed", f"{type(e).__name__}: {e}")
            self.results.append(res)
            if res.state == "installed":
                self.restart_requested.set()
            self._status(res.state, res.detail, res.bundle, res.state != "unchanged")
