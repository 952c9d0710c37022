"""Label table CSV -> `LabelSet` (the student's classes, a subset of the teacher's AudioSet classes).

A label file has the columns `index,mid,display_name`; `index` counts 0..K-1 in file order. Every MID
must exist in the teacher's class map, which is the same format with the teacher's 521 classes.
The dataset mapping file (`dataset,label,mid,display_name`) maps a dataset's own label to the
AudioSet MIDs it implies; MIDs outside the student's label set are an error.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError

LABEL_COLUMNS = ("index", "mid", "display_name")
MAPPING_COLUMNS = ("dataset", "label", "mid", "display_name")


def packaged_data(name: str) -> Path:
    """Path of a data file shipped in `quantize/data/`."""
    return Path(str(resources.files("quantize").joinpath("data", name)))


@dataclass(frozen=True)
class LabelSet:
    """An ordered class table. `mids[i]` / `names[i]` describe output column i."""

    mids: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.mids)

    def index_of(self, mid: str) -> int:
        return self.mids.index(mid)

    def columns_in(self, teacher: LabelSet) -> npt.NDArray[np.int64]:
        """Indices into `teacher`'s columns of each of our classes (teacher must hold all our MIDs)."""
        pos = {m: i for i, m in enumerate(teacher.mids)}
        missing = [m for m in self.mids if m not in pos]
        if missing:
            raise ConfigError(f"label set has MID(s) the teacher lacks: {missing[:5]}")
        return np.array([pos[m] for m in self.mids], dtype=np.int64)

    def write_csv(self, path: Path) -> None:
        with path.open("w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(LABEL_COLUMNS)
            for i, (m, n) in enumerate(zip(self.mids, self.names, strict=True)):
                w.writerow([i, m, n])


def _read_rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with the required `columns` as (line number, row)."""
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise ConfigError(f"{path}: line 1: missing column(s) {missing}; header is {header}")
            rows = [(reader.line_num, dict(r)) for r in reader]
    except OSError as e:
        raise ConfigError(f"{path}: cannot read label file: {e.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not a readable CSV: {e}") from None
    for line, r in rows:
        empty = [c for c in columns if not (r.get(c) or "").strip()]
        if empty:
            raise ConfigError(f"{path}: line {line}: empty value in column(s) {empty}")
    return rows


def load_labels(path: Path, teacher_map: LabelSet | None = None) -> LabelSet:
    """Read a label file; check indices run 0..K-1, MIDs are unique and (if given) in `teacher_map`."""
    rows = _read_rows(path, LABEL_COLUMNS)
    if not rows:
        raise ConfigError(f"{path}: label file has no classes")
    mids: list[str] = []
    names: list[str] = []
    for expected, (line, r) in enumerate(rows):
        if r["index"].strip() != str(expected):
            raise ConfigError(f"{path}: line {line}: index {r['index']!r}, expected {expected}")
        mid = r["mid"].strip()
        if mid in mids:
            raise ConfigError(f"{path}: line {line}: duplicate MID {mid!r}")
        if teacher_map is not None and mid not in teacher_map.mids:
            raise ConfigError(f"{path}: line {line}: MID {mid!r} ({r['display_name']!r}) is not a teacher class")
        mids.append(mid)
        names.append(r["display_name"].strip())
    return LabelSet(tuple(mids), tuple(names))


def load_dataset_mapping(path: Path, labels: LabelSet) -> dict[tuple[str, str], tuple[int, ...]]:
    """(dataset, dataset label) -> indices into `labels` of the AudioSet classes it implies."""
    out: dict[tuple[str, str], list[int]] = {}
    for line, r in _read_rows(path, MAPPING_COLUMNS):
        mid = r["mid"].strip()
        if mid not in labels.mids:
            raise ConfigError(f"{path}: line {line}: MID {mid!r} ({r['display_name']!r}) is not in the label set")
        out.setdefault((r["dataset"].strip(), r["label"].strip()), []).append(labels.index_of(mid))
    return {k: tuple(v) for k, v in out.items()}
