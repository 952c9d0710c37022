"""Blocks + the pipeline's Events -> Events with states and traits, plus the enrolled classes' events.

`AnnotatedPipeline` wraps an `EdgePipeline` (same `process`/`flush` interface, so `edge.pipeline.run`
and the CLI drive it unchanged). It keeps the last `ring_s` seconds of the audio it forwards and, for
each event phase the pipeline decides:

- computes the DSP-derived states (`edge.states`) of the event's audio, from its onset to its
  offset (or emission), at most the last `max_state_s` seconds; with an array, the lateral state
  from the event's azimuth track (SRP-PHAT on `track_step_s` slices of the same audio);
- adds the states and traits its label implies (`edge.ontology`) and, with an anomaly model whose
  source the label belongs to, the condition state (`edge.anomaly`);
- keeps only what the ontology says applies to the label's source (no "accelerating" dog).

With enrolments (`edge.enroll`) it also embeds the newest model window every `enrolled_hop_s` and
scores it against every prototype; those scores go through their own `SedStage`, each class with its
own threshold, so an enrolled class has `on`/`upd`/`off` events like any other, with ids from
`ENROLLED_ID_BASE` and class codes after the model's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.anomaly import AnomalyModel
from edge.enroll import ENROLLED_MID, EnrolledClassifier
from edge.errors import ConfigError
from edge.inference import Label, Model
from edge.messages import Block, Event, Scores, StateEstimate
from edge.ontology import Ontology, load_ontology
from edge.pipeline import EdgePipeline
from edge.sed import SedConfig, SedStage
from edge.states import dsp_states, lateral_state

ENROLLED_ID_BASE = 0x4000_0000
# the order of states in an event (the first is the token's `st`): what it does, then how it is doing
STATE_ORDER = ("operation", "condition", "speed", "motion", "lateral", "temporal")


@dataclass(frozen=True)
class AnnotateConfig:
    ring_s: float = 30.0
    max_state_s: float = 10.0
    min_state_s: float = 0.3  # shorter event audio gets no DSP states (only what its label implies)
    track_step_s: float = 0.25
    enrolled_hop_s: float = 0.24
    enrolled_window_s: float = 0.96
    enrolled_min_dbfs: float = -60.0  # quieter windows are not matched against enrolled classes
    # an enrolled class turns off below this fraction of its threshold: the scores are cosine similarities,
    # where unrelated sounds sit at 0.3-0.5, so the SED's 0.6 for probabilities would hold it on in noise
    enrolled_off_ratio: float = 0.9
    min_p: float = 0.5  # states below this confidence are not reported

    def __post_init__(self) -> None:
        if not 1.0 <= self.ring_s <= 600.0:
            raise ConfigError(f"annotate ring_s={self.ring_s!r}: must be in [1, 600] s")
        if not 0.5 <= self.max_state_s <= self.ring_s:
            raise ConfigError(f"annotate max_state_s={self.max_state_s!r}: must be in [0.5, ring_s]")
        if not 0.5 <= self.enrolled_off_ratio <= 1.0:
            raise ConfigError(f"annotate enrolled_off_ratio={self.enrolled_off_ratio!r}: must be in [0.5, 1]")
        if not 0.0 <= self.min_p <= 1.0:
            raise ConfigError(f"annotate min_p={self.min_p!r}: must be in [0, 1]")


class AudioRing:
    """The last `n` samples of multichannel audio with their stream sample index."""

    def __init__(self, channels: int, n: int) -> None:
        self.buf = np.zeros((channels, n), np.float32)
        self.end = 0  # stream index of the sample after the newest

    def push(self, x: npt.NDArray[np.float32]) -> None:
        n = self.buf.shape[1]
        if x.shape[1] >= n:
            self.buf[:] = x[:, -n:]
        else:
            self.buf = np.roll(self.buf, -x.shape[1], axis=1)
            self.buf[:, -x.shape[1] :] = x
        self.end += x.shape[1]

    def get(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Samples [start, stop) of the stream that are still held (clipped to what is)."""
        n = self.buf.shape[1]
        first = self.end - n
        start, stop = max(start, first, 0), min(stop, self.end)
        if stop <= start:
            return np.zeros((self.buf.shape[0], 0), np.float32)
        return self.buf[:, start - first : stop - first]


class AnnotatedPipeline:
    def __init__(
        self,
        pipeline: EdgePipeline,
        ontology: Ontology | None = None,
        anomaly: AnomalyModel | None = None,
        enrolled: EnrolledClassifier | None = None,
        config: AnnotateConfig | None = None,
        states: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self.ontology = ontology or load_ontology()
        self.anomaly = anomaly
        self.enrolled = enrolled
        self.config = cfg = config or AnnotateConfig()
        self.states = states
        self.sr = pipeline.spec.sample_rate
        channels = pipeline.array.n_mics if pipeline.array is not None else 1
        self._channels = channels
        self.ring: AudioRing | None = None
        self._ring_n = round(cfg.ring_s * self.sr)
        self._enr_hop = round(cfg.enrolled_hop_s * self.sr)
        self._enr_win = round(cfg.enrolled_window_s * self.sr) + pipeline.spec.win
        # the first full window, on the hop grid; a window's score is placed at its centre
        self._enr_next = -(-round(cfg.enrolled_window_s * self.sr) // self._enr_hop) * self._enr_hop
        self._enr_shift = round(cfg.enrolled_window_s / 2 / cfg.enrolled_hop_s)
        self.enrolled_labels: tuple[Label, ...] = ()
        self._enr_sed: SedStage | None = None
        if enrolled is not None:
            k = len(pipeline.model.labels)
            self.enrolled_labels = tuple(Label(k + i, ENROLLED_MID, n) for i, n in enumerate(enrolled.names))
            enr_cfg = SedConfig(ignore=(), top_k=1, off_ratio=cfg.enrolled_off_ratio)
            self._enr_sed = SedStage(self.enrolled_labels, enrolled.thresholds, enr_cfg)

    # the EdgePipeline interface -------------------------------------------------------------------
    @property
    def stream_time(self) -> float:
        return self.pipeline.stream_time

    def level_dbfs(self, seconds: float = 1.0) -> float | None:
        return self.pipeline.level_dbfs(seconds)

    def process(self, block: Block) -> list[Event]:
        if self.ring is None:
            self.ring = AudioRing(block.channels, self._ring_n)
        events = self.pipeline.process(block)  # checks the block's channels against the array first
        self.ring.push(block.samples)
        events += self._enrolled_events(final=False)
        return [self.annotate(e) for e in events]

    def flush(self) -> list[Event]:
        events = self.pipeline.flush() + self._enrolled_events(final=True)
        return [self.annotate(e) for e in events]

    # enrolled classes ----------------------------------------------------------------------------
    def _enrolled_events(self, final: bool) -> list[Event]:
        if self.enrolled is None or self._enr_sed is None or self.ring is None:
            return []
        from edge.enroll import model_frames

        out: list[Event] = []
        while self.ring.end >= self._enr_next:
            stop = self._enr_next
            x = self.ring.get(stop - self._enr_win, stop).mean(axis=0)
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0
            lvl = 20.0 * np.log10(rms * np.sqrt(2.0) + 1e-12)
            if lvl >= self.config.enrolled_min_dbfs:
                scores = self.enrolled.scores(model_frames(self.pipeline.model, x))
            else:
                scores = np.zeros(len(self.enrolled.names), np.float32)
            hop_s = self._enr_hop / self.sr
            index = stop // self._enr_hop - self._enr_shift
            msg = Scores(probs=scores[None], t=index * hop_s, seq=index, index=index, hop_s=hop_s,
                         labels=self.enrolled.names, ready=stop / self.sr)  # fmt: skip
            out += self._enr_sed.process(msg)
            self._enr_next += self._enr_hop
        if final:
            out += self._enr_sed.flush()
        return [self._attach_enrolled(e) for e in out]

    def _attach_enrolled(self, ev: Event) -> Event:
        # level of the event's audio: the loudest 40 ms frame, as the pipeline reports it
        lvl = float("nan")
        if self.ring is not None:
            stop = ev.offset if ev.offset is not None else ev.emitted
            x = self.ring.get(round(ev.onset * self.sr), round(stop * self.sr)).mean(axis=0)
            n = round(0.04 * self.sr)
            if len(x) >= n:
                fr = x[: len(x) // n * n].reshape(-1, n).astype(np.float64)
                lvl = round(float(10.0 * np.log10(2.0 * np.max(np.mean(fr**2, axis=1)) + 1e-20)), 1)
        return dataclasses.replace(ev, id=ev.id + ENROLLED_ID_BASE, level_dbfs=lvl)

    # states ----------------------------------------------------------------------------------------
    def annotate(self, ev: Event) -> Event:
        found: list[StateEstimate] = list(self.ontology.implied(ev.label))
        if self.ring is not None and (self.states or self.anomaly is not None):
            stop = ev.offset if ev.offset is not None else ev.emitted
            start = max(ev.onset, stop - self.config.max_state_s)
            audio = self.ring.get(round(start * self.sr), round(stop * self.sr))
            if audio.shape[1] >= self.config.min_state_s * self.sr:
                mono = audio.mean(axis=0)
                if self.states:
                    found += self._head_states(mono, ev.label)
                    found += dsp_states(mono, self.sr)
                    lat = self._lateral(audio)
                    if lat is not None:
                        found.append(lat)
                if self.anomaly is not None and self._anomaly_applies(ev.label):
                    found.append(self.anomaly.state(mono, self.sr))
        groups: dict[str, StateEstimate] = {}
        for s in found:  # one per group, the label's own first (it is certain)
            if s.p >= self.config.min_p and s.group not in groups and self.ontology.applies(ev.label, s.name):
                groups[s.group] = s
        order = {g: i for i, g in enumerate(STATE_ORDER)}
        states = tuple(sorted((s for s in groups.values() if s.name in self.ontology.states),
                              key=lambda s: order.get(s.group, len(order))))  # fmt: skip
        traits = tuple(s for s in groups.values() if s.name in self.ontology.traits)
        if not states and not traits:
            return ev
        return dataclasses.replace(ev, states=states, traits=traits)

    def _head_states(self, mono: npt.NDArray[np.float32], label: str) -> list[StateEstimate]:
        return head_states(self.pipeline.model, self.ontology, mono, label)

    def _anomaly_applies(self, label: str) -> bool:
        assert self.anomaly is not None
        src = self.anomaly.source
        if src == label or src == "*":
            return True
        s = self.ontology.source_of(label)
        return s is not None and s.name == src

    def _lateral(self, audio: npt.NDArray[np.float32]) -> StateEstimate | None:
        loc = self.pipeline.localiser
        if (
            loc is None
            or audio.shape[0] < 2
            or (self.pipeline.array is not None and self.pipeline.array.geometry == "linear")
        ):
            return None
        from edge.dsp.frontend import stft

        step = round(self.config.track_step_s * self.sr)
        ts, az = [], []
        history = None  # onset weights across the steps (`Localiser.stream_cross`)
        for i in range(0, audio.shape[1] - step + 1, step):
            spectra = stft(audio[:, i : i + step], self.pipeline.spec)
            if spectra.shape[2] == 0:
                continue
            cross, history = loc.stream_cross(spectra, history)
            b = loc.bearings(cross.sum(axis=0), n_frames=cross.shape[0])
            if b:
                ts.append((i + step / 2) / self.sr)
                az.append(b[0].azimuth)
        return lateral_state(np.array(ts), np.array(az)) if len(ts) >= 3 else None


def head_states(model: Model, ontology: Ontology, mono: npt.NDArray[np.float32], label: str) -> list[StateEstimate]:
    """The model's learned state/trait heads (model.json `heads`) on an event's mono audio, for the groups
    whose classes apply to the label and whose training sources include the label's source: each head
    column averaged over the audio's frames, the group's best class with that average as its confidence."""
    src = ontology.source_of(label)
    heads = [
        h
        for h in model.heads
        if src is not None
        and (not h.sources or src.name in h.sources)
        and any(ontology.applies(label, c) for c in h.classes)
    ]
    if not heads:
        return []
    from edge.dsp.frontend import logmel, silence_floor

    lm = logmel(mono, model.frontend)
    w, hop = model.window_frames, model.output_hop_frames
    n_real = -(-len(lm) // hop)
    if len(lm) < w:
        lm = np.concatenate([lm, np.full((w - len(lm), lm.shape[1]), silence_floor(model.frontend), np.float32)])
    starts = list(range(0, len(lm) - w + 1, w))
    if starts[-1] != len(lm) - w:
        starts.append(len(lm) - w)
    frames = np.zeros((-(-len(lm) // hop), model.n_outputs), np.float32)
    for st in starts:  # later windows overwrite the overlap: every frame once
        frames[st // hop : st // hop + w // hop] = model.predict_all(lm[st : st + w])
    mean = frames[:n_real].mean(axis=0)
    out = []
    for h in heads:
        p = mean[list(h.columns)]
        best = int(np.argmax(p))
        out.append(StateEstimate(h.classes[best], round(float(p[best]), 3), h.group))
    return out
