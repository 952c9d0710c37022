"""MQTT URL -> `MqttTarget`: `mqtt://[user[:pass]@]host[:port]` (default port 1883) or `mqtts://...` (8883).

User name and password are percent-decoded (`p%40ss` is `p@ss`). A password missing from the URL is
taken from the environment variable `TYMPAN_MQTT_PASSWORD` when the URL names a user, so it need not
appear in a process list.
`redact(url)` gives the form to log: the password is never printed. `check_tls_files` checks the CA
bundle and client certificate files of a TLS connection before paho loads them, naming the bad one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from edge.errors import MqttError

PASSWORD_ENV = "TYMPAN_MQTT_PASSWORD"
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True)
class MqttTarget:
    """Where and how to connect. `password` is never part of `repr()` or `label`."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    transport: Literal["tcp"] = "tcp"

    def __repr__(self) -> str:
        pw = None if self.password is None else "***"
        return (
            f"MqttTarget(host={self.host!r}, port={self.port}, tls={self.tls}, username={self.username!r}, "
            f"password={pw!r}, transport={self.transport!r})"
        )

    @property
    def label(self) -> str:
        """`mqtt[s]://[user@]host:port`, for messages and logs (no password)."""
        scheme = "mqtts" if self.tls else "mqtt"
        user = "" if self.username is None else f"{self.username}@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """Parse and validate an MQTT URL; every problem is an `MqttError` that quotes the (redacted) URL."""
    shown = redact(url)
    try:
        parts = urlsplit(url.strip())
    except ValueError as e:
        raise MqttError(f"{shown!r}: not a valid MQTT URL ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise MqttError(
            f"{shown!r}: scheme must be mqtt:// or mqtts://, got {parts.scheme + '://' if parts.scheme else 'none'}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttError(f"{shown!r}: an MQTT URL has no path, query or fragment (topics come from --site/--device-id)")
    host = parts.hostname
    if not host:
        raise MqttError(f"{shown!r}: no host (expected {scheme}://HOST[:PORT])")
    try:
        port = parts.port
    except ValueError:
        raise MqttError(f"{shown!r}: port must be a number in 1..65535") from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise MqttError(f"{shown!r}: empty port (expected {scheme}://HOST[:PORT])")
        port = DEFAULT_PORTS[scheme]
    elif not 1 <= port <= 65535:
        raise MqttError(f"{shown!r}: port {port} out of range 1..65535")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if username == "":
        raise MqttError(f"{shown!r}: empty user name before '@'")
    if password is None and username is not None:
        password = os.environ.get(PASSWORD_ENV) or None
    return MqttTarget(host=host, port=port, tls=scheme == "mqtts", username=username, password=password)


def redact(url: str) -> str:
    """The URL with any password replaced by `***` (for logs and error messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{tail}"


def check_tls_files(label: str, ca: str | None = None, cert: str | None = None, key: str | None = None) -> None:
    """Raise MqttError naming the file and its option when a TLS file given for `label` (the broker) is
    missing, unreadable or not what it should be: `ca` a PEM CA bundle, `cert` + `key` a client certificate
    and its private key (both or neither). paho's own errors name no file ("No such file or directory")."""
    import ssl

    given = [("--mqtt-ca", ca), ("--mqtt-cert", cert), ("--mqtt-key", key)]
    for option, path in given:
        if path is None:
            continue
        if not os.path.isfile(path):
            why = "is a directory" if os.path.isdir(path) else "no such file"
            raise MqttError(f"{label}: {option} {path}: {why}")
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise MqttError(f"{label}: {option} {path}: cannot be read ({e.strerror or e})") from None
    if (cert is None) != (key is None):
        raise MqttError(f"{label}: a TLS client certificate needs both --mqtt-cert and --mqtt-key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, ValueError) as e:
            raise MqttError(f"{label}: --mqtt-ca {ca}: not a PEM CA certificate bundle ({e})") from None
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(certfile=cert, keyfile=key)
        except (ssl.SSLError, ValueError) as e:
            raise MqttError(
                f"{label}: --mqtt-cert {cert} / --mqtt-key {key}: not a PEM certificate and its private key ({e})"
            ) from None


def add_ca_option(parser: Any) -> None:
    """`--mqtt-ca FILE` (alias `--cafile`, dest `cafile`) on a command that connects to a broker."""
    parser.add_argument(
        "--mqtt-ca",
        "--cafile",
        dest="cafile",
        metavar="FILE",
        help="CA certificate(s) to trust for mqtts:// (default: the system's)",
    )
