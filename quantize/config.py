"""JSON config file -> typed `PipelineConfig` (one dataclass per concern, unknown keys rejected).

Each field's default is written once, here; bounds live in the field metadata (`lo`, `hi`) and are
checked on load. `quantize/configs/default.json` states the shipped model's choices explicitly.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge.errors import ConfigError

T = TypeVar("T")


def _f(default: Any, lo: float | None = None, hi: float | None = None, doc: str = "") -> Any:
    if isinstance(default, list | tuple | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"lo": lo, "hi": hi, "doc": doc})
    return field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc})


@dataclass(frozen=True)
class PathsConfig:
    data_root: str = _f("../shared/data", doc="esc50/, urbansound8k_fold3/, ... (relative to the working dir)")
    teacher: str = _f("../shared/models/yamnet/YamNet_w8a8.onnx.zip", doc=".onnx, .onnx.zip or .tflite")
    teacher_class_map: str = _f("../shared/models/yamnet/yamnet_class_map.csv")
    labels: str = _f("", doc="label CSV; empty: the packaged quantize/data/labels_default.csv")
    dataset_mapping: str = _f("", doc="dataset label -> MID CSV; empty: packaged dataset_to_audioset.csv")
    cache_dir: str = _f("~/.cache/tympan", doc="teacher unzip, teacher logits, transfer sets")


@dataclass(frozen=True)
class TransferConfig:
    datasets: tuple[str, ...] = _f(("esc50", "urbansound8k", "vehicles", "dcase2016"))
    esc50_val_folds: tuple[int, ...] = _f((5,))
    us8k_val_fraction: float = _f(0.3, 0.0, 1.0, "fraction of US8K recordings (fsID) held out (us8k_folds 0)")
    us8k_folds: int = _f(
        3, 0, 20, "0: hold out us8k_val_fraction of the recordings by hash; K >= 2: K class-stratified recording folds"
    )
    us8k_val_fold: int = _f(0, 0, 19, "with us8k_folds K: the fold (0..K-1) held out for validation")
    windows_per_second: float = _f(2.0, 0.05, 20.0, "training windows drawn per second of event clip")
    background_only_fraction: float = _f(0.05, 0.0, 1.0)
    snr_db: tuple[float, float] = _f((0.0, 30.0), -20.0, 60.0)
    gain_db: tuple[float, float] = _f((-20.0, 0.0), -60.0, 20.0)
    bg_label_max_snr_db: float = _f(15.0, -20.0, 60.0, "background labels count only below this SNR")
    activity_rel_db: float = _f(30.0, 1.0, 120.0, "event active within this many dB of its loudest frame")
    activity_floor_db: float = _f(-65.0, -120.0, 0.0, "and above this absolute frame level (dBFS)")
    max_clips_per_dataset: int = _f(0, 0, None, "0: all; >0: a subset (quick runs)")
    dataset_window_scale: dict[str, float] = _f(  # noqa: RUF009 (_f gives dicts a default_factory)
        {"esc50": 1.5}, 0.05, 50.0, "per dataset, multiplies windows_per_second (oversample the small datasets)"
    )
    dataset_label_weight: dict[str, float] = _f(  # noqa: RUF009
        {}, 0.0, 1.0, "per dataset, the ground-truth target's value (default 1; lower lets the teacher lead "
        "where a dataset has few recordings per class, whose labels teach the recordings)"
    )
    reverb_fraction: float = _f(
        0.0, 0.0, 1.0, "share of event windows heard through a synthetic room (`quantize.audio.synthetic_rir`) "
        "before mixing (0: none): the same sound farther away in another room"
    )
    reverb_rt60_s: tuple[float, float] = _f((0.2, 1.0), 0.05, 5.0, "the synthetic rooms' reverberation times")
    reverb_drr_db: tuple[float, float] = _f(
        (-6.0, 12.0), -30.0, 40.0, "the synthetic rooms' direct-to-reverberant energy ratios"
    )


STUDENT_ARCHS = ("cnn", "dsconv")
STUDENT_STEMS = ("conv", "patch")


@dataclass(frozen=True)
class StudentConfig:
    arch: str = _f("dsconv", doc="'cnn': Conv3x3 blocks with max pooling; 'dsconv': strided stem + depthwise-separable")
    channels: tuple[int, ...] = _f(
        (16, 32, 48, 96, 128, 192), 1, 4096, "block widths; cnn: the first two pool time by 2; dsconv: [stem, blocks]"
    )
    dropout: float = _f(0.1, 0.0, 0.9)
    kernel_time: int = _f(5, 1, 15, "dsconv: depthwise kernel length in time at the output hop (odd)")
    min_mels: int = _f(1, 1, 64, "dsconv: blocks stride mels by 2 until this many remain")
    causal: bool = _f(
        False,
        doc="dsconv: every time kernel sees only the current and earlier frames (no look-ahead), so the "
        "streaming pipeline's newest outputs are the ones training optimised",
    )
    stem: str = _f(
        "conv",
        doc="dsconv: 'conv' (a 4x3 conv striding time and mels by 2) or 'patch' (each 2x2 block of "
        "frames and mels to channels, then a 1x1 conv: a GEMM on the device, not a slow one-channel "
        "depthwise conv)",
    )


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = _f(24, 1, 1000)
    batch_size: int = _f(64, 1, 4096)
    lr: float = _f(3e-3, 1e-6, 1.0)
    weight_decay: float = _f(1e-4, 0.0, 1.0)
    temperature: float = _f(2.0, 0.1, 20.0)
    alpha: float = _f(0.7, 0.0, 1.0, "weight of the teacher (KD) terms vs the ground-truth terms")
    frame_weight: float = _f(0.5, 0.0, 1.0, "weight of frame-level vs clip-level terms")
    edge_rows: int = _f(
        0, 0, 96, "the last output rows of each window whose frame loss is weighted by edge_weight (0: none): the "
        "rows the streaming pipeline keeps, model_hop_frames / output_hop_frames, see nothing to their right"
    )
    edge_weight: float = _f(1.0, 0.0, 100.0, "frame-loss weight of the edge_rows rows, relative to the others' 1")
    mask_dilate_rows: int = _f(
        0, 0, 24, "widen each event's activity mask by this many output rows on both sides (0: none): the frame "
        "targets of an impulsive sound then cover the gaps between its bursts, as the teacher's 0.96 s patches do"
    )
    threads: int = _f(1, 1, 64)
    max_minutes: float = _f(60.0, 0.1, 1000.0, "stop training after this many CPU minutes of the process")
    spec_augment: bool = _f(True, doc="random time / mel masks on training windows")
    time_mask_frames: int = _f(12, 0, 96, "SpecAugment: mask up to this many frames per window (0: none)")
    filter_augment_db: float = _f(
        0.0, 0.0, 24.0, "FilterAugment: each training window's mel powers times a random gain curve, linear in dB "
        "across the mels between 2 to 5 random points of -this .. +this dB (0: off): another microphone or room"
    )
    mixture_kd: float = _f(
        0.0, 0.0, 10.0, "weight of a term matching the student's mean frame probability over each window (its "
        "clip score) to the teacher's output on that same mixture window, at the temperature (0: off; the "
        "teacher is run on every transfer window once, cached; needs a teacher that takes log-mel patches)"
    )
    mixup: float = _f(0.5, 0.0, 1.0, "share of each batch mixed with another window (in the mel power domain)")
    mixup_gain_db: float = _f(10.0, 0.0, 40.0, "the mixed-in window is attenuated by 0 .. this many dB")
    ema_decay: float = _f(
        0.999,
        0.0,
        0.99999,
        "keep an exponential moving average of the weights with this decay per step (0: off); "
        "validation, epoch selection and export use the averaged weights",
    )


@dataclass(frozen=True)
class QuantConfig:
    calibration_windows: int = _f(256, 8, 100000)
    per_channel: bool = _f(True)
    onnx_reduce_range: bool = _f(True, doc="7-bit ONNX weights: avoids x86 non-VNNI int8 saturation")
    qat_epochs: int = _f(2, 0, 100, "quantisation-aware fine-tuning epochs after PTQ (0: PTQ only)")
    qat_when_drop_points: float = _f(
        -1.0, -100.0, 100.0, "run QAT when PTQ loses more than this many points on validation windows (< 0: always)"
    )
    qat_lr: float = _f(2e-4, 1e-7, 1.0, "learning rate of quantisation-aware fine-tuning")


@dataclass(frozen=True)
class EvalConfig:
    max_val_clips: int = _f(0, 0, None, "0: all validation clips")
    latency_repeats: int = _f(50, 1, 100000)
    teacher_hop_frames: int = _f(48, 1, 96)
    threshold_floor: float = _f(0.2, 0.01, 0.99, "lowest per-class detection threshold picked on validation")
    threshold_min_positives: int = _f(5, 1, None, "classes with fewer validation positives keep the default")
    condition_margin: float = _f(
        0.05, 0.0, 0.5, "thresholds raised to the int8 model's highest probability on silence, stationary "
        "noise, DC and level steps plus this (quantize.conditions); 0: no condition floor"
    )


@dataclass(frozen=True)
class HeadsConfig:
    enabled: bool = _f(True, doc="train the learned state/trait heads (quantize.heads) after quantisation")
    file: str = _f("", doc="head CSV (group,class,dataset,label); empty: the packaged quantize/data/heads.csv")
    l2: float = _f(1e-2, 0.0, 10.0, "L2 weight on the standardised-feature head weights")
    steps: int = _f(200, 1, 10000, "LBFGS iterations")
    augment: int = _f(3, 0, 50, "background mixtures per training clip besides the clean clip")
    snr_db: tuple[float, float] = _f((5.0, 30.0), -20.0, 60.0)


@dataclass(frozen=True)
class PipelineConfig:
    model_id: str = _f("tympan-sed-s13")
    window_frames: int = _f(96, 16, 1024)
    output_hop_frames: int = _f(4, 1, 16)
    paths: PathsConfig = field(default_factory=PathsConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return from_dict(tp, value, where, nested=True)  # type: ignore[arg-type]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        key_t, val_t = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {value!r}")
        return {_convert(k, key_t, f"{where} key"): _convert(v, val_t, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{where}: union types are not supported in config")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    values = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, int | float) and not isinstance(v, bool):
            if lo is not None and v < lo:
                raise ConfigError(f"{where}: {v!r} is below the minimum {lo}")
            if hi is not None and v > hi:
                raise ConfigError(f"{where}: {v!r} is above the maximum {hi}")


def from_dict(cls: type[T], d: dict[str, Any], where: str = "config", *, nested: bool = False) -> T:
    """Build dataclass `cls` from `d`: unknown keys rejected, types and bounds checked. Errors name the
    key after `where` (the file): "c.json: distill.alpha: ..." (`nested`: `where` is a key path already)."""
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in d.items():
        sub = f"{where}.{name}" if nested else f"{where}: {name}" if where else name
        kwargs[name] = _convert(value, hints[name], sub)
        _check_bounds(kwargs[name], fields[name].metadata, sub)
        if typing.get_args(hints[name]) == (float, float) and kwargs[name][0] > kwargs[name][1]:
            # every two-number field is a range (low, high): drawn from with a uniform distribution
            raise ConfigError(f"{sub}: {value!r} is not a range: its low end is above its high end")
    return cls(**kwargs)


def read_config_dict(path: Path) -> dict[str, Any]:
    """The JSON object of a config file, unchecked (ConfigError naming the file if it is none)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be an object")
    return raw


def load_config(path: Path) -> PipelineConfig:
    raw = read_config_dict(path)
    cfg = from_dict(PipelineConfig, raw, str(path))
    if cfg.student.arch not in STUDENT_ARCHS:
        raise ConfigError(f"{path}: student.arch {cfg.student.arch!r} is not one of {list(STUDENT_ARCHS)}")
    if cfg.student.causal and cfg.student.arch != "dsconv":
        raise ConfigError(f"{path}: student.causal needs arch 'dsconv', not {cfg.student.arch!r}")
    if cfg.student.stem not in STUDENT_STEMS:
        raise ConfigError(f"{path}: student.stem {cfg.student.stem!r} is not one of {list(STUDENT_STEMS)}")
    if cfg.student.stem != "conv" and cfg.student.arch != "dsconv":
        raise ConfigError(f"{path}: student.stem {cfg.student.stem!r} needs arch 'dsconv', not {cfg.student.arch!r}")
    if cfg.student.stem == "patch" and (cfg.output_hop_frames < 2 or cfg.student.min_mels > 32):
        raise ConfigError(
            f"{path}: student.stem 'patch' halves time and mels: needs output_hop_frames >= 2 and "
            f"student.min_mels <= 32, got {cfg.output_hop_frames} and {cfg.student.min_mels}"
        )
    if cfg.student.kernel_time % 2 == 0:
        raise ConfigError(f"{path}: student.kernel_time {cfg.student.kernel_time} must be odd")
    for key in ("dataset_window_scale", "dataset_label_weight"):
        stray = sorted(set(getattr(cfg.transfer, key)) - set(cfg.transfer.datasets))
        if stray:
            raise ConfigError(
                f"{path}: transfer.{key} names {stray}, not in transfer.datasets {list(cfg.transfer.datasets)}"
            )
    if cfg.window_frames % cfg.output_hop_frames:
        raise ConfigError(f"{path}: window_frames {cfg.window_frames} not a multiple of output_hop_frames")
    return cfg
