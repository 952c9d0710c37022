"""Waveform windows -> teacher logits [N, 521] from a YAMNet export (int8 ONNX or float TFLite).

Finding for the shipped `YamNet_w8a8.onnx`: its graph ends in `Gemm -> QuantizeLinear` with no
sigmoid, and its dequantised scores range over about [-144, 49]: they are LOGITS. Soft targets are
therefore `sigmoid(logit / T)`. A float YAMNet `.tflite` (the model-hub export: waveform in, `scores`
[patches, 521] out) ends in a sigmoid: its scores are probabilities, turned back into logits here so
that every teacher yields logits.

Both teachers see the same windows as the student: `window_samples(96)` samples, 96 frames of the
shared log-mel (`edge.dsp.frontend`). The ONNX teacher is fed that log-mel, uint8-quantised with the
graph's own `audio_scale` / `audio_zero_point`; the TFLite teacher computes its (identical) frontend
from the waveform itself. A teacher whose input does not match 96 frames x 64 mels is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec, logmel
from edge.errors import ModelError
from quantize.audio import F32, read_audio, segment, window_samples
from quantize.labels import LabelSet

PROB_EPS = 1e-6


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def probs_to_logits(p: npt.NDArray[np.floating]) -> F32:
    q = np.clip(np.asarray(p, np.float64), PROB_EPS, 1.0 - PROB_EPS)
    return np.log(q / (1.0 - q)).astype(np.float32)


def sigmoid(z: npt.NDArray[np.floating]) -> F32:
    return (1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))).astype(np.float32)


class Teacher(ABC):
    """A tagger that maps waveform windows of `window_samples(window_frames)` to class logits."""

    def __init__(self, path: Path, window_frames: int, spec: FrontendSpec) -> None:
        self.path = path
        self.window_frames = window_frames
        self.spec = spec
        self.fingerprint = file_sha256(path)[:16]
        # how the file is run, when that changes its logits (cached logits are kept per execution)
        self.execution = ""

    @property
    def cache_key(self) -> str:
        """The file's fingerprint and, when it changes the logits, how it is run: what cached logits
        and transfer sets are keyed by."""
        return f"{self.fingerprint}-{self.execution}" if self.execution else self.fingerprint

    @property
    def n_samples(self) -> int:
        return window_samples(self.window_frames, self.spec)

    @property
    @abstractmethod
    def n_classes(self) -> int: ...

    @abstractmethod
    def _logits_one(self, wave: F32) -> F32:
        """One window [n_samples] -> logits [n_classes]."""

    def logits(self, windows: F32) -> F32:
        """Waveform windows [N, n_samples] -> logits [N, n_classes]."""
        if windows.ndim != 2 or windows.shape[1] != self.n_samples:
            raise ModelError(f"teacher expects windows [N, {self.n_samples}], got {list(windows.shape)}")
        return self._each(windows, self._logits_one)

    def _each(self, items: F32, one: Callable[[F32], F32]) -> F32:
        """`one` on every item of `items` (first axis) -> logits [N, n_classes]."""
        out = np.empty((items.shape[0], self.n_classes), np.float32)
        for i, x in enumerate(items):
            out[i] = one(x)
        return out

    def logits_logmel(self, patches: F32) -> F32:
        """Log-mel patches [N, window_frames, n_mels] of the shared frontend -> logits [N, n_classes]:
        the teacher on an input the caller already has as log-mel (a transfer set's mixtures)."""
        raise ModelError(
            f"{self.path}: this teacher ({type(self).__name__}) computes its own frontend from the waveform "
            "and cannot score log-mel patches; use the ONNX teacher"
        )

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": type(self).__name__, "sha256_16": self.fingerprint,
                "execution": self.execution or "default"}  # fmt: skip


class OnnxTeacher(Teacher):
    """YAMNet as ONNX: log-mel patch [1, 1, frames, mels] (uint8-quantised or float) -> scores."""

    def __init__(
        self, path: Path, window_frames: int, spec: FrontendSpec = DEFAULT_FRONTEND, fused: bool = False
    ) -> None:
        import onnx
        from onnx import numpy_helper

        super().__init__(path, window_frames, spec)
        try:
            graph = onnx.load(str(path), load_external_data=False).graph
        except Exception as e:  # onnx raises several kinds for a bad file
            raise ModelError(f"{path}: not a readable ONNX model ({e})") from None
        if len(graph.input) != 1 or len(graph.output) != 1:
            raise ModelError(f"{path}: teacher must have one input and one output")
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        if len(dims) < 2 or dims[-2:] != [window_frames, spec.n_mels]:
            raise ModelError(
                f"{path}: teacher input shape {dims} does not match Tympan's frontend "
                f"(... x {window_frames} frames x {spec.n_mels} mels)"
            )
        self._in_shape = [d if d > 0 else 1 for d in dims]
        inits = {i.name: i for i in graph.initializer}

        def scalar(name: str) -> float | None:
            return float(numpy_helper.to_array(inits[name]).reshape(-1)[0]) if name in inits else None

        in_type = graph.input[0].type.tensor_type.elem_type
        self._in_uint8 = in_type == onnx.TensorProto.UINT8
        self._in_int8 = in_type == onnx.TensorProto.INT8
        self._in_scale = scalar("audio_scale")
        self._in_zp = scalar("audio_zero_point")
        if (self._in_uint8 or self._in_int8) and (self._in_scale is None or self._in_zp is None):
            raise ModelError(f"{path}: quantised input but no audio_scale / audio_zero_point initialisers")
        self._out_scale = scalar("class_scores_scale")
        self._out_zp = scalar("class_scores_zero_point")
        self._probabilities = _ends_in_sigmoid(graph)
        odims = [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
        self._n_classes = int(odims[-1])
        # fused: ONNX Runtime's fused int8 kernels, the fastest way to run it, for timing only (their
        # logits depend on the CPU, see `onnx_session`)
        qdq = any(n.op_type in QDQ_OPS for n in graph.node) and not fused
        if qdq:
            self.execution = "qdq-unfused"
        elif fused:
            self.execution = "fused"
        self._sess = onnx_session(path, qdq)
        self._in_name = graph.input[0].name

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def _logits_one(self, wave: F32) -> F32:
        return self._logits_patch(logmel(wave, self.spec))

    def logits_logmel(self, patches: F32) -> F32:
        want = (self.window_frames, self.spec.n_mels)
        if patches.ndim != 3 or patches.shape[1:] != want:
            raise ModelError(f"teacher expects log-mel patches [N, {want[0]}, {want[1]}], got {list(patches.shape)}")
        return self._each(patches, self._logits_patch)

    def _logits_patch(self, lm: F32) -> F32:
        feed: npt.NDArray[Any]
        if self._in_uint8 or self._in_int8:
            assert self._in_scale is not None and self._in_zp is not None
            lo, hi = (0, 255) if self._in_uint8 else (-128, 127)
            q = np.clip(np.round(lm / self._in_scale + self._in_zp), lo, hi)
            feed = q.astype(np.uint8 if self._in_uint8 else np.int8)
        else:
            feed = lm.astype(np.float32)
        out = np.asarray(self._sess.run(None, {self._in_name: feed.reshape(self._in_shape)})[0])
        scores = out.reshape(-1).astype(np.float32)
        if out.dtype in (np.uint8, np.int8):
            if self._out_scale is None or self._out_zp is None:
                raise ModelError(f"{self.path}: quantised output but no class_scores_scale / zero_point")
            scores = (self._out_scale * (scores - self._out_zp)).astype(np.float32)
        return probs_to_logits(scores) if self._probabilities else scores


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def onnx_session(path: Path, qdq: bool) -> Any:
    """One-thread ONNX Runtime CPU session for a teacher; a QDQ graph (`qdq`) runs unfused.

    With its default optimisations ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into
    its int8 kernels, and on x86-64 CPUs without VNNI those multiply uint8 activations by int8 weights
    in 16-bit pairwise sums that saturate: the shipped YAMNet's logits then depend on the CPU that runs
    it (measured: up to 20 apart from a VNNI CPU's on ESC-50 windows, other top classes; its ESC-50
    fold 5 zero-shot accuracy was 0.630 on the earlier hosts without VNNI, 0.692 fused on a VNNI
    CPU). Run unfused (basic optimisations only), each
    convolution dequantises its int8 operands exactly, sums in float32 and quantises again: the same
    logits on every CPU (checked bit for bit between this machine's VNNI CPU and an emulated Haswell)
    and within two output quantisation steps of the exact integer model.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if qdq:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelError(f"{path}: onnxruntime cannot load the teacher ({e})") from None


def _ends_in_sigmoid(graph: Any) -> bool:
    """Whether the op producing the graph output (skipping (de)quantisation) is a sigmoid/softmax."""
    producers = {o: n for n in graph.node for o in n.output}
    name = graph.output[0].name
    while name in producers:
        node = producers[name]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Identity"):
            name = node.input[0]
            continue
        return bool(node.op_type in ("Sigmoid", "Softmax"))
    return False


class TfliteTeacher(Teacher):
    """YAMNet as float TFLite (model-hub export): waveform [n] -> scores [patches, 521] (sigmoid).

    The export computes YAMNet's frontend itself, which is Tympan's: a window of
    `window_samples(96)` samples gives exactly one 96-frame patch. If the model also outputs its
    log-mel spectrogram ([frames, 64]), its shape is checked against Tympan's frontend.
    """

    def __init__(self, path: Path, window_frames: int, spec: FrontendSpec = DEFAULT_FRONTEND) -> None:
        from ai_edge_litert.interpreter import Interpreter

        super().__init__(path, window_frames, spec)
        try:
            self._it = Interpreter(model_path=str(path), num_threads=1)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: not a loadable TFLite model ({e})") from None
        ins = self._it.get_input_details()
        if len(ins) != 1 or ins[0]["dtype"] != np.float32 or len(ins[0]["shape"]) != 1:
            shapes = [(list(d["shape"]), np.dtype(d["dtype"]).name) for d in ins]
            raise ModelError(f"{path}: TFLite teacher must take one float32 waveform [n]; it takes {shapes}")
        self._in_index = int(ins[0]["index"])
        self._it.resize_tensor_input(self._in_index, [self.n_samples])
        self._it.allocate_tensors()
        self._it.set_tensor(self._in_index, np.zeros(self.n_samples, np.float32))
        self._it.invoke()
        candidates: list[tuple[bool, int, int]] = []  # (not named "score", classes, index)
        for d in self._it.get_output_details():
            shape = list(self._it.get_tensor(d["index"]).shape)
            if len(shape) == 2 and shape[1] == spec.n_mels:
                if shape[0] != window_frames:
                    raise ModelError(
                        f"{path}: teacher frontend gives {shape[0]} frames for {self.n_samples} samples, "
                        f"Tympan's gives {window_frames}"
                    )
            elif len(shape) == 2 and shape[1] > spec.n_mels:
                if shape[0] != 1:
                    raise ModelError(f"{path}: teacher gives {shape[0]} patches for one 96-frame window")
                candidates.append(("score" not in str(d["name"]).lower(), int(shape[1]), int(d["index"])))
        if not candidates:
            raise ModelError(f"{path}: no [patches, classes] scores output found")
        # YAMNet also outputs embeddings [patches, 1024]: prefer "scores" by name, else the narrower one.
        _, self._n_classes, self._scores_index = min(candidates)

    @property
    def n_classes(self) -> int:
        return self._n_classes

    def _logits_one(self, wave: F32) -> F32:
        self._it.set_tensor(self._in_index, np.ascontiguousarray(wave, np.float32))
        self._it.invoke()
        return probs_to_logits(self._it.get_tensor(self._scores_index)[0])


def _unzip_onnx(zip_path: Path, cache_dir: Path) -> Path:
    """Extract an ONNX zip (model.onnx + external data) once into cache_dir; return model.onnx."""
    dest = cache_dir / f"{zip_path.stem}-{file_sha256(zip_path)[:12]}"
    if not dest.exists():
        tmp = dest.with_suffix(f".{os.getpid()}.tmp")
        try:
            with zipfile.ZipFile(zip_path) as z:
                z.extractall(tmp)
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelError(f"{zip_path}: cannot extract teacher zip ({e})") from None
        try:
            tmp.rename(dest)
        except OSError:  # another run extracted it first
            if not dest.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    found = sorted(dest.rglob("*.onnx"))
    if len(found) != 1:
        raise ModelError(f"{zip_path}: expected one .onnx inside, found {[p.name for p in found]}")
    return found[0]


def load_teacher(
    path: Path, cache_dir: Path, window_frames: int, spec: FrontendSpec = DEFAULT_FRONTEND, fused: bool = False
) -> Teacher:
    """A teacher from `.onnx`, `.onnx.zip` / `.zip` (unzipped into cache_dir) or `.tflite`; `fused`: an
    ONNX teacher on ONNX Runtime's fused int8 kernels (for timing; see `onnx_session`)."""
    if not path.is_file():
        raise ModelError(f"{path}: teacher model not found")
    name = path.name.lower()
    if name.endswith(".zip"):
        cache_dir.mkdir(parents=True, exist_ok=True)
        return OnnxTeacher(_unzip_onnx(path, cache_dir), window_frames, spec, fused)
    if name.endswith(".onnx"):
        return OnnxTeacher(path, window_frames, spec, fused)
    if name.endswith(".tflite"):
        return TfliteTeacher(path, window_frames, spec)
    raise ModelError(f"{path}: unknown teacher format (want .onnx, .onnx.zip or .tflite)")


class TeacherCache:
    """Teacher logits per (audio file path + content hash, window start sample), stored as npz."""

    def __init__(self, teacher: Teacher, cache_dir: Path) -> None:
        self.teacher = teacher
        self.dir = cache_dir / f"logits-{teacher.cache_key}-{teacher.window_frames}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _file(self, audio_path: Path) -> Path:
        key = hashlib.sha1(f"{audio_path.resolve()}|{file_sha256(audio_path)}".encode()).hexdigest()
        return self.dir / f"{key}.npz"

    def logits(self, audio_path: Path, starts: npt.NDArray[np.int64], wave: F32 | None = None) -> F32:
        """Teacher logits [len(starts), C] of the windows of `audio_path` starting at sample `starts`."""
        f = self._file(audio_path)
        known: dict[int, F32] = {}
        if f.exists():
            with np.load(f) as z:
                known = {int(s): row for s, row in zip(z["starts"], z["logits"], strict=True)}
        missing = sorted({int(s) for s in starts} - set(known))
        self.hits += len(starts) - len(missing)
        if missing:
            self.misses += len(missing)
            x = read_audio(audio_path, self.teacher.spec) if wave is None else wave
            n = self.teacher.n_samples
            new = self.teacher.logits(np.stack([segment(x, s, n) for s in missing]))
            known.update({s: row for s, row in zip(missing, new, strict=True)})
            keys = sorted(known)
            save_npz(f, starts=np.array(keys, np.int64), logits=np.stack([known[k] for k in keys]))
        return np.stack([known[int(s)] for s in starts])


def save_npz(path: Path, **arrays: Any) -> None:
    """Write `arrays` to `path` (.npz) whole or not at all: runs may share a cache dir."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def teacher_class_map(path: Path) -> LabelSet:
    from quantize.labels import load_labels

    return load_labels(path)
