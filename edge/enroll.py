"""A few example recordings -> a class prototype in the student's embedding; prototypes -> enrolled classes.

Embedding. The shipped student has one output, frame probabilities over its K AudioSet classes (no
embedding layer is exposed). Its representation of a sound is therefore the K-vector of log
probabilities, pooled over the sound's frames by linear-softmax (`sum p^2 / sum p`, the peak scale
the thresholds use) and L2-normalised: `embed`. Sounds the student was not trained on still give distinctive
patterns over its classes (a washing machine looks partly like "Mechanical fan", partly like "Water").
Measured against log-mel statistics on the ESC-50 classes the student never saw, it is the better
representation by a wide margin (benchmarks/results/enroll.md).

Enrolment. A class is the mean of its examples' embeddings (normalised): its prototype. Its own
threshold comes from the leave-one-out similarities of its examples (`threshold_from`), unless the
user gives one. An enrolment
store is a directory of `NAME.json` files (format `tympan-enrolment`, version 1): name, prototype,
threshold, example count and the examples' file names, the model id it was made with. Exports are
one JSON file holding a list of those objects. Every malformed file is an `InputError` naming the file
and the key.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import logmel, silence_floor
from edge.errors import ConfigError, InputError
from edge.inference import Model, pool_clip

log = logging.getLogger(__name__)

FORMAT = "tympan-enrolment"
EXPORT_FORMAT = "tympan-enrolments"
FORMAT_VERSION = 1
LOG_FLOOR = 1e-4  # probabilities below this are one "absent"
MIN_THRESHOLD = 0.5
MAX_THRESHOLD = 0.9  # near-identical examples would otherwise demand near-identical sounds
MAX_EXAMPLES = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}")
ENROLLED_MID = "/t/tympan_enrolled"  # the MID of every enrolled class (AudioSet has none for them)

F32 = npt.NDArray[np.float32]


def default_store() -> str:
    """$TYMPAN_ENROLL_DIR, else $XDG_DATA_HOME/tympan/enrolled, else ~/.local/share/tympan/enrolled."""
    env = os.environ.get("TYMPAN_ENROLL_DIR")
    if env:
        return env
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "tympan", "enrolled")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(
            f"enrolment name {name!r}: use 1-64 letters, digits, spaces, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def embed_frames(frames: npt.NDArray[np.float32]) -> F32:
    """Frame probabilities [T, K] -> the L2-normalised log of their linear-softmax pooling [K]."""
    v = np.log(pool_clip(np.asarray(frames, np.float32)) + LOG_FLOOR)
    v = v - v.mean()
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)


def model_frames(model: Model, x: npt.NDArray[np.floating]) -> F32:
    """Mono audio -> the model's frame probabilities over half-overlapping windows [T, K]."""
    lm = logmel(np.asarray(x, np.float32), model.frontend)
    w = model.window_frames
    if len(lm) < w:
        lm = np.concatenate([lm, np.full((w - len(lm), lm.shape[1]), silence_floor(model.frontend), np.float32)])
    starts = list(range(0, len(lm) - w + 1, w // 2))
    if starts[-1] != len(lm) - w:
        starts.append(len(lm) - w)
    return np.concatenate([model.predict(lm[s : s + w]) for s in starts]).astype(np.float32)


def embed(model: Model, x: npt.NDArray[np.floating]) -> F32:
    """Mono audio -> its embedding [K] (see the module docstring)."""
    a = np.asarray(x, np.float32)
    if a.ndim == 2:
        a = a.mean(axis=0)
    if a.ndim != 1 or len(a) == 0:
        raise InputError(f"enrol: expected mono audio, got shape {a.shape}")
    return embed_frames(model_frames(model, a))


@dataclass(frozen=True)
class Enrolment:
    name: str
    prototype: F32
    threshold: float
    n_examples: int
    model_id: str
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "name": self.name,
            "model": self.model_id,
            "threshold": round(self.threshold, 4),
            "n_examples": self.n_examples,
            "files": list(self.files),
            "prototype": [round(float(v), 6) for v in self.prototype],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Enrolment:
        def bad(key: str, why: str) -> InputError:
            return InputError(f"{where}: key {key!r}: {why}")

        if not isinstance(d, dict):
            raise InputError(f"{where}: expected an enrolment object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise bad("format", f"expected {FORMAT!r}, got {d.get('format')!r}")
        if d.get("version") != FORMAT_VERSION:
            raise bad("version", f"unsupported {d.get('version')!r} (this reader reads {FORMAT_VERSION})")
        for key in ("name", "model", "threshold", "n_examples", "prototype"):
            if key not in d:
                raise bad(key, "is missing")
        name = d["name"]
        try:
            check_name(name)
        except InputError as e:
            raise bad("name", str(e)) from None
        if not isinstance(d["model"], str) or not d["model"]:
            raise bad("model", f"expected the model id string, got {d['model']!r}")
        thr = d["threshold"]
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not -1.0 < thr < 1.0:
            raise bad("threshold", f"expected a cosine similarity in (-1, 1), got {thr!r}")
        n = d["n_examples"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise bad("n_examples", f"expected a positive integer, got {n!r}")
        proto = d["prototype"]
        numbers = isinstance(proto, list) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in proto
        )
        if not proto or not numbers:
            raise bad("prototype", "expected a non-empty list of finite numbers")
        p = np.asarray(proto, np.float32)
        if not 0.9 < float(np.linalg.norm(p)) < 1.1:
            raise bad("prototype", f"expected a unit vector, its norm is {float(np.linalg.norm(p)):.3f}")
        files = d.get("files", [])
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise bad("files", "expected a list of file names")
        return cls(name, p, float(thr), int(n), d["model"], tuple(files))


def threshold_from(examples: npt.NDArray[np.float32]) -> float:
    """A class's own threshold from its examples' embeddings [n, K]: the mean minus one standard
    deviation of the leave-one-out similarities (each example to the prototype of the others), within
    [`MIN_THRESHOLD`, `MAX_THRESHOLD`]; one example gives `MIN_THRESHOLD`."""
    if len(examples) < 2:
        return MIN_THRESHOLD
    loo = []
    for i in range(len(examples)):
        rest = np.delete(examples, i, axis=0).mean(axis=0)
        loo.append(float(examples[i] @ (rest / (np.linalg.norm(rest) + 1e-12))))
    return min(MAX_THRESHOLD, max(MIN_THRESHOLD, float(np.mean(loo) - np.std(loo))))


def label_clash(name: str, model: Model) -> str | None:
    """The model's label that `name` would be confused with (the same name, ignoring case), or None: an
    enrolled class and a model label of one name would give events that no subscriber can tell apart."""
    key = name.casefold()
    return next((lb.name for lb in model.labels if lb.name.casefold() == key), None)


def build(
    model: Model,
    name: str,
    examples: list[npt.NDArray[np.floating]],
    files: tuple[str, ...] = (),
    threshold: float | None = None,
) -> Enrolment:
    """An enrolment from a handful of example recordings (mono or multichannel, at the model's rate)."""
    check_name(name)
    clash = label_clash(name, model)
    if clash is not None:
        raise InputError(f"enrol {name!r}: model {model.id!r} already has the label {clash!r}; choose another name")
    if not examples:
        raise InputError(f"enrol {name!r}: no example recordings")
    if len(examples) > MAX_EXAMPLES:
        raise InputError(f"enrol {name!r}: {len(examples)} examples; at most {MAX_EXAMPLES}")
    if threshold is not None and not -1.0 < threshold < 1.0:
        raise InputError(f"enrol {name!r}: threshold {threshold!r} must be a cosine similarity in (-1, 1)")
    e = np.stack([embed(model, x) for x in examples])
    proto = e.mean(axis=0)
    proto /= np.linalg.norm(proto) + 1e-12
    if threshold is None:
        threshold = threshold_from(e)
    return Enrolment(name, proto.astype(np.float32), float(min(threshold, 0.99)), len(e), model.id, files)


class EnrolmentStore:
    """A directory of enrolments, one `NAME.json` each."""

    def __init__(self, directory: str | None = None) -> None:
        self.dir = directory or default_store()

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, check_name(name) + ".json")

    def names(self) -> list[str]:
        if not os.path.isdir(self.dir):
            return []
        return sorted(f[:-5] for f in os.listdir(self.dir) if f.endswith(".json"))

    def load(self, name: str) -> Enrolment:
        path = self._path(name)
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise InputError(f"no enrolment {name!r} in {self.dir}") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read the enrolment ({e.strerror})") from None
        except ValueError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None
        en = Enrolment.from_dict(d, path)
        if en.name != name:
            raise InputError(f"{path}: key 'name': {en.name!r} does not match the file name {name!r}")
        return en

    def all(self) -> list[Enrolment]:
        return [self.load(n) for n in self.names()]

    def save(self, en: Enrolment, replace: bool = False) -> str:
        path = self._path(en.name)
        if os.path.exists(path) and not replace:
            raise InputError(f"enrolment {en.name!r} already exists in {self.dir} (remove it first, or --replace)")
        os.makedirs(self.dir, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(en.to_dict(), f)
        os.replace(tmp, path)
        return path

    def remove(self, name: str) -> None:
        path = self._path(name)
        if not os.path.exists(path):
            raise InputError(f"no enrolment {name!r} in {self.dir}")
        os.remove(path)

    def export(self, path: str, names: list[str] | None = None) -> int:
        ens = [self.load(n) for n in names] if names else self.all()
        doc = {"format": EXPORT_FORMAT, "version": FORMAT_VERSION, "enrolments": [e.to_dict() for e in ens]}
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(doc, f)
        except OSError as e:
            raise InputError(f"{path}: cannot write the export ({e.strerror or e})") from None
        return len(ens)

    def import_file(self, path: str, replace: bool = False) -> list[str]:
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except OSError as e:
            raise InputError(f"{path}: cannot read the export ({e.strerror})") from None
        except ValueError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise InputError(f"{path}: key 'format': expected {EXPORT_FORMAT!r}, got {got!r}")
        if doc.get("version") != FORMAT_VERSION:
            raise InputError(f"{path}: key 'version': unsupported {doc.get('version')!r}")
        items = doc.get("enrolments")
        if not isinstance(items, list):
            raise InputError(f"{path}: key 'enrolments': expected a list")
        ens = [Enrolment.from_dict(d, f"{path}: enrolments[{i}]") for i, d in enumerate(items)]
        seen = [e.name for e in ens]
        dup = sorted({n for n in seen if seen.count(n) > 1})
        if dup:
            raise InputError(f"{path}: key 'enrolments': {dup[0]!r} appears twice")
        if not replace:
            clash = [e.name for e in ens if e.name in self.names()]
            if clash:
                raise InputError(f"{path}: enrolment {clash[0]!r} already exists in {self.dir} (use --replace)")
        for en in ens:  # everything was checked first: an import is all or nothing
            self.save(en, replace=True)
        return seen


class EnrolledClassifier:
    """Embedding -> cosine similarity to every enrolled prototype [N] (the enrolled classes' scores)."""

    def __init__(self, enrolments: list[Enrolment], model: Model) -> None:
        if not enrolments:
            raise ConfigError("no enrolled classes to match")
        k = len(model.labels)
        for e in enrolments:
            clash = label_clash(e.name, model)
            if clash is not None:
                raise InputError(
                    f"enrolment {e.name!r} has the name of the label {clash!r} of model {model.id!r}: remove it "
                    "and enrol it again under another name"
                )
            if e.prototype.shape != (k,):
                raise InputError(
                    f"enrolment {e.name!r} has a {e.prototype.shape[0]}-d prototype but model {model.id!r} has "
                    f"{k} classes: enrol it again with this model"
                )
            if e.model_id != model.id:
                log.warning("enrolment %r was made with model %r, not %r: enrol it again if it misfires",
                            e.name, e.model_id, model.id)  # fmt: skip
        self.enrolments = enrolments
        self.protos = np.stack([e.prototype for e in enrolments])
        self.thresholds = np.array([e.threshold for e in enrolments], np.float32)
        self.names = tuple(e.name for e in enrolments)

    def scores(self, frames: npt.NDArray[np.float32]) -> F32:
        return np.clip(self.protos @ embed_frames(frames), 0.0, 1.0).astype(np.float32)

    def classify(self, emb: F32) -> tuple[int, float]:
        s = self.protos @ emb
        k = int(np.argmax(s))
        return k, float(s[k])
