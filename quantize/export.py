"""fp32 `Student` -> fp32 `.onnx`; run artefacts -> model directory (model.json, labels, card).

The model directory is what `edge/` loads: `model_int8.tflite`, `model_int8.onnx`, `labels.csv`
(index,mid,display_name), `model.json` (format_version 1: frontend, window and output hop, class count,
files and their sha256, thresholds, pooling, teacher, training provenance, metrics) and `MODEL_CARD.md`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import ModelError
from quantize.audio import F32
from quantize.labels import LabelSet
from quantize.teacher import file_sha256

if TYPE_CHECKING:
    from quantize.student import Student

FORMAT_VERSION = 1
TFLITE_NAME = "model_int8.tflite"
ONNX_NAME = "model_int8.onnx"
MODEL_FILES = {"tflite": TFLITE_NAME, "onnx": ONNX_NAME}
STREAM_KEY, STREAM_NAME = "tflite_stream", "model_int8_stream.tflite"  # quantize.stream
INPUT_NAME = "logmel"
OUTPUT_NAME = "probs"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence converter chatter (progress output, deprecation notes) during a conversion step."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
    finally:
        root.setLevel(level)


def export_onnx_fp32(model: Student, window_frames: int, n_mels: int, out: Path) -> None:
    """TorchScript-based ONNX export (opset 17) of the BatchNorm-folded student, as its `onnx_view`."""
    import torch

    model.eval()
    view = model.onnx_view().eval()
    x = torch.zeros(1, window_frames, n_mels)
    with quiet():
        torch.onnx.export(
            view,
            (x,),
            str(out),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=False,
            opset_version=17,
        )


def pick_thresholds(
    scores: F32, targets: F32, names: tuple[str, ...], default: float, min_positives: int, floor: float
) -> dict[str, float]:
    """Per class, the threshold on clip scores [N, K] maximising F1 against 0/1 targets [N, K]
    where the class has at least `min_positives` positives; `default` elsewhere. Thresholds below
    `floor` are not considered: on a stream, a very low threshold fires on noise."""
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    grid = grid[grid >= floor - 1e-9]
    out: dict[str, float] = {}
    for k, name in enumerate(names):
        pos = targets[:, k] > 0.5
        if pos.sum() < min_positives:
            out[name] = default
            continue
        best, best_f1 = default, -1.0
        for t in grid:
            pred = scores[:, k] >= t
            tp = float(np.sum(pred & pos))
            f1 = 2 * tp / max(float(pred.sum() + pos.sum()), 1.0)
            if f1 > best_f1 + 1e-9:
                best, best_f1 = float(t), f1
        out[name] = best
    return out


def write_model_dir(
    out: Path,
    tflite: Path,
    onnx_path: Path,
    labels: LabelSet,
    meta: dict[str, Any],
    card: str,
    stream_tflite: Path | None = None,
) -> dict[str, Any]:
    """Copy the model files (and the streaming TFLite model, quantize.stream), write labels.csv,
    model.json (with sha256) and MODEL_CARD.md."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tflite, out / TFLITE_NAME)
    shutil.copyfile(onnx_path, out / ONNX_NAME)
    files = dict(MODEL_FILES)
    stale = out / STREAM_NAME
    if stream_tflite is not None:
        shutil.copyfile(stream_tflite, out / STREAM_NAME)
        files[STREAM_KEY] = STREAM_NAME
    elif stale.exists():
        stale.unlink()
    labels.write_csv(out / "labels.csv")
    model_json = dict(meta)
    model_json["format_version"] = FORMAT_VERSION
    model_json["num_classes"] = len(labels)
    model_json["files"] = files
    model_json["sha256"] = {name: file_sha256(out / name) for name in files.values()}
    (out / "model.json").write_text(json.dumps(model_json, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(card)
    return model_json


def check_model_dir(d: Path) -> dict[str, Any]:
    """Load model.json and verify files, hashes and label count; return it. Raises ModelError."""
    try:
        meta: dict[str, Any] = json.loads((d / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{d / 'model.json'}: unreadable ({e})") from None
    for name in meta.get("files", {}).values():
        if not (d / name).is_file():
            raise ModelError(f"{d}: model file {name!r} missing")
        if meta["sha256"].get(name) != file_sha256(d / name):
            raise ModelError(f"{d / name}: sha256 does not match model.json")
    from quantize.labels import load_labels

    labels = load_labels(d / "labels.csv")
    if len(labels) != meta.get("num_classes"):
        raise ModelError(f"{d}: labels.csv has {len(labels)} classes, model.json says {meta.get('num_classes')}")
    return meta


def install_model_dir(src: Path, dest: Path) -> None:
    """Replace `dest` (e.g. edge/models/default) with a verified copy of model directory `src`."""
    check_model_dir(src)
    tmp = dest.with_name(dest.name + ".installing")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
