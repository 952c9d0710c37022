"""A real mosquitto broker for tests: started on a free loopback port, stopped and restarted on demand.

    with Mosquitto(tmp_path) as broker:          # anonymous
        broker.url                                # "mqtt://127.0.0.1:PORT"
        broker.stop(); broker.start()            # same port, same config (a broker outage)
    Mosquitto(tmp_path, users={"dev": "secret"})  # password file, anonymous refused

`max_queued_messages 0` (no limit): mosquitto's default of 1000 silently drops QoS 1 messages queued
for an offline persistent session, which would hide exactly the losses the tests look for.
Persistence is on (in tmp) so a restarted broker keeps retained messages and persistent sessions.
Tests that need it skip when no mosquitto binary is installed (`scripts/setup.sh test` installs it).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest


def mosquitto_binary() -> str:
    for c in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if c and os.access(c, os.X_OK):
            return c
    pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    def __init__(self, workdir: Path, users: dict[str, str] | None = None, port: int | None = None) -> None:
        self.binary = mosquitto_binary()
        self.dir = Path(workdir) / f"mosquitto-{os.getpid()}-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.port = port or free_port()
        self.users = users or {}
        lines = [
            f"listener {self.port} 127.0.0.1",
            # started as root, mosquitto drops to user `mosquitto`, which cannot read a private tmp dir
            f"user {getpass.getuser()}",
            "max_queued_messages 0",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"log_dest file {self.dir / 'mosquitto.log'}",
            "log_type all",
        ]
        if self.users:
            pw = self.dir / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines += ["allow_anonymous true"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        self._proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = (self.dir / "mosquitto.log").read_text() if (self.dir / "mosquitto.log").exists() else ""
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
