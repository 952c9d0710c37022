"""The wiring of the edge data flow (the only module that knows every stage):

    Block -> StftStage -> Spectra -+-> log-mel -> Features -> model windows -> Scores -> SedStage -> Event
                                   +-> PHAT cross-spectra (ring, per output frame) -> Localiser -> Bearing

Stages are pure and synchronous; this module keeps the buffers that join them. The model runs on a
window of `window_frames` log-mel frames every `model_hop_frames` frames and contributes the frame
outputs of the newest hop, so each output frame has the same left context whatever the block size.
The first window is padded with the log-mel of silence. Levels (dBFS, a full-scale sine = 0 dBFS)
and cross-spectra are kept per output frame in rings of `ring_s` seconds; an event's direction is the
SRP-PHAT of the loud frames (within `doa_range_db` of its loudest) between its onset and its emission.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from boards.profiles import ArrayProfile
from edge.dsp import frontend
from edge.errors import ConfigError, InputError
from edge.inference import Model
from edge.localise import Localiser, LocaliserConfig
from edge.messages import Block, Event, Scores
from edge.sed import SedConfig, SedStage
from edge.stft import StftStage


@dataclass(frozen=True)
class PipelineConfig:
    model_hop_frames: int = 12
    ring_s: float = 30.0
    doa_range_db: float = 15.0
    sed: SedConfig = field(default_factory=SedConfig)
    localiser: LocaliserConfig = field(default_factory=LocaliserConfig)

    def __post_init__(self) -> None:
        if not 1.0 <= self.ring_s <= 600.0:
            raise ConfigError(f"ring_s={self.ring_s!r}: must be in [1, 600] seconds")
        if not 1.0 <= self.doa_range_db <= 60.0:
            raise ConfigError(f"doa_range_db={self.doa_range_db!r}: must be in [1, 60] dB")


class EdgePipeline:
    def __init__(self, model: Model, array: ArrayProfile | None, config: PipelineConfig | None = None) -> None:
        self.model = model
        self.array = array
        self.config = cfg = config or PipelineConfig()
        spec = model.frontend
        self.spec = spec
        self.sub = model.output_hop_frames
        if cfg.model_hop_frames % self.sub or not self.sub <= cfg.model_hop_frames <= model.window_frames:
            raise ConfigError(
                f"model_hop_frames={cfg.model_hop_frames}: must be a multiple of the model's output hop "
                f"({self.sub}) and at most its window ({model.window_frames})"
            )
        self.out_hop_s = self.sub * spec.hop_s
        self.stft = StftStage(spec)
        self.sed = SedStage(model.labels, model.thresholds, cfg.sed)
        self.localiser = Localiser(array, spec, cfg.localiser) if array is not None else None
        pad = model.window_frames - cfg.model_hop_frames
        self._feat = np.full((pad, spec.n_mels), frontend.silence_floor(spec), np.float32)
        self._feat_next = 0  # stream index of the first feature frame not yet fed to the model
        self._seq = 0
        ring = round(cfg.ring_s / self.out_hop_s)
        self._ring = ring
        self._psum = np.zeros(ring, np.float64)  # summed STFT-frame power per output frame
        self._pcount = np.zeros(ring, np.int64)
        self._cross: npt.NDArray[np.complex64] | None = None
        if self.localiser is not None:
            n_pairs = len(self.localiser.pairs)
            n_bins = self.localiser.bins.stop - self.localiser.bins.start
            self._cross = np.zeros((ring, n_pairs, n_bins), np.complex64)
        self._frames_seen = 0  # STFT frames seen (stream-wide)
        wsum = float(np.sum(frontend.periodic_hann(spec.win) ** 2))
        weights = np.full(spec.n_bins, 2.0)
        weights[0] = 1.0
        if spec.n_fft % 2 == 0:
            weights[-1] = 1.0
        self._parseval = weights / (spec.n_fft * wsum)

    # --- per-output-frame rings ---------------------------------------------------------------
    def _store_frames(self, spectra: npt.NDArray[np.complex64]) -> None:
        """Accumulate levels and cross-spectra of STFT frames into their output-frame slots."""
        step = (self._ring - 1) * self.sub  # never write a slot twice in one pass
        for s in range(0, spectra.shape[2], step):
            self._store_chunk(spectra[:, :, s : s + step])

    def _store_chunk(self, spectra: npt.NDArray[np.complex64]) -> None:
        t = spectra.shape[2]
        if t == 0:
            return
        power = np.einsum("cft,f->t", (np.abs(spectra) ** 2).astype(np.float64), self._parseval)
        power /= spectra.shape[0]
        f = self._frames_seen + np.arange(t)
        slots = (f // self.sub) % self._ring
        fresh = slots[f % self.sub == 0]  # output frames that start in this chunk
        self._psum[fresh] = 0.0
        self._pcount[fresh] = 0
        np.add.at(self._psum, slots, power)
        np.add.at(self._pcount, slots, 1)
        if self._cross is not None and self.localiser is not None:
            self._cross[fresh] = 0
            np.add.at(self._cross, slots, self.localiser.frame_cross(spectra))
        self._frames_seen += t

    def _attach(self, ev: Event) -> Event:
        """Level and bearings of the event from its loud frames between onset and emission."""
        j0 = round(ev.onset / self.out_hop_s)
        j1 = round((ev.offset if ev.offset is not None else ev.emitted) / self.out_hop_s)
        j1 = max(j1, j0 + 1)
        newest = -(-self._frames_seen // self.sub)  # output frames already (partly) in the rings
        j0 = max(j0, newest - self._ring, 0)  # older slots have been overwritten by newer frames
        if j0 >= j1:
            return ev  # the event's frames have all left the rings: no level, no direction
        slots = np.arange(j0, j1) % self._ring
        filled = self._pcount[slots] > 0
        if not filled.any():
            return ev
        slots = slots[filled]
        # dBFS: a full-scale sine (mean power 1/2) is 0 dBFS
        levels = 10.0 * np.log10(2.0 * self._psum[slots] / self._pcount[slots] + 1e-20)
        peak = float(np.max(levels))
        bearings = ev.bearings
        if self._cross is not None and self.localiser is not None:
            loud = slots[levels >= peak - self.config.doa_range_db]
            bearings = self.localiser.bearings(self._cross[loud].sum(axis=0))
        return dataclasses.replace(ev, level_dbfs=round(peak, 1), bearings=bearings)

    @property
    def stream_time(self) -> float:
        """Seconds of audio analysed so far (end of the last complete STFT frame hop)."""
        return self._frames_seen * self.spec.hop_s

    def level_dbfs(self, seconds: float = 1.0) -> float | None:
        """Equivalent level (Leq, dBFS; a full-scale sine is 0 dBFS) of the last `seconds` of audio,
        None before any audio. At most the ring's length."""
        newest = -(-self._frames_seen // self.sub)
        n = min(max(1, round(seconds / self.out_hop_s)), self._ring, newest)
        if n <= 0:
            return None
        slots = np.arange(newest - n, newest) % self._ring
        count = int(self._pcount[slots].sum())
        if count == 0:
            return None
        return round(float(10.0 * np.log10(2.0 * self._psum[slots].sum() / count + 1e-20)), 1)

    # --- the flow -----------------------------------------------------------------------------
    def _run_model(self, final: bool) -> list[Event]:
        w, hop = self.model.window_frames, self.config.model_hop_frames
        events: list[Event] = []
        while len(self._feat) >= w or (final and len(self._feat) > w - hop):
            window = self._feat[:w]
            real = min(hop, len(self._feat) - (w - hop))
            if len(window) < w:
                pad = np.full((w - len(window), self.spec.n_mels), frontend.silence_floor(self.spec), np.float32)
                window = np.concatenate([window, pad])
            probs = self.model.predict(window)
            n_out = -(-real // self.sub)
            first = (w - hop) // self.sub
            scores = Scores(
                probs=probs[first : first + n_out],
                t=self._feat_next * self.spec.hop_s,
                seq=self._seq,
                index=self._feat_next // self.sub,
                hop_s=self.out_hop_s,
                labels=self.model.label_names,
                # the newest STFT frame in this window ends at this stream time
                ready=((self._feat_next + real - 1) * self.spec.hop + self.spec.win) / self.spec.sample_rate,
            )
            self._seq += 1
            events.extend(self.sed.process(scores))
            self._feat = self._feat[real:]
            self._feat_next += real
            if real < hop:
                break
        return events

    def process(self, block: Block) -> list[Event]:
        if self.array is not None and block.channels != self.array.n_mics:
            raise InputError(
                f"block has {block.channels} channels but the array {self.array.name!r} "
                f"has {self.array.n_mics} microphones"
            )
        spectra = self.stft.process(block)
        self._store_frames(spectra.frames)
        if spectra.frames.shape[2]:
            feats = frontend.logmel_from_spectra(spectra.frames, self.spec)
            self._feat = np.concatenate([self._feat, feats])
        return [self._attach(e) for e in self._run_model(final=False)]

    def flush(self) -> list[Event]:
        events = self._run_model(final=True) + self.sed.flush()
        return [self._attach(e) for e in events]


def run(blocks: Iterable[Block], pipeline: EdgePipeline) -> Iterator[Event]:
    """Feed every block through the pipeline; yield events as they are decided, then close the rest."""
    for block in blocks:
        yield from pipeline.process(block)
    yield from pipeline.flush()
