"""Device config file (JSON) -> validated `DeviceConfig`: the listener settings a bundle carries.

    {"site": "home", "threshold_scale": 1.0, "block_ms": 100, "level_every": 1.0,
     "runtime": "auto", "threads": 1, "latency": "balanced"}

Every key is optional (the default is `tympan listen`'s); unknown keys are refused, so a typo never
falls back to a default silently. Bounds are those of the `listen` flags.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from edge.errors import ConfigError

RUNTIMES = ("auto", "litert", "onnxruntime")
MAX_CONFIG_BYTES = 65536


@dataclass(frozen=True)
class DeviceConfig:
    site: str = "default"
    threshold_scale: float = 1.0  # (0, 10]
    block_ms: float = 100.0  # [1, 10000]
    level_every: float = 1.0  # >= 0 s; 0: never
    runtime: str = "auto"
    threads: int = 1  # [1, 64]
    latency: str = "balanced"  # edge.pipeline.LATENCY_MODES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(origin: str, key: str, v: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{origin}: {key!r} must be a finite number, got {v!r}")
    if (v <= lo if lo_open else v < lo) or v > hi:
        raise ConfigError(f"{origin}: {key!r} = {v!r} is out of bounds ({'(' if lo_open else '['}{lo}, {hi}])")
    return float(v)


def config_from_dict(d: Any, origin: str) -> DeviceConfig:
    """Validate a parsed config; `origin` names the file in errors."""
    if not isinstance(d, dict):
        raise ConfigError(f"{origin}: a device config is a JSON object, got {type(d).__name__}")
    known = {f.name for f in fields(DeviceConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(
            f"{origin}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}"
        )
    kw: dict[str, Any] = {}
    if "site" in d:
        from edge.errors import TokenError
        from edge.token_codec import check_name

        try:
            kw["site"] = check_name("site", d["site"])
        except TokenError as e:
            raise ConfigError(f"{origin}: {e}") from None
    if "threshold_scale" in d:
        kw["threshold_scale"] = _num(origin, "threshold_scale", d["threshold_scale"], 0.0, 10.0, lo_open=True)
    if "block_ms" in d:
        kw["block_ms"] = _num(origin, "block_ms", d["block_ms"], 1.0, 10000.0)
    if "level_every" in d:
        kw["level_every"] = _num(origin, "level_every", d["level_every"], 0.0, 86400.0)
    if "runtime" in d:
        if d["runtime"] not in RUNTIMES:
            raise ConfigError(f"{origin}: 'runtime' = {d['runtime']!r}; choose from {', '.join(RUNTIMES)}")
        kw["runtime"] = d["runtime"]
    if "threads" in d:
        v = d["threads"]
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 64:
            raise ConfigError(f"{origin}: 'threads' must be an integer in [1, 64], got {v!r}")
        kw["threads"] = v
    if "latency" in d:
        from edge.pipeline import LATENCY_MODES

        if d["latency"] not in LATENCY_MODES:
            raise ConfigError(f"{origin}: 'latency' = {d['latency']!r}; choose from {', '.join(LATENCY_MODES)}")
        kw["latency"] = d["latency"]
    return DeviceConfig(**kw)


def parse_config(data: bytes, origin: str) -> DeviceConfig:
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{origin}: {len(data)} bytes is too large for a device config")
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{origin}: not valid JSON ({e})") from None
    return config_from_dict(d, origin)


def load_config(path: str) -> DeviceConfig:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the device config ({e.strerror})") from None
    return parse_config(data, path)
