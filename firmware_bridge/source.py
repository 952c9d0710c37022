"""The companion MCU's microphones (AUDIO frames over the serial link) -> `Block`s float32 [mics, N]
at 16 kHz: the same interface as `edge.sources.MicrophoneSource`, so `tympan listen --serial PORT`
runs the pipeline on them.

The MCU sends PDM-decimated int16 frames with a frame sequence number. int16 is scaled by 1/32768
(as libsndfile and the microphone source do), the device channels become the array's microphones
through `select_mic_channels` (`channel_map`), and a rate other than 16 kHz is resampled. A gap in the
frame numbers (frames lost on the line or dropped by the MCU) is filled with the same number of
samples of silence, counted (`lost_frames`) and logged, so stream time stays sample-accurate; a frame
number seen before (a duplicate) is skipped. Nothing is lost silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.dsp.frontend import SAMPLE_RATE
from edge.errors import ConfigError, DeviceError, TympanError
from edge.messages import Block
from edge.sources.blocks import LiveBlocks, check_block_size
from edge.sources.channels import select_mic_channels
from firmware_bridge import protocol as P
from firmware_bridge.client import BridgeClient
from firmware_bridge.errors import NakError
from firmware_bridge.leds import RGB, class_colour, direction_frame

if TYPE_CHECKING:
    from boards.profiles import ArrayProfile

log = logging.getLogger(__name__)

NO_AUDIO_TIMEOUT_S = 5.0
"""An MCU that sends no audio frame for this long is reported as failed."""
MAX_GAP_S = 10.0
"""A jump in frame numbers longer than this is not filled with silence (the MCU restarted)."""
SCALE = 2.0**-15


class SerialSource:
    """Audio from the MCU on `port` as `Block`s of `block_size` samples at 16 kHz.

    `array` says which microphones the MCU's channels are (its `channels` must be what the MCU
    streams). `duration_s`: stop after exactly round(duration_s * 16000) samples; None: until the
    iteration is stopped. Block k starts at stream sample k * block_size; stream time 0 is the first
    sample of the stream the MCU started (frames lost at the start count as a gap). The port is
    opened when iteration starts.
    """

    def __init__(
        self,
        port: str,
        array: ArrayProfile,
        block_size: int = 1600,
        duration_s: float | None = None,
        *,
        baud: int = P.DEFAULT_BAUD,
        ack_timeout: float = P.ACK_TIMEOUT_S,
    ) -> None:
        self.port = port
        self.array = array
        self.block_size = check_block_size(block_size)
        if duration_s is not None and not (math.isfinite(duration_s) and duration_s > 0):
            raise ConfigError(f"duration_s must be a positive number of seconds or None, got {duration_s!r}")
        self.duration_s = duration_s
        self.baud = baud
        self.ack_timeout = ack_timeout
        self.origin = f"serial MCU {port}"
        self.channels = len(array.mics)
        self.lost_frames = 0
        self.lost_samples = 0
        self.duplicate_frames = 0
        self.mcu_dropped_frames = 0
        self.stream: P.StreamInfo | None = None
        self._client: BridgeClient | None = None
        self._brightness = 255
        self._shown: Any = None  # id of the event the LED ring shows

    @property
    def sample_rate(self) -> int:
        """The rate of the blocks (always SAMPLE_RATE)."""
        return SAMPLE_RATE

    def __iter__(self) -> Iterator[Block]:
        client = BridgeClient(self.port, baud=self.baud, ack_timeout=self.ack_timeout)
        client.open()
        self._client = client
        try:
            try:
                self._brightness = client.get_config("led_brightness")
            except NakError:
                self._brightness = 255
            yield from self._blocks(client)
        finally:
            self._client = None
            try:
                _sent, self.mcu_dropped_frames = client.stream_stop()
            except TympanError as e:
                log.warning("%s: could not stop the stream cleanly (%s)", self.origin, e)
            client.close()

    def show_event(self, token: Mapping[str, Any]) -> None:
        """Show an event token's direction on the MCU's LED ring while streaming.

        An `on` or `upd` token with an azimuth (`az`) lights the ring towards it in its class's colour
        (`lbl`) at the MCU's `led_brightness`; the `off` of the event shown turns the ring dark. Call it
        between blocks (the source is a generator: the link is free then). A failure is logged, not
        raised: the ring is a display, the audio matters more.
        """
        client = self._client
        hello = None if client is None else client.hello
        if client is None or hello is None or hello.n_leds == 0:
            return
        frame: list[RGB]
        if token.get("ph") in ("on", "upd") and token.get("az") is not None:
            frame = direction_frame(
                float(token["az"]),
                class_colour(str(token.get("lbl", ""))),
                hello.n_leds,
                led0_azimuth_deg=hello.led0_azimuth_deg,
                clockwise=hello.leds_clockwise,
                brightness=self._brightness,
            )
            self._shown = token.get("id")
        elif token.get("ph") == "off" and self._shown is not None and token.get("id") == self._shown:
            frame = [(0, 0, 0)] * hello.n_leds
            self._shown = None
        else:
            return
        try:
            client.set_leds(frame)
        except TympanError as e:
            log.warning("%s: LED ring not updated (%s)", self.origin, e)

    def _blocks(self, client: BridgeClient) -> Iterator[Block]:
        hello = client.hello
        assert hello is not None
        if hello.channels != self.array.channels:
            raise DeviceError(
                f"{self.origin}: streams {hello.channels} channel(s), array {self.array.name!r} "
                f"expects {self.array.channels}"
            )
        # everything that takes time is made before the stream starts: the MCU cannot wait
        live = LiveBlocks(self.channels, hello.sample_rate, self.block_size, self.duration_s)
        info = client.stream_start()
        self.stream = info
        if (info.sample_rate, info.channels) != (hello.sample_rate, hello.channels):
            raise DeviceError(
                f"{self.origin}: streams {info.channels} ch at {info.sample_rate} Hz, "
                f"HELLO announced {hello.channels} ch at {hello.sample_rate} Hz"
            )
        expected: int | None = info.first_seq
        max_gap = max(1, round(MAX_GAP_S * info.sample_rate / max(1, info.frame_samples)))
        while not live.done:
            frame = client.read_audio(NO_AUDIO_TIMEOUT_S)
            if frame is None:
                raise DeviceError(f"{self.origin}: sent no audio for {NO_AUDIO_TIMEOUT_S:g} s")
            if frame.samples.shape[1] != hello.channels:
                got = frame.samples.shape[1]
                raise DeviceError(f"{self.origin}: a frame of {got} channels, expected {hello.channels}")
            parts = []
            if expected is not None:
                ahead = (frame.seq - expected) & 0xFFFFFFFF
                if ahead >= 0x80000000:  # behind: a frame number already seen
                    self.duplicate_frames += 1
                    continue
                if ahead:
                    if ahead > max_gap:
                        raise DeviceError(f"{self.origin}: frame numbers jumped by {ahead} (did the MCU restart?)")
                    n_lost = ahead * frame.samples.shape[0]
                    self.lost_frames += ahead
                    self.lost_samples += n_lost
                    log.warning(
                        "%s: %d audio frame(s) lost before frame %d (%d so far); replaced by silence",
                        self.origin,
                        ahead,
                        frame.seq,
                        self.lost_frames,
                    )
                    parts.append(np.zeros((self.channels, n_lost), dtype=np.float32))
            expected = (frame.seq + 1) & 0xFFFFFFFF
            device = frame.samples.T.astype(np.float32) * np.float32(SCALE)
            parts.append(select_mic_channels(device, self.array, self.origin, device_layout=True))
            for part in parts:
                yield from live.push(part)
        yield from live.flush()
