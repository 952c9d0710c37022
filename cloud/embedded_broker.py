"""An embedded MQTT 3.1.1 broker (amqtt) on a free loopback port, for `tympan demo` and quick trials.

It runs its own asyncio loop in a daemon thread; `start()` returns once it accepts connections and
`stop()` shuts it down cleanly. For anything beyond a demo use a real broker (mosquitto, EMQX, ...).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import warnings
from types import TracebackType
from typing import Any

from edge.errors import MqttError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise MqttError("the embedded broker needs amqtt (pip install amqtt); or give --mqtt URL") from None
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as e:  # reported to the caller of start()
                self._error = e
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="tympan-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise MqttError(f"embedded broker did not start on port {self.port} within {timeout_s} s")
        if self._error is not None:
            raise MqttError(f"embedded broker on port {self.port} failed to start: {self._error}") from None
        return self  # Broker.start() returns once its listeners accept connections

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None:
            return
        if broker is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(broker.shutdown(), loop).result(10)
            except Exception as e:  # a broker that fails to shut down must not hide the caller's result
                logging.getLogger(__name__).warning("embedded broker shutdown: %s", e)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if not loop.is_running():
            loop.close()
        self._loop = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
