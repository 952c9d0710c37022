"""The wiring of the edge data flow (the only module that knows every stage):

    Block -> StftStage -> Spectra -+-> log-mel -> Features -> model windows -> Scores -> SedStage -> Event
                                   +-> PHAT cross-spectra (ring, per output frame) -> Localiser -> Bearing

Stages are pure and synchronous; this module keeps the buffers that join them. The model runs on a
window of `window_frames` log-mel frames every `model_hop_frames` frames and contributes the frame
outputs of the newest hop, so each output frame has the same left context whatever the block size.
`latency_config` sets up the two latency modes: "balanced" (the defaults: every 12 frames) and "low"
(every output frame, computed with the model's look-ahead filled by the window's newest frame fading
out, the model's condition floors for that mode, and a frame 1.25 times a class's threshold turns it on
at once).
Where the model directory has a streaming model (model.json `stream`, quantize.stream) whose newest
outputs cover the hop, the window's newest `stream_window_frames` go to it instead: the same outputs
for half the work with the shipped model (48 of 96 frames).
The first window is padded with the log-mel of silence. Levels (dBFS, a full-scale sine = 0 dBFS)
and cross-spectra are kept per output frame in rings of `ring_s` seconds; an event's direction is the
SRP-PHAT (or MUSIC) of the loud frames (within `doa_range_db` of its loudest) between its onset and its
emission. The bearings of the last localiser calls are remembered by their output frames and frame counts:
an event's phases, and events of the same sound, often ask for the same frames again; with the native
backend each ring slot's cell votes (`Localiser.block_votes`) are kept too, so a call votes only on the
output frames no earlier call has seen.

Tracking (unless `tracking` is off: then events keep their bearings and have no track): every
`track_hop_frames` output frames the localiser reads the bearings of that hop's frames
that stand `track_gate_db` above the noise floor (the 10th percentile of the ring's frame levels) and
the tracker (`edge.tracking`) updates its tracks; the live tracks of each hop are kept as history.
An event takes the track (confirmed by the time the event is emitted) that followed its dominant
bearing (within `track_assoc_deg`) most often between its onset and its end; when that track moved
at least `moving_min_deg` during the event, the event's azimuth becomes the track's azimuth at the
start and `azimuth_end` its azimuth at the end.
Updates happen at fixed stream frame indices, so tracks do not depend on the block size either.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from boards.profiles import ArrayProfile
from edge.dsp import backends, frontend
from edge.dsp.dcblock import DEFAULT_DC_BLOCK_HZ
from edge.errors import ConfigError, InputError
from edge.inference import Model
from edge.localise import Localiser, LocaliserConfig
from edge.messages import Bearing, Block, Event, Scores, Track
from edge.sed import SedConfig, SedStage
from edge.stft import StftStage
from edge.tracking import Tracker, TrackerConfig, wrap

if TYPE_CHECKING:
    from edge.dsp.native import BlockPost

log = logging.getLogger(__name__)


LATENCY_MODES = ("balanced", "low")


@dataclass(frozen=True)
class PipelineConfig:
    model_hop_frames: int = 12
    # the model's look-ahead: each window moves on by this many frames, the newest fading by
    # `lookahead_decay_db` per frame (edge.dsp.frontend.fill_lookahead; a multiple of the model's output
    # hop; 0: off, the model's own zero padding), and the outputs before them are kept ("low": 8)
    lookahead_fill_frames: int = 0
    lookahead_decay_db: float = 4.0
    # the latency mode whose condition floors the model's thresholds take (model.json thresholds.floors)
    latency: str = "balanced"
    ring_s: float = 30.0
    doa_range_db: float = 15.0
    sed: SedConfig = field(default_factory=SedConfig)
    localiser: LocaliserConfig = field(default_factory=LocaliserConfig)
    dsp_backend: str | None = None  # None: $TYMPAN_DSP_BACKEND, else auto (edge.dsp.backends.resolve)
    track_hop_frames: int = 5  # output frames (40 ms each) per tracker update
    track_gate_db: float = 10.0
    track_assoc_deg: float = 20.0
    moving_min_deg: float = 10.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    tracking: bool = True  # False: events keep their bearings but no tracks (no per-hop localisation)
    dc_block_hz: float = DEFAULT_DC_BLOCK_HZ  # the DC blocker's corner before the STFT (edge.dsp.dcblock); 0: off

    def __post_init__(self) -> None:
        if not 1.0 <= self.ring_s <= 600.0:
            raise ConfigError(f"ring_s={self.ring_s!r}: must be in [1, 600] seconds")
        if not 1.0 <= self.doa_range_db <= 60.0:
            raise ConfigError(f"doa_range_db={self.doa_range_db!r}: must be in [1, 60] dB")
        if self.lookahead_fill_frames < 0:
            raise ConfigError(f"lookahead_fill_frames={self.lookahead_fill_frames!r}: must be >= 0")
        if not 0.0 <= self.lookahead_decay_db <= 120.0:
            raise ConfigError(f"lookahead_decay_db={self.lookahead_decay_db!r}: must be in [0, 120] dB per frame")
        if self.latency not in LATENCY_MODES:
            raise ConfigError(f"latency mode {self.latency!r}: choose from {', '.join(LATENCY_MODES)}")
        if not 1 <= self.track_hop_frames <= 100:
            raise ConfigError(f"track_hop_frames={self.track_hop_frames!r}: must be in [1, 100]")
        if not (self.dc_block_hz == 0.0 or 1.0 <= self.dc_block_hz <= 100.0):
            raise ConfigError(f"dc_block_hz={self.dc_block_hz!r}: must be 0 (off) or in [1, 100] Hz")
        for name in ("track_gate_db", "track_assoc_deg", "moving_min_deg"):
            v = getattr(self, name)
            if not 0.0 <= v <= 180.0:
                raise ConfigError(f"{name}={v!r}: must be in [0, 180]")


# "low": a frame this many times its threshold turns its class on at once. On bench_sed's scenes (before the
# look-ahead fill below) against
# turning on at every first frame above threshold (1.0): event F1 0.071 and 0.048 against 0.062 and
# 0.039 on two scene sets, median latency 142 and 176 ms against 130 and 167 (1.1: 0.065, 0.044; 133, 167)
LOW_INSTANT_ON = 1.25
# "low": the model's look-ahead filled with the newest frame fading out (PipelineConfig.lookahead_*).
# bench_sed's scenes of six seeds (360 evaluation scenes), thresholds dev-tuned and floored by each fill's
# own condition floors, instant-on at 1.25x: median latency against the true onsets 117 ms (4 dB per
# frame), 123 ms (2 dB), 134 ms (1 dB), 146 ms (held: 0 dB), against 179 ms with the model's zero
# padding; event F1 0.057, 0.057, 0.052, 0.054, 0.062. 4 frames at 4 dB: 153 ms. With SedConfig's
# instant_on_min 0.5 (4 dB, 8 frames): 127 ms, F1 0.060.
LOW_FILL_FRAMES = 8  # at PipelineConfig.lookahead_decay_db (4 dB per frame)


def latency_config(mode: str, output_hop_frames: int, base: PipelineConfig | None = None) -> PipelineConfig:
    """`base` (default: the defaults) set up for a latency mode.

    "balanced" leaves it as it is: the model runs every `model_hop_frames` (12 frames, 0.12 s) and a class
    turns on after `min_on_frames` (2) output frames above its threshold. "low" runs the model every
    output frame (`output_hop_frames` of the model: 4 frames, 40 ms), computes that frame with its look-ahead
    filled by the newest log-mel frame fading out over 8 frames at 4 dB each (`lookahead_fill_frames`:
    instead of the model's zero padding, so an onset reads sooner), takes the model's condition floors of
    this mode (`latency`: model.json thresholds.floors.low) and also turns a class on at its first frame
    when that frame is at least 1.25 times its threshold and at least 0.5 (`SedConfig.instant_on_ratio`,
    `instant_on_min`).
    Every frame is still computed once, from the same left context, so events do not depend on the
    block size in either mode; a live source should also use short blocks (`listen` defaults to 40 ms in
    "low"), since an event cannot be emitted before the block that holds its frames arrives. Measured
    figures: README (bench_sed)."""
    cfg = base or PipelineConfig()
    if mode == "balanced":
        return cfg
    if mode == "low":
        return dataclasses.replace(
            cfg,
            model_hop_frames=output_hop_frames,
            lookahead_fill_frames=LOW_FILL_FRAMES,
            latency="low",
            sed=dataclasses.replace(cfg.sed, instant_on_ratio=LOW_INSTANT_ON),
        )
    raise ConfigError(f"latency mode {mode!r}: choose from {', '.join(LATENCY_MODES)}")


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
        fill = cfg.lookahead_fill_frames
        if fill % self.sub or cfg.model_hop_frames + fill > model.window_frames:
            raise ConfigError(
                f"lookahead_fill_frames={fill}: must be a multiple of the model's output hop "
                f"({self.sub}) and, with model_hop_frames={cfg.model_hop_frames}, at most its window "
                f"({model.window_frames})"
            )
        self.out_hop_s = self.sub * spec.hop_s
        self.dsp_backend = backends.resolve(cfg.dsp_backend)
        self.stft = StftStage(spec, self.dsp_backend, cfg.dc_block_hz)
        self._logmel = backends.get("logmel_from_spectra", self.dsp_backend)
        self._frame_power = backends.get("frame_power", self.dsp_backend)
        self._ring_acc = backends.get("ring_accumulate", self.dsp_backend)
        if cfg.latency != LATENCY_MODES[0] and cfg.latency not in model.floors:
            log.warning(
                "model %s has no condition floors for latency mode %r (model.json thresholds.floors): its "
                "thresholds were not checked against noise and DC steps in this mode; `tympan quantize "
                "evaluate RUN_DIR` adds them",
                model.id,
                cfg.latency,
            )
        self.sed = SedStage(model.labels, model.thresholds_for(cfg.latency), cfg.sed)
        self._label_names = model.label_names  # built once (the property makes a new tuple per call)
        loc_cfg = dataclasses.replace(cfg.localiser, backend=self.dsp_backend)
        self.localiser = Localiser(array, spec, loc_cfg) if array is not None else None
        pad = model.window_frames - cfg.model_hop_frames
        self._feat = np.full((pad, spec.n_mels), frontend.silence_floor(spec), np.float32)
        self._feat_next = 0  # stream index of the first feature frame not yet fed to the model
        self._seq = 0
        ring = round(cfg.ring_s / self.out_hop_s)
        self._ring = ring
        self._psum = np.zeros(ring, np.float64)  # summed STFT-frame power per output frame
        self._pcount = np.zeros(ring, np.int64)
        self._pframe = np.full(ring, -1, np.int64)  # stream index of the output frame in each slot
        self._cross: npt.NDArray[np.complex64] | None = None
        if self.localiser is not None:
            n_pairs = len(self.localiser.pairs)
            n_bins = self.localiser.bins.stop - self.localiser.bins.start
            self._cross = np.zeros((ring, n_pairs, n_bins), np.complex64)
        # per-slot votes of the localiser's cells (`_slot_votes`), with the output frame and frame count they
        # are for; only with the native kernel, whose votes of a block do not depend on the other blocks
        self._vote_ring: npt.NDArray[np.int64] | None = None
        self._weight_ring: npt.NDArray[np.float32] | None = None
        self._vote_frame = np.full(ring, -1, np.int64)
        self._vote_count = np.zeros(ring, np.int64)
        if self.localiser is not None and self.dsp_backend == "native" and self.localiser.config.max_sources > 1:
            n_bins = self.localiser.bins.stop - self.localiser.bins.start
            self._vote_ring = np.zeros((ring, n_bins), np.int64)
            self._weight_ring = np.zeros((ring, n_bins), np.float32)
        self._frames_seen = 0  # STFT frames seen (stream-wide)
        self._onset_hist: npt.NDArray[np.float32] | None = None  # the localiser's onset-weight history
        self.tracker = Tracker(cfg.tracker) if self.localiser is not None and cfg.tracking else None
        self._track_next = cfg.track_hop_frames  # output frame index that ends the next tracker hop
        # bearings of recent localiser calls by their output frames and frame counts (`_bearings`)
        self._doa_memo: dict[bytes, tuple[Bearing, ...]] = {}
        # (stream time of the hop's end, live tracks then) for each hop still in the rings
        self._track_hist: deque[tuple[float, tuple[Track, ...]]] = deque(maxlen=ring // cfg.track_hop_frames)
        wsum = float(np.sum(frontend.periodic_hann(spec.win) ** 2))
        weights = np.full(spec.n_bins, 2.0)
        weights[0] = 1.0
        if spec.n_fft % 2 == 0:
            weights[-1] = 1.0
        self._parseval = weights / (spec.n_fft * wsum)
        # the native build does the per-block kernels after the STFT in one call (the same results)
        self._post: BlockPost | None = None
        if self.dsp_backend == "native":
            from edge.dsp import native

            loc = self.localiser
            self._post = native.BlockPost(
                native.kernels(),
                spec,
                self._parseval,
                self.sub,
                self._psum,
                self._pcount,
                self._pframe,
                self._cross,
                None if loc is None else loc.pairs,
                None if loc is None else loc.bins,
                0 if loc is None else loc.config.onset_frames,
                0.0 if loc is None else loc.config.onset_floor,
            )

    # --- per-output-frame rings ---------------------------------------------------------------
    def _store_frames(self, spectra: npt.NDArray[np.complex64]) -> npt.NDArray[np.float32]:
        """Accumulate levels and cross-spectra of STFT frames into their output-frame slots; their log-mel
        features [T, n_mels]."""
        t = spectra.shape[2]
        if t == 0:
            return np.zeros((0, self.spec.n_mels), np.float32)
        step = (self._ring - 1) * self.sub  # never write a slot twice in one pass
        parts = []
        for s in range(0, t, step):
            chunk = spectra[:, :, s : s + step]
            if self._post is None:
                self._store_chunk(chunk)
            else:
                parts.append(self._post(chunk, self._frames_seen))
                self._frames_seen += chunk.shape[2]
            self._track_hops()  # before a later chunk overwrites the slots
        if self._post is None:
            feats: npt.NDArray[np.float32] = self._logmel(spectra, self.spec)
            return feats
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _store_chunk(self, spectra: npt.NDArray[np.complex64]) -> None:
        t = spectra.shape[2]
        if t == 0:
            return
        power = self._frame_power(spectra, self._parseval)  # mean over channels
        cross = None
        if self._cross is not None and self.localiser is not None:
            cross, self._onset_hist = self.localiser.stream_cross(spectra, self._onset_hist)
        # each slot's sums in frame order (edge.dsp.rings), whatever the cut of the stream into blocks
        self._ring_acc(self._frames_seen, self.sub, power, cross, self._psum, self._pcount, self._pframe, self._cross)
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
            bearings = self._bearings(loud)
        ev = dataclasses.replace(ev, level_dbfs=round(peak, 1), bearings=bearings)
        return self._attach_track(ev)

    def _bearings(self, slots: npt.NDArray[np.intp]) -> tuple[Bearing, ...]:
        """Bearings of the cross-spectra in ring `slots`, remembered for the next calls (an event's
        phases and a tracker hop often ask for the same loud frames again): the same output frames
        with the same STFT frame counts hold the same cross-spectra."""
        assert self._cross is not None and self.localiser is not None
        counts = self._pcount[slots]
        key = self._pframe[slots].tobytes() + counts.tobytes()
        hit = self._doa_memo.get(key)
        if hit is not None:
            return hit
        votes = None if self._vote_ring is None else functools.partial(self._slot_votes, slots)
        bearings = self.localiser.bearings_blocks(self._cross[slots], n_frames=float(counts.sum()), votes=votes)
        if len(self._doa_memo) >= 16:
            self._doa_memo.pop(next(iter(self._doa_memo)))  # the oldest
        self._doa_memo[key] = bearings
        return bearings

    def _slot_votes(self, slots: npt.NDArray[np.intp]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """`Localiser.block_votes` of the cross-spectra in ring `slots`, [B, K] each: each slot's column is
        kept while the slot holds the same output frame with the same frame count (the tracker's hops and
        events ask for the same frames), so only the other slots are computed."""
        assert self._vote_ring is not None and self._weight_ring is not None and self.localiser is not None
        assert self._cross is not None
        frames, counts = self._pframe[slots], self._pcount[slots]
        stale = slots[(self._vote_frame[slots] != frames) | (self._vote_count[slots] != counts)]
        if stale.size:
            v, w = self.localiser.block_votes(self._cross[stale])
            self._vote_ring[stale] = v.T
            self._weight_ring[stale] = w.T
            self._vote_frame[stale] = self._pframe[stale]
            self._vote_count[stale] = self._pcount[stale]
        return self._vote_ring[slots].T, self._weight_ring[slots].T

    # --- tracking -------------------------------------------------------------------------------
    @property
    def tracks(self) -> tuple[Track, ...]:
        """The confirmed tracks after the last tracker hop (empty without an array)."""
        return () if self.tracker is None else self.tracker.tracks

    def _track_hops(self) -> None:
        """Run the tracker on every hop of output frames that is complete in the rings."""
        if self.tracker is None or self._cross is None or self.localiser is None:
            return
        hop = self.config.track_hop_frames
        floor: float | None = None  # the rings do not change between this call's hops: one floor for all
        while self._track_next <= self._frames_seen // self.sub:
            j1 = self._track_next
            slots = np.arange(j1 - hop, j1) % self._ring
            slots = slots[self._pcount[slots] > 0]
            bearings: tuple = ()
            if slots.size:
                if floor is None:
                    filled = self._pcount > 0
                    floor = _percentile10(10.0 * np.log10(self._psum[filled] / self._pcount[filled] + 1e-20))
                hop_levels = 10.0 * np.log10(self._psum[slots] / self._pcount[slots] + 1e-20)
                loud = slots[hop_levels >= floor + self.config.track_gate_db]
                if loud.size:
                    bearings = self._bearings(loud)
            t = j1 * self.out_hop_s
            self.tracker.update(t, bearings)
            self._track_hist.append((t, self.tracker.live))
            self._track_next += hop

    def _attach_track(self, ev: Event) -> Event:
        """The track that followed the event's dominant bearing; start/end azimuth if it moved."""
        if not ev.bearings or not self._track_hist:
            return ev
        b0 = ev.bearings[0]
        t_end = ev.offset if ev.offset is not None else ev.emitted
        hop_s = self.config.track_hop_frames * self.out_hop_s
        seen: dict[int, list[Track]] = {}
        confirmed: set[int] = set()  # confirmed by the time the event was emitted
        for t, tracks in self._track_hist:
            if t > ev.emitted + 1e-9:
                break
            confirmed.update(tr.id for tr in tracks if tr.confirmed)
            if t - hop_s < ev.onset - 1e-9 or t > t_end + hop_s:
                continue
            for tr in tracks:
                seen.setdefault(tr.id, []).append(tr)
        best: tuple[int, float] | None = None  # (id, -hits near the bearing)
        for tid, hist in seen.items():
            if tid not in confirmed:
                continue
            near = sum(abs(wrap(tr.azimuth - b0.azimuth)) <= self.config.track_assoc_deg for tr in hist)
            if near and (best is None or -near < best[1]):
                best = (tid, -near)
        if best is None:
            return ev
        hist = seen[best[0]]
        start, end = hist[0].azimuth, hist[-1].azimuth
        if abs(wrap(end - start)) < self.config.moving_min_deg:
            return dataclasses.replace(ev, track=best[0])
        assert self.localiser is not None
        first = dataclasses.replace(b0, azimuth=start, mirror=self.localiser.mirror(start))
        return dataclasses.replace(ev, track=best[0], bearings=(first, *ev.bearings[1:]), azimuth_end=end)

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
        w, hop, fill = self.model.window_frames, self.config.model_hop_frames, self.config.lookahead_fill_frames
        # the streaming model's shorter window: the same newest outputs (those of the filled frames too)
        ws = self.model.stream_window_for(hop + fill)
        events: list[Event] = []
        while len(self._feat) >= w or (final and len(self._feat) > w - hop):
            window = self._feat[:w]
            real = min(hop, len(self._feat) - (w - hop))
            if len(window) < w:
                pad = np.full((w - len(window), self.spec.n_mels), frontend.silence_floor(self.spec), np.float32)
                window = np.concatenate([window, pad])
            src = window if ws is None else window[w - ws :]  # what the model sees
            if fill:  # moved on by `fill` frames: the newest one fading out (the same on the shorter window)
                src = frontend.fill_lookahead(src, fill, self.config.lookahead_decay_db, self.spec)
            if ws is None:
                probs = self.model.predict(src)
                first = (w - hop - fill) // self.sub
            else:
                probs = self.model.predict_stream(src)
                first = (ws - hop - fill) // self.sub
            n_out = -(-real // self.sub)
            scores = Scores(
                probs=probs[first : first + n_out],
                t=self._feat_next * self.spec.hop_s,
                seq=self._seq,
                index=self._feat_next // self.sub,
                hop_s=self.out_hop_s,
                labels=self._label_names,
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
        feats = self._store_frames(spectra.frames)
        if len(feats):
            self._feat = np.concatenate([self._feat, feats])
        return [self._attach(e) for e in self._run_model(final=False)]

    def flush(self) -> list[Event]:
        events = self._run_model(final=True) + self.sed.flush()
        return [self._attach(e) for e in events]


def _percentile10(v: npt.NDArray[np.float64]) -> float:
    """`np.percentile(v, 10)` (linear method) of finite values, bit for bit, at a fraction of its cost: the
    same two order statistics (np.partition) and the same interpolation as numpy's `_lerp`."""
    n = len(v)
    vi = (n - 1) * 0.1  # numpy's virtual index: (n - 1) * (10 / 100)
    if vi >= n - 1:
        return float(np.max(v))
    lo = math.floor(vi)
    gamma = vi - lo
    part = np.partition(v, (lo, lo + 1))
    a, b = float(part[lo]), float(part[lo + 1])
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def run(blocks: Iterable[Block], pipeline: EdgePipeline) -> Iterator[Event]:
    """Feed every block through the pipeline; yield events as they are decided, then close the rest."""
    for block in blocks:
        yield from pipeline.process(block)
    yield from pipeline.flush()
