"""GCC-PHAT cross-correlations -> SRP-PHAT steered response power over a direction grid."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from edge.dsp.backends import REFERENCE, register


@register(REFERENCE, "srp_map")
def srp_map(cc: npt.NDArray[np.floating], lag_index: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """cc [P, L] cross-correlations; lag_index [G, P] fractional lag index of each pair for each grid
    direction -> power [G]: the sum over pairs of the linearly interpolated cross-correlation."""
    n_pairs, length = cc.shape
    k = np.clip(lag_index, 0.0, length - 1.000001)
    k0 = np.floor(k).astype(np.intp)
    frac = (k - k0).astype(np.float32)
    rows = np.arange(n_pairs)[None, :]
    v = cc[rows, k0] * (1.0 - frac) + cc[rows, k0 + 1] * frac
    return v.sum(axis=1).astype(np.float32)
