"""The DSP backend registry: one numpy reference per kernel, accelerated backends slot in by name.

    @register("numpy", "srp_map")
    def srp_map(...): ...

    kernel = get("srp_map", backend="native")   # falls back to the numpy reference if missing

A backend never replaces the reference; every backend is tested against it within stated tolerances.
Board profiles name the backend they prefer (`dsp_backend`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from edge.errors import ConfigError

log = logging.getLogger(__name__)

REFERENCE = "numpy"
KERNELS = ("stft", "logmel_from_spectra", "phat_cross_spectra", "gcc", "srp_map")

_registry: dict[str, dict[str, Callable[..., Any]]] = {}
F = TypeVar("F", bound=Callable[..., Any])


def register(backend: str, kernel: str) -> Callable[[F], F]:
    if kernel not in KERNELS:
        raise ValueError(f"unknown DSP kernel {kernel!r}; kernels: {', '.join(KERNELS)}")

    def deco(fn: F) -> F:
        _registry.setdefault(backend, {})[kernel] = fn
        return fn

    return deco


def _load_reference() -> None:
    # Importing the reference modules registers their kernels.
    from edge.dsp import gcc_phat, reference, srp_phat  # noqa: F401


def backends() -> list[str]:
    _load_reference()
    return sorted(_registry)


def get(kernel: str, backend: str = REFERENCE) -> Callable[..., Any]:
    """The implementation of `kernel` in `backend`, or the numpy reference where it has none."""
    _load_reference()
    if backend not in _registry:
        raise ConfigError(f"unknown DSP backend {backend!r}; available: {', '.join(sorted(_registry))}")
    impl = _registry[backend].get(kernel)
    if impl is None:
        log.debug("backend %r has no %r kernel; using the numpy reference", backend, kernel)
        impl = _registry[REFERENCE][kernel]
    return impl
