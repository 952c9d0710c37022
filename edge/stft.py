"""Block -> Spectra: the streaming causal STFT (frames as in `edge.dsp.frontend.stft`).

Keeps the samples not yet covered by a complete frame between blocks, so any block size gives the
same frames as one whole-stream STFT. With `dc_block_hz` > 0 the samples first pass the stream's DC
blocker (`edge.dsp.dcblock`, its state carried between blocks: also the same for any block size).
The native backend does a block's DC blocker, joining and STFT in one C call where its fused STFT runs
(`edge.dsp.native.StreamFront`: the same spectra bit for bit).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge.dsp import backends
from edge.dsp.dcblock import dc_block_pole, dc_block_state
from edge.dsp.frontend import DEFAULT_FRONTEND, FrontendSpec, n_frames
from edge.errors import InputError
from edge.messages import Block, Spectra

if TYPE_CHECKING:
    from edge.dsp.native import StreamFront


class StftStage:
    def __init__(
        self, spec: FrontendSpec = DEFAULT_FRONTEND, backend: str = backends.REFERENCE, dc_block_hz: float = 0.0
    ) -> None:
        self.spec = spec
        self._stft = backends.get("stft", backend)
        self._dc_pole = dc_block_pole(dc_block_hz, spec.sample_rate) if dc_block_hz > 0 else None
        self._dc_block = backends.get("dc_block", backend)
        self._dc_state: np.ndarray | None = None
        self._buf: np.ndarray | None = None
        self._next_frame = 0  # stream index of the next frame to produce
        self._seq = 0
        self._front: StreamFront | None = None
        if backend == "native":
            from edge.dsp import native

            try:
                self._front = native.StreamFront(native.kernels(), spec, self._dc_pole or 0.0)
            except native.NativeUnavailable:
                pass  # no fused STFT in this build: the kernels one by one below

    def process(self, block: Block) -> Spectra:
        if block.sample_rate != self.spec.sample_rate:
            raise InputError(f"block at {block.sample_rate} Hz; the frontend needs {self.spec.sample_rate} Hz")
        x = block.samples
        if self._front is not None:
            frames = self._front(x)
            if frames is None:
                raise _non_finite(block)
            return self._spectra(frames)
        if self._buf is None:
            self._buf = np.zeros((x.shape[0], 0), np.float32)
        elif x.shape[0] != self._buf.shape[0]:
            raise InputError(f"channel count changed mid-stream: {self._buf.shape[0]} -> {x.shape[0]}")
        if self._dc_pole is not None and x.shape[1]:
            if self._dc_state is None:
                self._dc_state = dc_block_state(x[:, 0])
            x = self._dc_block(x, self._dc_pole, self._dc_state)
            if not np.isfinite(self._dc_state).all():  # NaN/inf would stay in the recursion for good
                self._dc_state = None
                raise _non_finite(block)
        buf = np.concatenate([self._buf, x], axis=1) if self._buf.shape[1] else x
        t = n_frames(buf.shape[1], self.spec)
        frames = self._stft(buf, self.spec)  # its t whole frames (the samples after them are kept below)
        self._buf = np.ascontiguousarray(buf[:, t * self.spec.hop :])
        return self._spectra(frames)

    def _spectra(self, frames: np.ndarray) -> Spectra:
        t = frames.shape[2]
        out = Spectra(
            frames=frames,
            t=self._next_frame * self.spec.hop_s,
            seq=self._seq,
            index=self._next_frame,
            hop_s=self.spec.hop_s,
        )
        self._next_frame += t
        self._seq += 1
        return out


def _non_finite(block: Block) -> InputError:
    return InputError(f"block {block.seq} (t={block.t:.3f} s) holds NaN or infinite samples")
