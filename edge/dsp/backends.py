"""The DSP backend registry: one numpy reference per kernel, accelerated backends slot in by name.

    @register("numpy", "srp_map")
    def srp_map(...): ...

    kernel = get("srp_map", backend="native")   # falls back if the backend lacks the kernel

A backend never replaces the reference; every backend is tested against it within stated tolerances
(tests/test_backends.py). Backends:

- `numpy`: the reference (the test oracle), always present.
- `native`: C kernels with SIMD (`edge/dsp/native/`), registered when its library loads or builds.
- `tinygrad`: tinygrad tensors (CPU through clang, CUDA on a Jetson or a GPU box), registered when the
  `tinygrad` package is installed (`pip install tympan[gpu]`); device from `TYMPAN_TINYGRAD_DEVICE`.

Which backend runs (`resolve`): an explicit choice (a CLI flag), else `$TYMPAN_DSP_BACKEND`, else the
board profile's `dsp_backend`, else `auto` (native where it loaded, else numpy). An explicit or
environment choice that is not available is an error; a board's preference that is not available only
warns and falls back to `auto`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from edge.errors import ConfigError

log = logging.getLogger(__name__)

REFERENCE = "numpy"
AUTO = "auto"
ENV_VAR = "TYMPAN_DSP_BACKEND"
KNOWN_BACKENDS = ("numpy", "native", "tinygrad")
KERNELS = (
    "stft",
    "stft_int16",
    "logmel_from_spectra",
    "logmel_batch",
    "phat_cross_spectra",
    "onset_weights",
    "cross_blocks",
    "gcc",
    "srp_map",
    "srp_refine",
    "srp_peaks",
    "nb_vote",
    "cover_scores",
    "vote_hist",
    "frame_power",
    "ring_accumulate",
    "leq_dbfs",
    "dc_block",
)

_registry: dict[str, dict[str, Callable[..., Any]]] = {}
_unavailable: dict[str, str] = {}  # backend -> why it is not registered
_loaded = False
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
    from edge.dsp import dcblock, gcc_phat, level, pcm, reference, rings, srp_phat  # noqa: F401


def _load_native() -> None:
    from edge.dsp import native

    try:
        kernels = native.kernels()
    except native.NativeUnavailable as e:
        _unavailable["native"] = str(e)
        log.warning("native DSP backend unavailable, the numpy reference runs instead: %s", e)
        return
    for name, fn in kernels.as_dict().items():
        register("native", name)(fn)


def _load_tinygrad() -> None:
    if importlib.util.find_spec("tinygrad") is None:
        _unavailable["tinygrad"] = "the tinygrad package is not installed (pip install 'tympan[gpu]')"
        return
    import edge.dsp.tinygrad_backend as tinygrad_backend

    for name, fn in tinygrad_backend.KERNELS.items():
        register("tinygrad", name)(fn)


def _load() -> None:
    global _loaded
    _load_reference()
    if not _loaded:
        _loaded = True
        _load_native()
        _load_tinygrad()


def backends() -> list[str]:
    """The backends available in this process."""
    _load()
    return sorted(_registry)


def unavailable() -> dict[str, str]:
    """Known backends that are not available here, with the reason."""
    _load()
    return dict(_unavailable)


def _check_name(name: str, origin: str) -> None:
    if name != AUTO and name not in KNOWN_BACKENDS:
        raise ConfigError(f"{origin}: unknown DSP backend {name!r}; known: {', '.join((AUTO, *KNOWN_BACKENDS))}")


def resolve(requested: str | None = None, board_preference: str | None = None) -> str:
    """The backend to run: `requested` (CLI) > $TYMPAN_DSP_BACKEND > `board_preference` > auto."""
    _load()
    env = os.environ.get(ENV_VAR) or None
    for name, origin in ((requested, "requested"), (env, ENV_VAR)):
        if name is None:
            continue
        _check_name(name, origin)
        if name == AUTO:
            break
        if name not in _registry:
            raise ConfigError(f"{origin}: DSP backend {name!r} is not available: {_unavailable.get(name, '?')}")
        return name
    else:
        if board_preference is not None and board_preference != AUTO:
            _check_name(board_preference, "board profile")
            if board_preference in _registry:
                return board_preference
            log.warning(
                "the board profile prefers the %r DSP backend, which is not available (%s); using %s",
                board_preference,
                _unavailable.get(board_preference, "?"),
                "native" if "native" in _registry else REFERENCE,
            )
    return "native" if "native" in _registry else REFERENCE


def get(kernel: str, backend: str = REFERENCE) -> Callable[..., Any]:
    """The implementation of `kernel` in `backend`; where it has none, the native one (where native
    loaded: tinygrad's batch kernels leave the streaming ones such as `nb_vote` to the CPU, and native is
    the fast CPU path), else the numpy reference."""
    _load()
    if kernel not in KERNELS:
        raise ValueError(f"unknown DSP kernel {kernel!r}; kernels: {', '.join(KERNELS)}")
    if backend == AUTO:
        backend = resolve(AUTO)
    if backend not in _registry:
        why = _unavailable.get(backend)
        if why is not None:
            raise ConfigError(f"DSP backend {backend!r} is not available: {why}")
        raise ConfigError(f"unknown DSP backend {backend!r}; available: {', '.join(sorted(_registry))}")
    impl = _registry[backend].get(kernel)
    if impl is None:
        fallback = "native" if kernel in _registry.get("native", {}) else REFERENCE
        log.debug("backend %r has no %r kernel; using the %s one", backend, kernel, fallback)
        impl = _registry[fallback][kernel]
    return impl
