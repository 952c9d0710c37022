"""Tympan's on-device runtime: capture -> DSP -> int8 inference -> SED -> localisation -> tokens.

Nothing in this package imports torch, `quantize` or `cloud`; the device install needs only numpy,
scipy, soundfile, sounddevice and a model runtime (ai-edge-litert or onnxruntime).
"""

__version__ = "0.1.0"
