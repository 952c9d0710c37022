"""Registers the frontend's numpy reference kernels (defined once in `edge.dsp.frontend`)."""

from __future__ import annotations

from edge.dsp import frontend
from edge.dsp.backends import REFERENCE, register

register(REFERENCE, "stft")(frontend.stft)
register(REFERENCE, "logmel_from_spectra")(frontend.logmel_from_spectra)
register(REFERENCE, "logmel_batch")(frontend.logmel_batch)
