"""Board and microphone-array profiles: JSON file -> validated, frozen `ArrayProfile` / `BoardProfile`.

Hardware is data: every geometry lives in a JSON file under `boards/arrays/` (or a user's own file),
every board in `boards/boards/`. This module only reads, validates and resolves them; it never
hard-codes a geometry.

Array file (`--array FILE`), keys beyond `name` and `mics` optional:

    name          str                   profile name (a bundled file is named `<name>.json`)
    mics          [[x, y, z], ...]      metres, relative to the array centre, x/y in the board plane, z up
    sample_rate   int Hz                rate to open the device at (default: the pipeline rate, 16 kHz)
    channels      int                   channels the device delivers (default: number of mics)
    channel_map   [int, ...]            for each mic in `mics` order, the device channel carrying it
                                        (default: identity)
    device_match  str | null            substring of the ALSA/PortAudio device name
    geometry      "linear" | "planar" | "3d"   derived from `mics`; checked if given
    doa_band_hz   [lo, hi]              band suggested for localisation (default 300-6000 Hz)
    description, source, notes   str

Board file: `name, description, cpu, arch, cores, memory_gb, accelerator, dsp_backend, model_runtime,
default_array, source` (all required) and `notes` (optional).

Every problem is raised as `ProfileError` naming the file, the key and the bad value. Unknown keys are
rejected, so a typo never falls back to a default silently.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import KNOWN_BACKENDS
from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import ProfileError

if TYPE_CHECKING:  # importlib.resources.abc is 3.11+; only the annotations need it
    from importlib.resources.abc import Traversable

F64 = npt.NDArray[np.float64]
Kind = Literal["board", "array"]

SPEED_OF_SOUND_M_S = 343.0
"""Speed of sound used for spatial-aliasing figures (dry air at about 20 degC)."""

DEFAULT_SAMPLE_RATE = SAMPLE_RATE
DEFAULT_DOA_BAND_HZ = (300.0, 6000.0)
COINCIDENT_M = 1e-3
"""Two mics closer than this are taken as one position written twice."""
MAX_APERTURE_M = 1.0
"""A larger array is almost surely written in mm or cm instead of metres."""
GEOMETRY_TOL_M = 1e-3
"""Extent along a principal axis below which the array counts as flat in that direction."""

GEOMETRIES = ("linear", "planar", "3d")
ARCHES = ("aarch64", "x86_64")
DSP_BACKENDS = KNOWN_BACKENDS  # edge.dsp.backends: numpy, native, tinygrad
MODEL_RUNTIMES = ("litert", "onnxruntime")

_ARRAY_REQUIRED = ("name", "mics")
_ARRAY_OPTIONAL = (
    "description",
    "sample_rate",
    "channels",
    "channel_map",
    "device_match",
    "geometry",
    "doa_band_hz",
    "source",
    "notes",
)
_BOARD_REQUIRED = (
    "name",
    "description",
    "cpu",
    "arch",
    "cores",
    "memory_gb",
    "accelerator",
    "dsp_backend",
    "model_runtime",
    "default_array",
    "source",
)
_BOARD_OPTIONAL = ("notes",)
_DIRS: dict[Kind, str] = {"board": "boards", "array": "arrays"}


@dataclass(frozen=True, eq=False)
class ArrayProfile:
    """A validated microphone array. `mics`: float64 [n_mics, 3], metres, read-only.

    `channel_map[i]` is the device channel that carries mic `i`; `channels` is how many channels the
    device delivers (it may carry more than the mics: a processed beam, a playback loopback).
    """

    name: str
    mics: F64
    sample_rate: int
    channels: int
    channel_map: tuple[int, ...]
    device_match: str | None
    geometry: str
    doa_band_hz: tuple[float, float]
    description: str
    source: str
    path: str | None = None
    notes: str = ""

    def __post_init__(self) -> None:
        mics = np.array(self.mics, dtype=np.float64)
        if mics.ndim != 2 or mics.shape[1] != 3 or mics.shape[0] < 2:
            raise ValueError(f"mics must be float [n_mics >= 2, 3], got shape {mics.shape}")
        mics.setflags(write=False)
        object.__setattr__(self, "mics", mics)
        object.__setattr__(self, "channel_map", tuple(int(c) for c in self.channel_map))
        lo, hi = self.doa_band_hz
        object.__setattr__(self, "doa_band_hz", (float(lo), float(hi)))

    @property
    def n_mics(self) -> int:
        return int(self.mics.shape[0])

    @cached_property
    def distances_m(self) -> F64:
        """Pairwise mic distances, float64 [n_mics, n_mics], metres (read-only)."""
        distances = _pairwise(self.mics)
        distances.setflags(write=False)
        return distances

    @property
    def aperture_m(self) -> float:
        """Largest distance between two mics."""
        return float(self.distances_m.max())

    @property
    def min_spacing_m(self) -> float:
        """Smallest distance between two mics."""
        upper = self.distances_m[np.triu_indices(self.n_mics, k=1)]
        return float(upper.min())

    @property
    def spatial_alias_hz(self) -> float:
        """c / (2 d_min): above this frequency the closest pair's phase difference wraps."""
        return SPEED_OF_SOUND_M_S / (2.0 * self.min_spacing_m)

    def to_dict(self) -> dict[str, Any]:
        """The profile in the array-file schema (`array_from_dict(p.to_dict(), ...)` gives it back)."""
        return {
            "name": self.name,
            "description": self.description,
            "mics": self.mics.tolist(),
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "channel_map": list(self.channel_map),
            "device_match": self.device_match,
            "geometry": self.geometry,
            "doa_band_hz": list(self.doa_band_hz),
            "source": self.source,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class BoardProfile:
    """A compute board and the array it ships with (`default_array`, a bundled array name)."""

    name: str
    description: str
    cpu: str
    arch: str
    cores: int
    memory_gb: float
    accelerator: str | None
    dsp_backend: str
    model_runtime: str
    default_array: str
    source: str
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# Public API


def load_array(name_or_path: str) -> ArrayProfile:
    """A bundled array by name (`respeaker-4mic-hat`) or an array JSON file by path."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        return array_from_dict(_read_json_file(path), str(path), path=str(path))
    index = _index()
    found = index.get(name_or_path)
    if found is None:
        raise _unknown(name_or_path, "array")
    kind, resource = found
    if kind == "board":
        default = load_board(name_or_path).default_array
        raise ProfileError(
            f"{name_or_path!r} is a board, not an array; its default array is {default!r} "
            "(a board name goes to --board)"
        )
    profile = array_from_dict(_read_json_resource(resource), str(resource), path=str(resource))
    _check_bundled_name(profile.name, name_or_path, resource)
    return profile


def load_board(name_or_path: str) -> BoardProfile:
    """A bundled board by name (`raspberry-pi-4`) or a board JSON file by path."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path)
        return board_from_dict(_read_json_file(path), str(path))
    found = _index().get(name_or_path)
    if found is None:
        raise _unknown(name_or_path, "board")
    kind, resource = found
    if kind == "array":
        raise ProfileError(f"{name_or_path!r} is an array, not a board; known boards: {_names('board')}")
    profile = board_from_dict(_read_json_resource(resource), str(resource))
    _check_bundled_name(profile.name, name_or_path, resource)
    return profile


def resolve(board: str | None, array: str | None) -> ArrayProfile:
    """The array for the `--board` / `--array` flags (exactly one of them).

    `board` may name a board (giving its default array) or an array; `array` is an array name or a
    path to an array JSON file.
    """
    if board is not None and array is not None:
        raise ProfileError(f"give --board or --array, not both (got --board {board!r}, --array {array!r})")
    if array is not None:
        return load_array(array)
    if board is None:
        raise ProfileError("no microphone array: give --board NAME or --array FILE")
    if _looks_like_path(board):
        return load_array(board)
    found = _index().get(board)
    if found is None:
        raise _unknown(board, None)
    if found[0] == "board":
        return load_array(load_board(board).default_array)
    return load_array(board)


def kind_of(name: str) -> Kind | None:
    """'board' or 'array' for a bundled profile name, None for anything else (reads no file)."""
    found = _index().get(name)
    return None if found is None else found[0]


def list_profiles() -> list[tuple[str, str, str]]:
    """Every bundled profile as (kind, name, description): boards first, then arrays, by name."""
    rows: list[tuple[str, str, str]] = []
    for name in sorted(_names_of("board")):
        rows.append(("board", name, load_board(name).description))
    for name in sorted(_names_of("array")):
        rows.append(("array", name, load_array(name).description))
    return rows


def array_from_dict(d: Mapping[str, Any], origin: str, path: str | None = None) -> ArrayProfile:
    """Validate an array profile given as a parsed JSON object. `origin` names it in error messages."""
    if not isinstance(d, Mapping):
        raise ProfileError(
            f'{origin}: expected a JSON object {{"name": ..., "mics": [[x, y, z], ...]}}, got {type(d).__name__}'
        )
    _check_keys(d, _ARRAY_REQUIRED, _ARRAY_OPTIONAL, origin)
    name = _text(d, "name", origin)
    mics = _mics(d["mics"], origin)
    n_mics = mics.shape[0]
    sample_rate = _positive_int(d, "sample_rate", origin, DEFAULT_SAMPLE_RATE)
    channels = _positive_int(d, "channels", origin, n_mics)
    if channels < n_mics:
        raise ProfileError(f"{origin}: key 'channels' is {channels}, fewer than the {n_mics} mics")
    channel_map = _channel_map(d.get("channel_map"), n_mics, channels, "channels" in d, origin)
    return ArrayProfile(
        name=name,
        mics=mics,
        sample_rate=sample_rate,
        channels=channels,
        channel_map=channel_map,
        device_match=_optional_text(d, "device_match", origin),
        geometry=_geometry(d.get("geometry"), mics, origin),
        doa_band_hz=_band(d.get("doa_band_hz"), sample_rate, origin),
        description=_text(d, "description", origin, default=""),
        source=_text(d, "source", origin, default=""),
        path=path,
        notes=_text(d, "notes", origin, default=""),
    )


def board_from_dict(d: Mapping[str, Any], origin: str) -> BoardProfile:
    """Validate a board profile given as a parsed JSON object. `origin` names it in error messages."""
    if not isinstance(d, Mapping):
        raise ProfileError(f"{origin}: expected a JSON object, got {type(d).__name__}")
    _check_keys(d, _BOARD_REQUIRED, _BOARD_OPTIONAL, origin)
    memory = d["memory_gb"]
    if not _is_number(memory) or not math.isfinite(memory) or memory <= 0:
        raise ProfileError(f"{origin}: key 'memory_gb' must be a positive number, got {memory!r}")
    default_array = _text(d, "default_array", origin)
    arrays = _names_of("array")
    if default_array not in arrays:
        raise ProfileError(
            f"{origin}: key 'default_array' is {default_array!r}, not a bundled array; "
            f"known arrays: {', '.join(sorted(arrays))}"
        )
    return BoardProfile(
        name=_text(d, "name", origin),
        description=_text(d, "description", origin),
        cpu=_text(d, "cpu", origin),
        arch=_choice(d, "arch", ARCHES, origin),
        cores=_positive_int(d, "cores", origin, None),
        memory_gb=float(memory),
        accelerator=_optional_text(d, "accelerator", origin),
        dsp_backend=_choice(d, "dsp_backend", DSP_BACKENDS, origin),
        model_runtime=_choice(d, "model_runtime", MODEL_RUNTIMES, origin),
        default_array=default_array,
        source=_text(d, "source", origin),
        notes=_text(d, "notes", origin, default=""),
    )


def _pairwise(mics: F64) -> F64:
    """Distances between every pair of mics, float64 [M, M]."""
    return np.asarray(np.linalg.norm(mics[:, None, :] - mics[None, :, :], axis=-1), dtype=np.float64)


def derive_geometry(mics: F64) -> str:
    """'linear', 'planar' or '3d': how many principal axes the mics spread along by more than 1 mm."""
    centred = mics - mics.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes.T
    extent = projected.max(axis=0) - projected.min(axis=0)
    rank = int(np.count_nonzero(extent > GEOMETRY_TOL_M))
    return GEOMETRIES[max(rank, 1) - 1]


# ---------------------------------------------------------------------------------------------------
# Bundled files


def _names_of(kind: Kind) -> set[str]:
    return {name for name, (k, _) in _index().items() if k == kind}


def _names(kind: Kind) -> str:
    return ", ".join(sorted(_names_of(kind)))


def _index() -> dict[str, tuple[Kind, Traversable]]:
    """Every bundled profile by name. Names are unique across boards and arrays (--board takes both)."""
    index: dict[str, tuple[Kind, Traversable]] = {}
    root = resources.files("boards")
    for kind, folder in _DIRS.items():
        for resource in (root / folder).iterdir():
            if not resource.name.endswith(".json"):
                continue
            name = resource.name[: -len(".json")]
            if name in index:
                raise ProfileError(
                    f"bundled profile name {name!r} is used by both {index[name][1]} and {resource}; "
                    "board and array names must be unique"
                )
            index[name] = (kind, resource)
    return index


def _check_bundled_name(name: str, stem: str, resource: Traversable) -> None:
    if name != stem:
        raise ProfileError(f"{resource}: key 'name' is {name!r} but a bundled profile must be named {stem!r}")


def _unknown(name: str, kind: Kind | None) -> ProfileError:
    kinds: Sequence[Kind] = ("board", "array") if kind is None else (kind,)
    known = "; ".join(f"known {k}s: {_names(k)}" for k in kinds)
    hint = " (or a path to an array .json file)" if kind != "board" else ""
    close = difflib.get_close_matches(name, sorted(_index()), n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    label = "profile" if kind is None else f"{kind} profile"
    return ProfileError(f"unknown {label} {name!r}{guess}; {known}{hint}")


def _looks_like_path(name: str) -> bool:
    return name.endswith(".json") or "/" in name or "\\" in name


# ---------------------------------------------------------------------------------------------------
# JSON reading


def _read_json_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{path}: profile file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"{path}: cannot read profile file: {e}") from None
    return _parse_json(text, str(path))


def _read_json_resource(resource: Traversable) -> Any:
    return _parse_json(resource.read_text(encoding="utf-8"), str(resource))


def _parse_json(text: str, origin: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ProfileError(f"{origin}: key {key!r} appears twice")
            out[key] = value
        return out

    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise ProfileError(f"{origin}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


# ---------------------------------------------------------------------------------------------------
# Field validation


def _check_keys(d: Mapping[str, Any], required: Sequence[str], optional: Sequence[str], origin: str) -> None:
    allowed = (*required, *optional)
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise ProfileError(f"{origin}: unknown key {key!r}{guess}; allowed keys: {', '.join(allowed)}")
    for key in required:
        if key not in d:
            raise ProfileError(f"{origin}: missing required key {key!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(d: Mapping[str, Any], key: str, origin: str, default: str | None = None) -> str:
    if key not in d and default is not None:
        return default
    value = d[key]
    if not isinstance(value, str) or (default is None and not value.strip()):
        raise ProfileError(f"{origin}: key {key!r} must be a non-empty string, got {value!r}")
    return value


def _optional_text(d: Mapping[str, Any], key: str, origin: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{origin}: key {key!r} must be a non-empty string or null, got {value!r}")
    return value


def _choice(d: Mapping[str, Any], key: str, choices: Sequence[str], origin: str) -> str:
    value = d[key]
    if value not in choices:
        raise ProfileError(f"{origin}: key {key!r} is {value!r}; expected one of {', '.join(choices)}")
    return str(value)


def _positive_int(d: Mapping[str, Any], key: str, origin: str, default: int | None) -> int:
    if key not in d and default is not None:
        return default
    value = d[key]
    if not _is_int(value) or value <= 0:
        raise ProfileError(f"{origin}: key {key!r} must be a positive integer, got {value!r}")
    return int(value)


def _mics(value: object, origin: str) -> F64:
    form = "a list of [x, y, z] positions in metres"
    if not isinstance(value, list):
        raise ProfileError(f"{origin}: key 'mics' must be {form}, got {value!r}")
    for i, mic in enumerate(value):
        if not isinstance(mic, list) or len(mic) != 3 or not all(_is_number(v) for v in mic):
            raise ProfileError(f"{origin}: key 'mics'[{i}] must be 3 numbers [x, y, z] (metres), got {mic!r}")
        for axis, v in zip("xyz", mic, strict=True):
            if not math.isfinite(v):
                raise ProfileError(f"{origin}: key 'mics'[{i}] has {axis} = {v!r}; coordinates must be finite numbers")
    if len(value) < 2:
        raise ProfileError(f"{origin}: key 'mics' has {len(value)} mic(s); an array needs at least 2")
    mics = np.array(value, dtype=np.float64)
    distances = _pairwise(mics)
    i, j = divmod(int(np.argmax(distances)), len(value))
    if distances[i, j] > MAX_APERTURE_M:
        raise ProfileError(
            f"{origin}: key 'mics' spans {distances[i, j]:g} m (mics[{i}] {value[i]!r} to mics[{j}] "
            f"{value[j]!r}), more than {MAX_APERTURE_M:g} m; positions are in metres: "
            "were they written in millimetres or centimetres?"
        )
    np.fill_diagonal(distances, np.inf)
    i, j = sorted(divmod(int(np.argmin(distances)), len(value)))
    if distances[i, j] < COINCIDENT_M:
        raise ProfileError(
            f"{origin}: key 'mics': mics[{i}] {value[i]!r} and mics[{j}] {value[j]!r} are "
            f"{distances[i, j] * 1e3:.2f} mm apart (coincident: under {COINCIDENT_M * 1e3:g} mm)"
        )
    return mics


def _channel_map(value: object, n_mics: int, channels: int, channels_given: bool, origin: str) -> tuple[int, ...]:
    if value is None:
        return tuple(range(n_mics))
    if not isinstance(value, list) or not all(_is_int(c) for c in value):
        raise ProfileError(f"{origin}: key 'channel_map' must be a list of channel indices, got {value!r}")
    if len(value) != n_mics:
        raise ProfileError(
            f"{origin}: key 'channel_map' {value!r} has {len(value)} entries for {n_mics} mics "
            "(one device channel per mic, in 'mics' order)"
        )
    for i, c in enumerate(value):
        if not 0 <= c < channels:
            hint = "" if channels_given else " (set 'channels' when the device delivers more channels)"
            raise ProfileError(
                f"{origin}: key 'channel_map'[{i}] is {c}, outside 0..{channels - 1} for channels = {channels}{hint}"
            )
    duplicates = sorted({c for c in value if value.count(c) > 1})
    if duplicates:
        raise ProfileError(f"{origin}: key 'channel_map' {value!r} uses channel(s) {duplicates} for more than one mic")
    return tuple(value)


def _geometry(value: object, mics: F64, origin: str) -> str:
    derived = derive_geometry(mics)
    if value is None:
        return derived
    if value not in GEOMETRIES:
        raise ProfileError(f"{origin}: key 'geometry' is {value!r}; expected one of {', '.join(GEOMETRIES)}")
    if value != derived:
        raise ProfileError(
            f"{origin}: key 'geometry' is {value!r} but the mics are {derived!r} "
            f"(tolerance {GEOMETRY_TOL_M * 1e3:g} mm); fix the positions or drop the key"
        )
    return derived


def _band(value: object, sample_rate: int, origin: str) -> tuple[float, float]:
    if value is None:
        return DEFAULT_DOA_BAND_HZ
    nyquist = sample_rate / 2
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(_is_number(v) and math.isfinite(v) for v in value)
        or not 0 < value[0] < value[1] <= nyquist
    ):
        raise ProfileError(
            f"{origin}: key 'doa_band_hz' must be [lo, hi] with 0 < lo < hi <= {nyquist:g} Hz "
            f"(half the sample rate), got {value!r}"
        )
    return float(value[0]), float(value[1])
