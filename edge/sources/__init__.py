"""Sources: an audio file or a live input device -> `Block` float32 [channels, N] at 16 kHz.

    file.py        FileSource, read_audio      WAV/FLAC/OGG/... -> Blocks (chunked, resampled)
    microphone.py  MicrophoneSource            PortAudio input device -> Blocks
    channels.py    select_mic_channels         recorded/device channels -> the array's microphones
    resample.py    Resampler, resample_whole   any rate -> 16 kHz (polyphase FIR, streaming)
    blocks.py      BlockCutter                 chunks of any length -> Blocks with t and seq
    devices.py     find_input_device, ...      device name/index -> PortAudio device (lazy import)

Importing this package never loads PortAudio; only making a MicrophoneSource does.
"""

from edge.sources.channels import select_mic_channels
from edge.sources.file import FileSource, read_audio
from edge.sources.microphone import MicrophoneSource

__all__ = ["FileSource", "MicrophoneSource", "read_audio", "select_mic_channels"]
