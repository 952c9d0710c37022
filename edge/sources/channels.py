"""Recorded or captured channels -> the array's microphones, in the array profile's mic order.

One rule for files and devices (`select_mic_channels`), so a recording of a device and the device
itself give the same microphone channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge.errors import InputError
from edge.messages import F32

if TYPE_CHECKING:
    from boards.profiles import ArrayProfile


def select_mic_channels(samples: F32, array: ArrayProfile, origin: str, *, device_layout: bool = False) -> F32:
    """[C, N] -> [M, N], one row per microphone of `array` (M = len(array.mics)), in its order.

    - C == M (and not `device_layout`): already one channel per mic, in mic order: returned as is.
    - C == array.channels (the device's channel count, e.g. 6 for the ReSpeaker USB v2): the device
      layout; row i of the result is channel `array.channel_map[i]`.
    - anything else: InputError naming `origin` and the array.

    `device_layout=True` (a live device, which always delivers `array.channels` channels in its own
    order) applies `channel_map` even when C == M, so a permuting map is honoured.
    """
    n_ch = samples.shape[0]
    n_mics = len(array.mics)
    if n_ch == n_mics and not device_layout:
        return samples
    if n_ch == array.channels:
        index = np.asarray(array.channel_map, dtype=np.intp)
        if np.array_equal(index, np.arange(n_ch)):
            return samples
        return np.ascontiguousarray(samples[index])
    device = f" (its device delivers {array.channels} channels)" if array.channels != n_mics else ""
    raise InputError(
        f"{origin}: has {n_ch} channel{'s' if n_ch != 1 else ''} but the array {array.name!r} "
        f"has {n_mics} microphones{device}"
    )
