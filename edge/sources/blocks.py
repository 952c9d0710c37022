"""Audio chunks of any length -> `Block`s of a fixed length, with stream time and sequence number.

Both sources cut their stream with this, so a stream gives the same samples whatever the block size:
the blocks concatenate to the input, only the last block may be shorter, and nothing is padded.
"""

from __future__ import annotations

import numpy as np

from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import ConfigError
from edge.messages import F32, Block
from edge.sources.resample import Resampler


def check_block_size(block_size: int) -> int:
    """Return `block_size` if it is a positive integer, else raise ConfigError quoting it."""
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer) or block_size < 1:
        raise ConfigError(f"block_size must be a positive number of samples, got {block_size!r}")
    return int(block_size)


class BlockCutter:
    """Collects [channels, n] float32 chunks and cuts them into Blocks of `block_size` samples.

    Block k holds stream samples [k * block_size, (k + 1) * block_size); its `t` is the index of its
    first sample divided by `sample_rate` and its `seq` is k.
    """

    def __init__(self, channels: int, block_size: int, sample_rate: int = SAMPLE_RATE) -> None:
        self.channels = channels
        self.block_size = check_block_size(block_size)
        self.sample_rate = sample_rate
        self._pending: list[F32] = []
        self._n_pending = 0
        self._emitted = 0  # samples already emitted in blocks
        self._seq = 0

    @property
    def samples_emitted(self) -> int:
        return self._emitted

    def push(self, chunk: F32) -> list[Block]:
        """Add a [channels, n] chunk; return the blocks it completes (possibly none)."""
        if chunk.ndim != 2 or chunk.shape[0] != self.channels:
            raise ValueError(f"expected a [{self.channels}, n] chunk, got shape {chunk.shape}")
        if chunk.shape[1] == 0:
            return []
        self._pending.append(chunk)
        self._n_pending += chunk.shape[1]
        if self._n_pending < self.block_size:
            return []
        return self._cut(final=False)

    def flush(self) -> list[Block]:
        """The last, possibly shorter, block (an empty list when nothing is pending)."""
        return self._cut(final=True) if self._n_pending else []

    def _cut(self, final: bool) -> list[Block]:
        blocks = []
        while self._n_pending >= self.block_size or (final and self._n_pending):
            blocks.append(self._block(self._take(min(self.block_size, self._n_pending))))
        return blocks

    def _take(self, n: int) -> F32:
        """The next n pending samples as a new array: one copy of each sample (a block that straddles
        chunks is filled piece by piece; no chunk is first joined to the rest of the one before)."""
        out = np.empty((self.channels, n), np.float32)
        filled = 0
        while filled < n:
            head = self._pending[0]
            m = min(n - filled, head.shape[1])
            out[:, filled : filled + m] = head[:, :m]
            filled += m
            if m < head.shape[1]:
                self._pending[0] = head[:, m:]
            else:
                self._pending.pop(0)
        self._n_pending -= n
        return out

    def _block(self, samples: F32) -> Block:
        block = Block(
            samples=samples,  # a new array (`_take`): blocks own their samples
            t=self._emitted / self.sample_rate,
            seq=self._seq,
            sample_rate=self.sample_rate,
        )
        self._emitted += samples.shape[1]
        self._seq += 1
        return block


class LiveBlocks:
    """A live source's device-rate chunks -> 16 kHz `Block`s, ending after `duration_s` (None: never).

    The shared tail of the microphone and serial sources: resample (when the device rate is not 16
    kHz), trim at the requested duration, cut into blocks.
    """

    def __init__(self, channels: int, device_rate: int, block_size: int, duration_s: float | None) -> None:
        self._resampler = Resampler(channels, device_rate) if device_rate != SAMPLE_RATE else None
        self._cutter = BlockCutter(channels, block_size, SAMPLE_RATE)
        self._remaining = None if duration_s is None else round(duration_s * SAMPLE_RATE)

    @property
    def done(self) -> bool:
        """Whether the requested duration has been delivered."""
        return self._remaining is not None and self._remaining <= 0

    def push(self, chunk: F32) -> list[Block]:
        """Add a [channels, n] chunk at the device rate; return the blocks it completes."""
        out = chunk if self._resampler is None else self._resampler.process(chunk).astype(np.float32)
        if self._remaining is not None:
            out = out[:, : max(self._remaining, 0)]
            self._remaining -= out.shape[1]
        return self._cutter.push(out)

    def flush(self) -> list[Block]:
        """The last, possibly shorter, block."""
        return self._cutter.flush()
