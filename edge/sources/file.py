"""An audio file (WAV, FLAC, OGG, ... anything libsndfile reads) -> `Block`s float32 [C, N] at 16 kHz.

- Integer PCM is scaled to [-1, 1) by libsndfile: 16-bit by 1/32768, 24-bit by 1/2**23, 32-bit by
  1/2**31, unsigned 8-bit as (u - 128) / 128. Float files are taken as they are. (16-bit files are
  read as int16 and scaled here, in the same pass as the de-interleaving: the same floats, exactly.)
- Any sample rate is brought to 16 kHz by `edge.sources.resample` (polyphase, Kaiser FIR, flat to 7 kHz,
  >= 70 dB down from 8 kHz; see that module).
- Channels: all of them, or with `array=` the array's microphones through `select_mic_channels`.
- The file is read in chunks of READ_FRAMES frames whether or not it is resampled (the resampler
  streams), so memory stays bounded for any file length; `read_audio` holds only its result.
- Block boundaries never change the samples: the blocks of any `block_size` concatenate to
  `read_audio`'s array.
- A file that stops decoding part-way (a recording cut short by a power loss, a damaged card) gives
  every sample before the damage: when a chunk fails, the file is opened again at that chunk and read
  SALVAGE_FRAMES at a time up to the first piece that fails; those samples are delivered, then the
  InputError names the first sample that could not be decoded.

Every problem with the file is an `InputError` whose message starts with the path as given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import InputError
from edge.messages import F32, Block
from edge.sources.blocks import BlockCutter, check_block_size
from edge.sources.channels import select_mic_channels
from edge.sources.resample import Resampler

if TYPE_CHECKING:
    from boards.profiles import ArrayProfile

READ_FRAMES = 1 << 16
"""Frames read from the file at a time (4 s at 16 kHz): bounds memory whatever the file length."""
SALVAGE_FRAMES = 1 << 10
"""After a chunk fails to decode: frames read at a time to recover the samples before the damage."""

PathLike = str | os.PathLike[str]

_UNKNOWN_FRAMES = 2**63 - 1  # SF_COUNT_MAX


def _soundfile_message(err: Exception) -> str:
    text = getattr(err, "error_string", None) or str(err)
    return str(text).strip() or type(err).__name__


def _open(origin: str) -> sf.SoundFile:
    """Open `origin` for reading, translating every failure into an InputError that names it."""
    if not os.path.lexists(origin):
        raise InputError(f"{origin}: no such file")
    if not os.path.exists(origin):
        raise InputError(f"{origin}: is a broken symbolic link")
    if os.path.isdir(origin):
        raise InputError(f"{origin}: is a directory")
    if not os.path.isfile(origin):
        raise InputError(f"{origin}: is not a regular file")
    try:
        with open(origin, "rb") as fh:
            if not fh.read(1):
                raise InputError(f"{origin}: empty file (0 bytes)")
    except OSError as err:
        raise InputError(f"{origin}: cannot be read ({err.strerror or err})") from None
    try:
        return sf.SoundFile(origin)
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"{origin}: not an audio file (soundfile: {_soundfile_message(err)})") from None


def _first_non_finite(chunk: F32) -> tuple[int, int]:
    """(sample, channel) of the first NaN/Inf in a [n, C] chunk, earliest sample then lowest channel."""
    rows, cols = np.nonzero(~np.isfinite(chunk))
    return int(rows[0]), int(cols[0])


class FileSource:
    """Iterate over an audio file as `Block`s of `block_size` samples at 16 kHz (the last may be shorter).

    Block k starts at stream sample k * block_size: `t` = k * block_size / 16000, `seq` = k. Each
    iteration reads the file again from the start.

    `expected_channels`: the number of channels the blocks must have (after `array` mapping, if any).
    `array`: an array profile; the file's channels are reduced to its microphones by
    `select_mic_channels` (a file with as many channels as mics is used as is; one with the device's
    channel count goes through `channel_map`; any other count is rejected, naming the array).

    The file is checked when the source is made (exists, is audio, holds samples, channel count);
    NaN or infinite samples are found while reading and raise InputError at that point, naming the
    first one by its 0-based sample index at the file's own rate and its 0-based file channel.
    """

    def __init__(
        self,
        path: PathLike,
        block_size: int = 1600,
        expected_channels: int | None = None,
        *,
        array: ArrayProfile | None = None,
    ) -> None:
        self.origin = os.fspath(path)
        self.block_size = check_block_size(block_size)
        self.array = array
        with _open(self.origin) as f:
            self.file_channels = int(f.channels)
            self.file_sample_rate = int(f.samplerate)
            self.file_format = f"{f.format}/{f.subtype}"
            # 16-bit PCM is read as int16 and scaled here: libsndfile's own float conversion (x / 32768)
            # in the same pass as the transpose, and no NaN check for integers (the same samples)
            self._pcm16 = f.subtype == "PCM_16"
            frames = int(f.frames)
            # libsndfile reports an unknown length (a FLAC header with 0 total samples) as the maximum.
            self.file_frames: int | None = None if frames >= _UNKNOWN_FRAMES else frames
            if frames <= 0:
                raise InputError(f"{self.origin}: empty (0 samples)")
            try:
                first = f.read(1, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError) as err:
                raise InputError(
                    f"{self.origin}: empty (0 samples): no sample can be read (soundfile: {_soundfile_message(err)})"
                ) from None
            if first.shape[0] == 0:
                raise InputError(f"{self.origin}: empty (0 samples)")
        self.channels = self.file_channels
        if array is not None:
            probe = np.zeros((self.file_channels, 0), dtype=np.float32)
            self.channels = select_mic_channels(probe, array, self.origin).shape[0]
        if expected_channels is not None and self.channels != expected_channels:
            raise InputError(
                f"{self.origin}: has {self.channels} channel{'s' if self.channels != 1 else ''} "
                f"but {expected_channels} are expected"
            )
        # Fails early, with the file named, for a rate the resampler does not take.
        try:
            Resampler(self.channels, self.file_sample_rate, SAMPLE_RATE)
        except InputError as err:
            raise InputError(f"{self.origin}: {err}") from None

    @property
    def sample_rate(self) -> int:
        """The rate of the blocks (always SAMPLE_RATE)."""
        return SAMPLE_RATE

    def __iter__(self) -> Iterator[Block]:
        cutter = BlockCutter(self.channels, self.block_size, SAMPLE_RATE)
        for chunk in self.chunks():
            yield from cutter.push(chunk)
        yield from cutter.flush()

    def chunks(self) -> Iterator[F32]:
        """The whole stream as float32 [channels, n] chunks at 16 kHz, in order, of arbitrary lengths."""
        resampler = (
            Resampler(self.channels, self.file_sample_rate, SAMPLE_RATE)
            if self.file_sample_rate != SAMPLE_RATE
            else None
        )
        position = 0
        failed: Exception | None = None  # the decoding error, once a chunk has failed
        salvage: sf.SoundFile | None = None  # the file opened again at the failed chunk
        dtype = "int16" if self._pcm16 else "float32"
        with _open(self.origin) as f:
            try:
                while True:
                    try:
                        if salvage is None:
                            frames = f.read(READ_FRAMES, dtype=dtype, always_2d=True)
                        else:
                            frames = salvage.read(SALVAGE_FRAMES, dtype=dtype, always_2d=True)
                    except (sf.SoundFileError, RuntimeError) as err:
                        if salvage is not None:
                            raise self._damaged(position, failed) from None
                        failed = err
                        salvage = self._reopen_at(position)
                        if salvage is None:
                            raise self._damaged(position, err) from None
                        continue
                    if frames.shape[0] == 0:
                        if salvage is not None and self.file_frames is not None and position < self.file_frames:
                            raise self._damaged(position, failed) from None
                        break
                    if self._pcm16:  # [C, n] float32 in one pass; x / 32768 is exact in float32
                        chunk = np.multiply(frames.T, np.float32(1.0 / 32768.0), dtype=np.float32, order="C")
                    elif not np.isfinite(frames).all():
                        sample, channel = _first_non_finite(frames)
                        raise InputError(
                            f"{self.origin}: holds NaN or infinite samples "
                            f"(first at sample {position + sample}, channel {channel})"
                        )
                    else:
                        chunk = frames.T
                    position += frames.shape[0]
                    if self.array is not None:
                        chunk = select_mic_channels(chunk, self.array, self.origin)
                    if resampler is None:
                        yield np.ascontiguousarray(chunk)
                    else:
                        out = resampler.process(chunk)
                        if out.shape[1]:
                            yield out.astype(np.float32)
            finally:
                if salvage is not None:
                    salvage.close()
        if position == 0:
            raise InputError(f"{self.origin}: empty (0 samples)")
        if resampler is not None:
            out = resampler.flush()
            if out.shape[1]:
                yield out.astype(np.float32)

    def _reopen_at(self, position: int) -> sf.SoundFile | None:
        """The file opened again and positioned at frame `position` (None if it cannot be)."""
        try:
            g = sf.SoundFile(self.origin)
        except (sf.SoundFileError, RuntimeError, OSError):
            return None
        try:
            g.seek(position)
        except (sf.SoundFileError, RuntimeError, ValueError):
            g.close()
            return None
        return g

    def _damaged(self, position: int, err: Exception | None) -> InputError:
        why = "" if err is None else f" (soundfile: {_soundfile_message(err)})"
        of = "" if self.file_frames is None else f" of {self.file_frames}"
        used = f"; the {position} before it were read" if position else ""
        return InputError(f"{self.origin}: cannot decode sample {position}{of}: damaged or cut short{used}{why}")


def read_audio(path: PathLike, expected_channels: int | None = None, *, array: ArrayProfile | None = None) -> F32:
    """Read a whole audio file as float32 [C, N] at 16 kHz (see FileSource for the arguments and the
    checks; every problem raises InputError naming the file).

    The file is read and resampled in chunks; only the result is held whole.
    """
    source = FileSource(path, expected_channels=expected_channels, array=array)
    parts = list(source.chunks())
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts, axis=1)
