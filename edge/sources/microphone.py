"""A live input device (PortAudio, via sounddevice) -> `Block`s float32 [mics, N] at 16 kHz.

The device is opened with the array's `channels` (what the device delivers, e.g. 6 for the ReSpeaker
USB v2) at the array's `sample_rate` (16 kHz for most), or at 16 kHz, or else at the device's own
default rate; any rate but 16 kHz is resampled with `edge.sources.resample`, the filter files use.
Its channels become the array's microphones through `select_mic_channels` (`channel_map`), exactly
as for a recording of the device.

Threads: PortAudio's callback copies each buffer into a bounded queue; iterating the source takes
them out. When the queue is full the buffer is dropped, counted (`dropped_buffers`, `dropped_frames`)
and logged, and the same number of frames of silence is inserted so that stream time stays
sample-accurate. Input overflows that PortAudio itself reports are counted (`input_overflows`) and
logged too. Nothing is lost silently.
"""

from __future__ import annotations

import logging
import math
import queue
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import ConfigError, DeviceError
from edge.messages import F32, Block
from edge.sources.blocks import LiveBlocks, check_block_size
from edge.sources.channels import select_mic_channels
from edge.sources.devices import (
    choose_rate,
    default_input_index,
    find_input_device,
    import_sounddevice,
    list_input_devices,
)

if TYPE_CHECKING:
    from boards.profiles import ArrayProfile

log = logging.getLogger(__name__)

SampleFormat = Literal["int16", "int32", "float32"]
_SCALE: dict[str, float] = {"int16": 2.0**-15, "int32": 2.0**-31, "float32": 1.0}
"""Integer PCM -> [-1, 1): the same scaling libsndfile applies to files (a power of two: exact)."""

CALLBACK_S = 0.01
"""Length of one PortAudio callback buffer (10 ms)."""
NO_AUDIO_TIMEOUT_S = 5.0
"""A device that delivers nothing for this long is reported as failed."""


class MicrophoneSource:
    """Capture `array` from an input device as `Block`s of `block_size` samples at 16 kHz.

    `device`: index, or case-insensitive substring of the device name; None: the array's
    `device_match`, else the default input device. `duration_s`: stop after exactly
    round(duration_s * 16000) samples; None: run until the iteration is stopped. Block k starts at
    stream sample k * block_size (`t` = that / 16000, `seq` = k); stream time 0 is the first sample
    captured.

    Keywords: `device_rate` forces the capture rate (default: the first the device takes of the
    array's `sample_rate`, 16 kHz and the device's default rate); `dtype` is the PortAudio sample
    format asked for (int16 suits 16-bit devices; PortAudio converts from the device's own format);
    `queue_s` is how much audio the queue between the PortAudio thread and the iterator holds before
    dropping.

    The device is found and its settings checked when the source is made (DeviceError naming what is
    available); the stream opens when iteration starts and closes when it ends.
    """

    def __init__(
        self,
        device: str | int | None,
        array: ArrayProfile,
        block_size: int = 1600,
        duration_s: float | None = None,
        *,
        device_rate: int | None = None,
        dtype: SampleFormat = "int16",
        queue_s: float = 2.0,
    ) -> None:
        self.array = array
        self.block_size = check_block_size(block_size)
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ConfigError(f"duration_s must be a positive number of seconds or None, got {duration_s!r}")
        if dtype not in _SCALE:
            raise ConfigError(f"dtype must be one of {sorted(_SCALE)}, got {dtype!r}")
        if not (math.isfinite(queue_s) and queue_s > 0):
            raise ConfigError(f"queue_s must be a positive number of seconds, got {queue_s!r}")
        self.duration_s = duration_s
        self.dtype: SampleFormat = dtype
        self.queue_s = queue_s
        self._sd = import_sounddevice()
        devices = list_input_devices(self._sd)
        self.device = find_input_device(devices, device, array, default_input_index(self._sd))
        self.device_rate = choose_rate(
            self._sd, self.device, array.channels, dtype, device_rate, preferred=array.sample_rate
        )
        self.origin = f"input device {self.device.describe()}"
        self.channels = len(array.mics)
        self.dropped_buffers = 0
        self.dropped_frames = 0
        self.input_overflows = 0

    @property
    def sample_rate(self) -> int:
        """The rate of the blocks (always SAMPLE_RATE)."""
        return SAMPLE_RATE

    def __iter__(self) -> Iterator[Block]:
        sd = self._sd
        frames_per_callback = max(1, round(self.device_rate * CALLBACK_S))
        buffers: queue.Queue[tuple[npt.NDArray[Any], int]] = queue.Queue(
            maxsize=max(2, math.ceil(self.queue_s / CALLBACK_S))
        )
        pending_drop = [0]  # frames dropped since the last buffer queued (callback thread only)

        def callback(indata: npt.NDArray[Any], frames: int, _time: Any, status: Any) -> None:
            if status.input_overflow:
                self.input_overflows += 1
            try:
                buffers.put_nowait((indata.copy(), pending_drop[0]))
            except queue.Full:
                pending_drop[0] += frames
                self.dropped_buffers += 1
                self.dropped_frames += frames
            else:
                pending_drop[0] = 0

        live = LiveBlocks(self.channels, self.device_rate, self.block_size, self.duration_s)
        overflows_logged = 0
        try:
            stream = sd.InputStream(
                device=self.device.index,
                channels=self.array.channels,
                samplerate=self.device_rate,
                dtype=self.dtype,
                blocksize=frames_per_callback,
                callback=callback,
            )
        except (sd.PortAudioError, ValueError) as err:
            raise DeviceError(f"{self.origin}: cannot be opened ({err})") from None
        try:
            try:
                stream.start()
            except sd.PortAudioError as err:
                raise DeviceError(f"{self.origin}: cannot be started ({err})") from None
            while not live.done:
                try:
                    data, dropped_before = buffers.get(timeout=NO_AUDIO_TIMEOUT_S)
                except queue.Empty:
                    raise DeviceError(f"{self.origin}: delivered no audio for {NO_AUDIO_TIMEOUT_S:g} s") from None
                if self.input_overflows > overflows_logged:
                    log.warning(
                        "%s: input overflow reported by PortAudio (%d so far): samples were lost",
                        self.origin,
                        self.input_overflows,
                    )
                    overflows_logged = self.input_overflows
                parts = [self._to_float(data)]
                if dropped_before:
                    log.warning(
                        "%s: queue full, %d frames dropped (%d frames in %d buffers so far); "
                        "replaced by silence to keep stream time",
                        self.origin,
                        dropped_before,
                        self.dropped_frames,
                        self.dropped_buffers,
                    )
                    parts.insert(0, np.zeros((self.channels, dropped_before), dtype=np.float32))
                for part in parts:
                    yield from live.push(part)
            yield from live.flush()
        finally:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)

    def _to_float(self, data: npt.NDArray[Any]) -> F32:
        """One callback buffer [frames, device channels] -> float32 [mics, frames]."""
        scaled = data.T.astype(np.float32)
        if self.dtype != "float32":
            scaled *= np.float32(_SCALE[self.dtype])
        return select_mic_channels(scaled, self.array, self.origin, device_layout=True)
