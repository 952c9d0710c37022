"""Scores -> Events: causal sound event detection on frame-level probabilities.

Per class, a small state machine with hysteresis: a class turns ON when its probability stays at or
above its on-threshold for `min_on_frames` frames while it is among the `top_k` classes of the frame
(probability relative to threshold), or at once when a frame is at least `instant_on_ratio` times its
on-threshold (0: never); the event's onset is the first of those frames. It turns OFF
after `max_gap_frames` consecutive frames below its off-threshold (`off_ratio` x on-threshold); the
offset is the end of the last frame at or above the off-threshold. While active, an `upd` phase is
emitted every `update_interval_s`. Classes in `ignore` (by default AudioSet's "Silence") are scored
but never reported as events. Everything is driven by stream frame indices, so the events do
not depend on how the audio was cut into blocks.

Optional, off by default: a causal median filter over the last `median_frames` frames of each class's
probability (a step then shows `median_frames // 2` frames late, and onsets and offsets are moved back
by that much), and per-class thresholds that replace the model's (`thresholds`, label -> on-threshold; read
from a thresholds file with `load_thresholds`, the format `tympan evaluate sed` writes:
`{"thresholds": {label: threshold, ...}, ...}`, other keys are provenance).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError
from edge.inference import Label
from edge.messages import Event, Phase, Scores


@dataclass(frozen=True)
class SedConfig:
    threshold_scale: float = 1.0
    off_ratio: float = 0.6
    min_on_frames: int = 2
    instant_on_ratio: float = 0.0  # a frame this many times its on-threshold turns a class on at once; 0: off
    # ... and at least this probability: one frame of a class with a low threshold (0.2) is weak evidence
    instant_on_min: float = 0.5
    max_gap_frames: int = 6
    top_k: int = 3
    update_interval_s: float = 2.0
    # classes that describe the absence of events: tagged, but never reported as events
    ignore: tuple[str, ...] = ("Silence",)
    # causal median filter length in frames over each class's probabilities (1 = off; odd)
    median_frames: int = 1
    # per-class on-thresholds (label, threshold) replacing the model's; others keep the model's
    thresholds: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if not 0.1 <= self.threshold_scale <= 10.0:
            raise ConfigError(f"sed threshold_scale={self.threshold_scale!r}: must be in [0.1, 10]")
        if not 0.0 < self.off_ratio <= 1.0:
            raise ConfigError(f"sed off_ratio={self.off_ratio!r}: must be in (0, 1]")
        if self.min_on_frames < 1 or self.max_gap_frames < 0 or self.top_k < 1:
            raise ConfigError(
                f"sed min_on_frames={self.min_on_frames!r}, max_gap_frames={self.max_gap_frames!r}, "
                f"top_k={self.top_k!r}: need min_on_frames >= 1, max_gap_frames >= 0, top_k >= 1"
            )
        if not (self.instant_on_ratio == 0.0 or 1.0 <= self.instant_on_ratio <= 10.0):
            raise ConfigError(f"sed instant_on_ratio={self.instant_on_ratio!r}: must be 0 (off) or in [1, 10]")
        if not 0.0 <= self.instant_on_min <= 1.0:
            raise ConfigError(f"sed instant_on_min={self.instant_on_min!r}: must be in [0, 1]")
        if self.update_interval_s <= 0:
            raise ConfigError(f"sed update_interval_s={self.update_interval_s!r}: must be > 0")
        if not (1 <= self.median_frames <= 51 and self.median_frames % 2 == 1):
            raise ConfigError(f"sed median_frames={self.median_frames!r}: must be odd, in [1, 51]")
        for name, thr in self.thresholds:
            if not (isinstance(thr, float | int) and 0.0 < thr < 1.0):
                raise ConfigError(f"sed threshold for {name!r}: {thr!r} must be a number in (0, 1)")


THRESHOLDS_KEY = "thresholds"


def load_thresholds(path: str | Path) -> tuple[tuple[str, float], ...]:
    """A thresholds file -> (label, threshold) pairs for `SedConfig.thresholds`.

    The file is JSON: `{"thresholds": {"Dog": 0.31, ...}, ...}`; every value must be a number in (0, 1).
    Whether the labels exist is checked when the stage meets the model's label table.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the thresholds file ({e.strerror})") from None
    except ValueError as e:
        raise ConfigError(f"{path}: the thresholds file is not valid JSON ({e})") from None
    table = doc.get(THRESHOLDS_KEY) if isinstance(doc, dict) else None
    if not isinstance(table, dict) or not table:
        raise ConfigError(f'{path}: expected a JSON object {{"{THRESHOLDS_KEY}": {{label: threshold, ...}}}}')
    out: list[tuple[str, float]] = []
    for name, thr in table.items():
        if isinstance(thr, bool) or not isinstance(thr, float | int) or not math.isfinite(thr) or not 0 < thr < 1:
            raise ConfigError(f"{path}: threshold for {name!r} is {thr!r}; must be a number in (0, 1)")
        out.append((str(name), float(thr)))
    return tuple(out)


def apply_thresholds(
    labels: tuple[Label, ...],
    base: npt.NDArray[np.float32],
    overrides: Mapping[str, float] | tuple[tuple[str, float], ...],
) -> npt.NDArray[np.float32]:
    """The model's per-class thresholds with `overrides` (label -> threshold) applied; unknown labels raise."""
    table = dict(overrides)
    index = {lb.name: lb.index for lb in labels}
    unknown = sorted(set(table) - set(index))
    if unknown:
        raise ConfigError(f"thresholds for unknown label(s) {unknown[:5]}: not in the model's label table")
    out = np.array(base, np.float32, copy=True)
    for name, thr in table.items():
        out[index[name]] = thr
    return out


@dataclass
class _ClassState:
    run_start: int = -1  # first frame of the current above-threshold run (pending or active)
    run_len: int = 0
    active: bool = False
    event_id: int = -1
    last_above: int = -1  # last frame at or above the off threshold
    gap: int = 0
    p_max: float = 0.0
    p_sum: float = 0.0
    n: int = 0
    last_update: float = 0.0
    onset_frame: int = -1


@dataclass
class SedStage:
    labels: tuple[Label, ...]
    thresholds: npt.NDArray[np.float32]
    config: SedConfig = field(default_factory=SedConfig)

    def __post_init__(self) -> None:
        base = apply_thresholds(self.labels, self.thresholds, self.config.thresholds)
        self.on_thr = np.clip(base * self.config.threshold_scale, 1e-3, 0.999).astype(np.float32)
        self.off_thr = (self.on_thr * self.config.off_ratio).astype(np.float32)
        # a frame at or above this turns its class on at once (instant_on_ratio, instant_on_min; inf: never)
        ratio = self.config.instant_on_ratio
        instant = np.maximum(self.on_thr * ratio, np.float32(self.config.instant_on_min))
        self.instant_thr = (instant if ratio else np.full_like(self.on_thr, np.inf)).astype(np.float32)
        self._eligible = np.array([lb.name not in self.config.ignore for lb in self.labels])
        self._states = [_ClassState() for _ in self.labels]
        self._live: set[int] = set()  # classes with a pending run or an active event
        self._next_id = 0
        self._seq = 0
        self._hop_s = 0.0
        self._frame_end = 0
        self._shift = self.config.median_frames // 2  # frames a step is delayed by the median filter
        self._history = np.zeros((0, len(self.labels)), np.float32)  # last median_frames - 1 raw frames

    def _event(self, k: int, phase: Phase, st: _ClassState, emitted: float, offset: float | None) -> Event:
        lb = self.labels[k]
        # the median filter shows both edges of a step median_frames // 2 frames late: move them back
        onset = max(st.onset_frame - self._shift, 0) * self._hop_s
        ev = Event(
            id=st.event_id,
            phase=phase,
            label=lb.name,
            mid=lb.mid,
            code=lb.index,
            p=round(st.p_max, 3),
            onset=round(onset, 3),
            offset=None if offset is None else round(max(offset - self._shift * self._hop_s, onset + self._hop_s), 3),
            emitted=round(emitted, 3),
            seq=self._seq,
            level_dbfs=float("nan"),
        )
        self._seq += 1
        return ev

    def process(self, scores: Scores) -> list[Event]:
        self._hop_s = scores.hop_s
        cfg = self.config
        out: list[Event] = []
        probs = self._median(scores.probs)
        n_rows = probs.shape[0]
        if n_rows == 0:
            return out
        above_off_all = probs >= self.off_thr
        if not self._live and not above_off_all.any():  # quiet: nothing can start (on >= off), nothing is open
            self._frame_end = scores.index + n_rows
            return out
        # the per-frame tests of every class at once, all frames of the call together ([R, K])
        above_on_all = (probs >= self.on_thr) & self._eligible
        if (
            cfg.top_k < probs.shape[1]
            and np.count_nonzero(above_on_all) > cfg.top_k  # fewer in all frames together: none has more
            and int(above_on_all.sum(axis=1).max()) > cfg.top_k
        ):
            # more classes above their on-threshold than top-k slots in some frame: keep the top-k by
            # probability relative to threshold (with at most top_k above, every one of them is in the top k)
            rel = np.where(self._eligible, probs / self.on_thr, -np.inf)  # ignored classes take no top-k slot
            kth = np.partition(rel, -cfg.top_k, axis=1)[:, -cfg.top_k]
            above_on_all &= rel >= kth[:, None]
        rows, cols = np.nonzero(above_off_all)  # above an on-threshold is above the off-threshold too
        cand_rows = np.searchsorted(rows, np.arange(n_rows + 1)).tolist()
        cand_cols = cols.tolist()
        live = self._live
        # Python lists: the same values (float32 -> float is exact) without numpy's per-element cost
        probs_l, on_l, off_l = probs.tolist(), above_on_all.tolist(), above_off_all.tolist()
        instant = self.instant_thr.tolist()
        for r in range(n_rows):
            j = scores.index + r
            c0, c1 = cand_rows[r], cand_rows[r + 1]
            if c0 == c1 and not live:
                self._frame_end = j + 1
                continue
            now = max((j + 1) * scores.hop_s, scores.ready)
            p = probs_l[r]
            above_on, above_off = on_l[r], off_l[r]
            # the classes to visit: this frame's candidates and the pending or active classes, as the
            # same set (so in the same iteration order) as one built from ascending class indices
            visit = set(cand_cols[c0:c1]) | set(sorted(live))
            for k in visit:
                st = self._states[k]
                if st.active:
                    if above_off[k]:
                        st.last_above, st.gap = j, 0
                        st.p_max = max(st.p_max, p[k])
                        if now - st.last_update >= cfg.update_interval_s:
                            st.last_update = now
                            out.append(self._event(k, "upd", st, now, None))
                    else:
                        st.gap += 1
                        if st.gap > cfg.max_gap_frames:
                            out.append(self._event(k, "off", st, now, (st.last_above + 1) * scores.hop_s))
                            self._states[k] = _ClassState()
                    continue
                if above_on[k]:
                    if st.run_len == 0:
                        st.run_start, st.p_max = j, 0.0
                    st.run_len += 1
                    st.p_max = max(st.p_max, p[k])
                    if st.run_len >= cfg.min_on_frames or p[k] >= instant[k]:
                        st.active, st.onset_frame, st.last_above, st.gap = True, st.run_start, j, 0
                        st.event_id = self._next_id
                        self._next_id += 1
                        st.last_update = now
                        out.append(self._event(k, "on", st, now, None))
                else:
                    st.run_len = 0
            for k in visit:  # pending or active after this frame
                st = self._states[k]
                if st.run_len or st.active:
                    live.add(k)
                else:
                    live.discard(k)
            self._frame_end = j + 1
        return out

    def _median(self, probs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Causal running median over the last `median_frames` frames (stream start: fewer frames)."""
        n = self.config.median_frames
        if n == 1:
            return probs
        joined = np.concatenate([self._history, probs])
        start = len(self._history)
        out = np.empty_like(probs)
        for r in range(len(probs)):
            end = start + r + 1
            out[r] = np.median(joined[max(0, end - n) : end], axis=0)
        self._history = joined[-(n - 1) :]
        return out

    def flush(self) -> list[Event]:
        """Close every active event at the end of the stream."""
        out = []
        now = self._frame_end * self._hop_s
        for k, st in enumerate(self._states):
            if st.active:
                out.append(self._event(k, "off", st, now, (st.last_above + 1) * self._hop_s))
            self._states[k] = _ClassState()
        self._live.clear()
        return out
