"""Features -> Scores: the student model on a runtime (LiteRT for .tflite, ONNX Runtime for .onnx).

A model directory holds `model.json` (id, frontend, window and hop, label file, thresholds, hashes),
`labels.csv` (index, mid, display_name) and the model files. The model takes one window of raw
log-mel [1, window_frames, n_mels] and returns frame-level probabilities
[1, window_frames // output_hop_frames, K]. A recording's clip scores (`Model.tag`) pool the frame
probabilities as `model.json`'s `pooling` says: "mean" (the mean over the frames that cover the
recording: the rule the distillation pipeline's report measures a model with, and the one YAMNet
documents for its patch scores) or "linear_softmax" (older model directories: the max over
half-overlapping windows of each window's sum p^2 / sum p). Thresholds are calibrated on the
linear-softmax score (`Model.peak`), which follows a frame's peak: the sound event detector's scale.

Runtimes form a registry; the board profile (or `--runtime`) picks one, `auto` prefers LiteRT.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec
from edge.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "default"
MODEL_JSON = "model.json"


@dataclass(frozen=True)
class Label:
    index: int
    mid: str
    name: str


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence native code's writes to file descriptor 2 (Python errors still raise as exceptions)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class Runtime(ABC):
    """One loaded model file. `run` maps float log-mel [1, W, M] to float probabilities [1, T, K]."""

    name: str

    @abstractmethod
    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


class LiteRTRuntime(Runtime):
    name = "litert"

    def __init__(self, path: str, threads: int) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
            except ImportError:
                raise ModelError(
                    f"{path}: no TFLite runtime installed (pip install ai-edge-litert); "
                    "or use the .onnx model with --runtime onnxruntime"
                ) from None
        try:
            with _quiet_stderr():  # the TFLite C++ runtime prints an INFO line per interpreter
                self._it = Interpreter(model_path=path, num_threads=threads)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: not a loadable TFLite model ({e})") from None
        ins, outs = self._it.get_input_details(), self._it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelError(f"{path}: expected one input and one output, got {len(ins)} and {len(outs)}")
        self._in, self._out = ins[0], outs[0]

    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        d = self._in
        if d["dtype"] in (np.int8, np.uint8):
            scale, zero = d["quantization"]
            info = np.iinfo(d["dtype"])
            q = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"])
            self._it.set_tensor(d["index"], q)
        else:
            self._it.set_tensor(d["index"], x.astype(d["dtype"]))
        self._it.invoke()
        y = self._it.get_tensor(self._out["index"])
        if self._out["dtype"] in (np.int8, np.uint8):
            scale, zero = self._out["quantization"]
            return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
        return np.asarray(y, dtype=np.float32)


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    def __init__(self, path: str, threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelError(f"{path}: onnxruntime is not installed (pip install onnxruntime)") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._s = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise ModelError(f"{path}: not a loadable ONNX model ({e})") from None
        self._in = self._s.get_inputs()[0].name

    def run(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.asarray(self._s.run(None, {self._in: x.astype(np.float32)})[0], dtype=np.float32)


RUNTIMES: dict[str, tuple[str, Callable[[str, int], Runtime]]] = {
    "litert": ("tflite", LiteRTRuntime),
    "onnxruntime": ("onnx", OnnxRuntime),
}


def _litert_available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime"))


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_model_dir() -> str:
    return str(resources.files("edge").joinpath("models", DEFAULT_MODEL))


POOLINGS = ("mean", "linear_softmax")  # model.json `pooling`: how `Model.tag` makes clip scores


def covered_frames(n_frames: int, hop_frames: int) -> int:
    """How many output frames (one per `hop_frames` input frames, from the recording's start) cover a
    recording of `n_frames` log-mel frames: those whose first input frame lies in it, at least one."""
    return max(1, -(-n_frames // hop_frames))


def pool_clip(frames: npt.NDArray[np.float32], axis: int = 0) -> npt.NDArray[np.float32]:
    """Linear-softmax pooling over the frame axis: [T, K] -> [K]  (sum p^2 / sum p)."""
    s = frames.sum(axis=axis)
    return np.where(s > 0, (frames**2).sum(axis=axis) / np.maximum(s, 1e-12), 0.0).astype(np.float32)


@dataclass(frozen=True)
class HeadGroup:
    """A learned state/trait head of the student (model.json `heads`): sigmoid outputs for `classes`
    (ontology state or trait names of one `group`) in output `columns`, after the K event classes;
    `sources`: the ontology sources its training examples belong to."""

    group: str
    classes: tuple[str, ...]
    columns: tuple[int, ...]
    sources: tuple[str, ...] = ()  # ontology sources it was trained on (empty: any)


def _read_heads(raw: Any, first_column: int, where: str) -> tuple[HeadGroup, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ModelError(f"{where}: 'heads' must be a list of {{group, classes}} objects")
    out: list[HeadGroup] = []
    col = first_column
    for i, h in enumerate(raw):
        if not isinstance(h, dict) or not isinstance(h.get("group"), str) or not isinstance(h.get("classes"), list):
            raise ModelError(f"{where}: heads[{i}] must be an object with 'group' (string) and 'classes' (list)")
        classes = tuple(h["classes"])
        if len(classes) < 2 or not all(isinstance(c, str) and c for c in classes):
            raise ModelError(f"{where}: heads[{i}].classes must name at least two states or traits")
        sources = h.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
            raise ModelError(f"{where}: heads[{i}].sources must be a list of ontology source names")
        out.append(HeadGroup(h["group"], classes, tuple(range(col, col + len(classes))), tuple(sources)))
        col += len(classes)
    groups = [h.group for h in out]
    if len(set(groups)) != len(groups):
        raise ModelError(f"{where}: heads name a group twice ({groups})")
    return tuple(out)


class Model:
    """A student model: labels, frontend, window geometry, thresholds, learned state/trait heads and a
    loaded runtime. The model file's output has a column per label, then one per head class."""

    def __init__(self, path: str | None = None, runtime: str = "auto", threads: int = 1, stream: bool = True) -> None:
        path = path or default_model_dir()
        if not os.path.exists(path):
            raise ModelError(f"{path}: no such model file or directory")
        model_dir = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
        meta_path = os.path.join(model_dir, MODEL_JSON)
        if not os.path.isfile(meta_path):
            raise ModelError(f"{path}: no {MODEL_JSON} beside the model (a Tympan model directory holds one)")
        try:
            with open(meta_path, encoding="utf-8") as f:
                meta: dict[str, Any] = json.load(f)
        except (OSError, ValueError) as e:
            raise ModelError(f"{meta_path}: unreadable model description ({e})") from None
        self.dir = model_dir
        self.meta = meta
        try:
            self.id: str = str(meta["id"])
            self.frontend = FrontendSpec.from_dict(dict(meta["frontend"]), meta_path)
            self.window_frames = int(meta["window_frames"])
            self.output_hop_frames = int(meta["output_hop_frames"])
            files: dict[str, str] = dict(meta["files"])
            hashes: dict[str, str] = dict(meta.get("sha256", {}))
            thresholds: dict[str, Any] = dict(meta.get("thresholds", {}))
            labels_file = str(meta.get("labels", "labels.csv"))
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{meta_path}: missing or malformed key {e}") from None
        DEFAULT_FRONTEND.check_matches(self.frontend, meta_path)
        if self.window_frames % self.output_hop_frames:
            raise ModelError(f"{meta_path}: window_frames must be a multiple of output_hop_frames")
        self.labels = _read_labels(os.path.join(model_dir, labels_file))
        self.heads = _read_heads(meta.get("heads"), len(self.labels), meta_path)
        self.n_outputs = len(self.labels) + sum(len(h.classes) for h in self.heads)
        self.pooling = str(meta.get("pooling", "linear_softmax"))
        if self.pooling not in POOLINGS:
            raise ModelError(f"{meta_path}: pooling {self.pooling!r} unknown; expected one of {', '.join(POOLINGS)}")
        self.default_threshold = float(thresholds.get("default", 0.5))
        per_class: dict[str, float] = dict(thresholds.get("per_class", {}))
        self.thresholds = np.array(
            [float(per_class.get(lb.name, self.default_threshold)) for lb in self.labels], np.float32
        )
        self.floors = _read_floors(thresholds.get("floors"), self.labels, meta_path)

        if os.path.isdir(path):
            name = _pick_runtime(runtime)
            ext = RUNTIMES[name][0]
            if ext not in files:
                raise ModelError(f"{meta_path}: no {ext!r} model file listed for runtime {name!r}")
            model_file = os.path.join(model_dir, files[ext])
        else:
            model_file = os.path.abspath(path)
            ext = os.path.splitext(model_file)[1].lstrip(".")
            match = [n for n, (e, _) in RUNTIMES.items() if e == ext]
            if not match:
                raise ModelError(f"{path}: unknown model format {ext!r}; expected .tflite or .onnx")
            name = match[0]
        if not os.path.isfile(model_file):
            raise ModelError(f"{model_file}: model file is missing")
        want = hashes.get(os.path.basename(model_file))
        self.sha256 = sha256_file(model_file)
        if want and want != self.sha256:
            raise ModelError(f"{model_file}: sha256 {self.sha256[:12]}... does not match model.json's {want[:12]}...")
        self.file = model_file
        self.runtime_name = name
        self._rt = RUNTIMES[name][1](model_file, threads)
        self.out_frames = self.window_frames // self.output_hop_frames
        probe = self._rt.run(np.full((1, self.window_frames, self.frontend.n_mels), -6.9, np.float32))
        if probe.shape != (1, self.out_frames, self.n_outputs):
            raise ModelError(
                f"{model_file}: output shape {probe.shape} does not match "
                f"(1, {self.out_frames}, {self.n_outputs}) from model.json (heads) and the label file"
            )
        # the streaming model (quantize.stream): the same int8 model on the shortest window whose newest
        # `stream_newest_frames` outputs equal the full window's; LiteRT only, used by the pipeline
        self.stream_window_frames: int | None = None
        self.stream_newest_frames = 0
        self._stream_rt: Runtime | None = None
        st = meta.get("stream")
        if stream and st is not None and name == "litert" and os.path.isdir(path):
            self._load_stream(st, files, hashes, model_dir, meta_path, threads)

    def _load_stream(
        self, st: Any, files: dict[str, str], hashes: dict[str, str], model_dir: str, meta_path: str, threads: int
    ) -> None:
        try:
            frames, newest = int(st["window_frames"]), int(st["newest_frames"])
            key = str(st.get("file_key", "tflite_stream"))
            f = os.path.join(model_dir, files[key])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{meta_path}: malformed 'stream' entry (missing or bad {e})") from None
        hop = self.output_hop_frames
        if not (0 < newest <= frames < self.window_frames and frames % hop == 0 and newest % hop == 0):
            raise ModelError(
                f"{meta_path}: stream window_frames={frames}, newest_frames={newest}: need multiples of the "
                f"output hop ({hop}) with newest <= window < {self.window_frames}"
            )
        if not os.path.isfile(f):
            raise ModelError(f"{f}: the streaming model named in model.json is missing")
        want = hashes.get(os.path.basename(f))
        if want and want != sha256_file(f):
            raise ModelError(f"{f}: sha256 does not match model.json's")
        rt = RUNTIMES["litert"][1](f, threads)
        probe = rt.run(np.full((1, frames, self.frontend.n_mels), -6.9, np.float32))
        if probe.shape != (1, frames // hop, self.n_outputs):
            raise ModelError(f"{f}: output shape {probe.shape}, expected (1, {frames // hop}, {self.n_outputs})")
        self.stream_window_frames, self.stream_newest_frames, self._stream_rt = frames, newest, rt

    def stream_window_for(self, hop_frames: int) -> int | None:
        """The streaming model's window when it serves a pipeline that keeps the newest `hop_frames`
        of each call, else None (the full window)."""
        if self._stream_rt is None or self.stream_window_frames is None or hop_frames > self.stream_newest_frames:
            return None
        return self.stream_window_frames

    def predict_stream(self, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The newest `stream_window_frames` of a full window [frames, n_mels] -> frame probabilities
        [frames / output hop, K]; its newest outputs equal `predict`'s on the full window."""
        if self._stream_rt is None:
            raise ModelError(f"{self.file}: this model has no streaming model loaded")
        out = self._stream_rt.run(window[None].astype(np.float32))[0]
        return out if not self.heads else out[:, : len(self.labels)]

    def floors_for(self, mode: str) -> npt.NDArray[np.float32]:
        """The condition floors [K] of a latency mode (model.json thresholds.floors; zeros where the model
        has none): the lowest threshold at which the int8 model, run as that mode runs it, starts no event
        on silence, stationary noise, DC and level steps (quantize.conditions)."""
        return self.floors.get(mode, np.zeros(len(self.labels), np.float32))

    def thresholds_for(self, mode: str) -> npt.NDArray[np.float32]:
        """The per-class thresholds of a latency mode: the model's, raised to that mode's condition floors."""
        return np.maximum(self.thresholds, self.floors_for(mode))

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(lb.name for lb in self.labels)

    def predict(self, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One window of log-mel [window_frames, n_mels] -> frame probabilities [out_frames, K]."""
        out = self._rt.run(window[None].astype(np.float32))[0]
        return out if not self.heads else out[:, : len(self.labels)]

    def predict_all(self, window: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """One window -> every output column [out_frames, K + head classes] (the heads' after the labels)."""
        return self._rt.run(window[None].astype(np.float32))[0]

    def tag(self, logmel: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Clip scores [K] of a whole recording, pooled as the model's `pooling` says (module doc)."""
        if self.pooling == "mean":
            return self.recording_frames(logmel).mean(axis=0)
        return self.peak(logmel)

    def tag_and_peak(self, logmel: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(`tag`, `peak`) of a recording; one pass when they are the same (a linear-softmax model)."""
        peak = self.peak(logmel)
        return (self.tag(logmel) if self.pooling == "mean" else peak), peak

    def peak(self, logmel: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The scale the thresholds are calibrated on: the max over half-overlapping windows of each
        window's linear-softmax pooled score [K] (a recording shorter than a window is padded with the
        log-mel of silence)."""
        w = self.window_frames
        logmel = self._pad_to_window(logmel)
        starts = list(range(0, len(logmel) - w + 1, w // 2))
        if starts[-1] != len(logmel) - w:
            starts.append(len(logmel) - w)
        return np.max([pool_clip(self.predict(logmel[s : s + w])) for s in starts], axis=0)

    def recording_frames(self, logmel: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Frame probabilities [T', K] of a whole recording: windows side by side from its start (the
        last padded with the log-mel of silence), keeping the output frames whose first input frame
        lies in the recording (at least one)."""
        w, hop = self.window_frames, self.output_hop_frames
        n = len(logmel)
        padded = self._pad_to_window(logmel, -(-max(n, 1) // w) * w)
        frames = np.concatenate([self.predict(padded[s : s + w]) for s in range(0, len(padded), w)])
        return frames[: covered_frames(n, hop)]

    def _pad_to_window(self, logmel: npt.NDArray[np.float32], length: int | None = None) -> npt.NDArray[np.float32]:
        from edge.dsp.frontend import silence_floor

        want = max(length or self.window_frames, len(logmel))
        if len(logmel) >= want:
            return logmel
        pad = np.full((want - len(logmel), logmel.shape[1]), silence_floor(self.frontend), np.float32)
        return np.concatenate([logmel, pad])


def _pick_runtime(runtime: str) -> str:
    if runtime == "auto":
        return "litert" if _litert_available() else "onnxruntime"
    if runtime not in RUNTIMES:
        raise ModelError(f"unknown runtime {runtime!r}; choose from: auto, {', '.join(RUNTIMES)}")
    return runtime


def _read_floors(doc: Any, labels: tuple[Label, ...], meta_path: str) -> dict[str, npt.NDArray[np.float32]]:
    """model.json thresholds.floors: {latency mode: {label: floor}} -> {mode: floors [K]} (absent: {})."""
    if doc is None:
        return {}
    index = {lb.name: lb.index for lb in labels}
    if not isinstance(doc, dict):
        raise ModelError(f"{meta_path}: thresholds.floors must be an object {{mode: {{label: floor}}}}")
    out = {}
    for mode, table in doc.items():
        if not isinstance(table, dict):
            raise ModelError(f"{meta_path}: thresholds.floors.{mode} must be an object {{label: floor}}")
        floors = np.zeros(len(labels), np.float32)
        for name, v in table.items():
            if name not in index:
                raise ModelError(f"{meta_path}: thresholds.floors.{mode} names {name!r}, not a label of the model")
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v < 1.0:
                raise ModelError(f"{meta_path}: thresholds.floors.{mode}.{name} is {v!r}; must be a number in [0, 1)")
            floors[index[name]] = v
        out[str(mode)] = floors
    return out


def _read_labels(path: str) -> tuple[Label, ...]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ModelError(f"{path}: cannot read the label file ({e.strerror})") from None
    out = []
    for i, r in enumerate(rows):
        try:
            idx, mid, name = int(r["index"]), r["mid"].strip(), r["display_name"].strip()
        except (KeyError, ValueError, AttributeError):
            raise ModelError(f"{path}: line {i + 2}: expected columns index,mid,display_name") from None
        if idx != i or not mid or not name:
            raise ModelError(f"{path}: line {i + 2}: bad entry {r!r} (indices must count from 0)")
        out.append(Label(idx, mid, name))
    if not out:
        raise ModelError(f"{path}: the label file is empty")
    return tuple(out)
