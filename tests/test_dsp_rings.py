"""The pipeline's ring accumulation (`ring_accumulate`): every native SIMD build against the numpy
reference (bit for bit: the same additions in the same order), and sums that do not depend on how the
stream was cut into chunks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edge.dsp import backends, native

RING, SUB, SHAPE = 9, 4, (3, 5)


def _stream(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    power = rng.uniform(0.0, 1.0, n) ** 3
    cross = (rng.standard_normal((n, *SHAPE)) + 1j * rng.standard_normal((n, *SHAPE))).astype(np.complex64)
    return power, cross


def _rings() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(RING), np.zeros(RING, np.int64), np.full(RING, -1, np.int64), np.zeros((RING, *SHAPE), np.complex64)


def _feed(kernel: object, power: np.ndarray, cross: np.ndarray | None, cuts: list[int]) -> tuple[np.ndarray, ...]:
    psum, pcount, pframe, ring = _rings()
    ring_or_none = None if cross is None else ring
    edges = [0, *cuts, len(power)]
    for a, b in itertools.pairwise(edges):
        kernel(a, SUB, power[a:b], None if cross is None else cross[a:b], psum, pcount, pframe, ring_or_none)  # type: ignore[operator]
    return psum, pcount, pframe, ring


def _cuts(n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    cuts, at = [], 0
    while True:
        at += int(rng.integers(0, (RING - 1) * SUB + 1))
        if at >= n:
            return cuts
        cuts.append(at)


def test_reference_sums_each_output_frame_in_frame_order() -> None:
    power, cross = _stream(50)
    psum, pcount, pframe, ring = _feed(backends.get("ring_accumulate"), power, cross, [7, 7, 20, 33])
    for j in range(50 // SUB - RING + 1, -(-50 // SUB)):  # the output frames still in the ring
        frames = range(j * SUB, min((j + 1) * SUB, 50))
        slot = j % RING
        assert pframe[slot] == j and pcount[slot] == len(frames)
        p, c = 0.0, np.zeros(SHAPE, np.complex64)
        for f in frames:
            p += power[f]
            c += cross[f]
        assert psum[slot] == p and np.array_equal(ring[slot], c)


@pytest.mark.parametrize("with_cross", [True, False])
def test_any_chunking_gives_the_same_rings(with_cross: bool) -> None:
    power, cross = _stream(203, seed=1)
    kern = backends.get("ring_accumulate")
    want = _feed(kern, power, cross if with_cross else None, list(range(1, 203)))  # one frame at a time
    for seed in range(5):
        got = _feed(kern, power, cross if with_cross else None, _cuts(203, seed))
        assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


@pytest.mark.parametrize("variant", native.machine_variants())
def test_native_ring_accumulate_equals_reference(variant: str) -> None:
    try:
        kern = native.Kernels(native.load_variant(variant))
    except native.NativeUnavailable as e:
        pytest.skip(f"native build unavailable: {e}")
    power, cross = _stream(317, seed=2)
    for seed in range(4):
        cuts = _cuts(317, seed)
        for c in (cross, None):
            want = _feed(backends.get("ring_accumulate"), power, c, cuts)
            got = _feed(kern.ring_accumulate, power, c, cuts)
            assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_ring_accumulate_rejects_misuse(backend: str) -> None:
    if backend not in backends.backends():
        pytest.skip(f"{backend} backend unavailable")
    kern = backends.get("ring_accumulate", backend)
    power, cross = _stream((RING - 1) * SUB + 1)
    psum, pcount, pframe, ring = _rings()
    with pytest.raises(Exception, match="overrun"):
        kern(0, SUB, power, cross, psum, pcount, pframe, ring)
    with pytest.raises(Exception, match="come together"):
        kern(0, SUB, power[:4], None, psum, pcount, pframe, ring)
