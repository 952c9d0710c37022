"""Framing: packets <-> COBS + CRC-32 frames delimited by 0x00, and the streaming decoder.

Properties: any packet round-trips whatever the split of the byte stream; any byte stream goes in
without an exception and with bounded memory; no frame that was not sent comes out (a corrupted frame
is never accepted); and every frame whose own bytes reached the receiver intact is decoded, whatever
garbage, losses or duplicates surround it (resynchronisation on the next 0x00).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import DeviceError
from firmware_bridge.errors import FramingError
from firmware_bridge.framing import (
    MAX_ENCODED,
    MAX_PACKET,
    FrameDecoder,
    cobs_decode,
    cobs_encode,
    cobs_overhead,
    crc32,
    decode_frame,
    encode_frame,
)

SETTINGS = settings(deadline=None, max_examples=150)
payloads = st.binary(min_size=0, max_size=600)


def feed_split(decoder: FrameDecoder, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    edges = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in itertools.pairwise(edges):
        out += decoder.feed(data[a:b])
    return out


def test_cobs_known_vectors() -> None:
    # the examples of Cheshire & Baker's encoding as commonly tabulated
    assert cobs_encode(b"") == b"\x01"
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x00\x00") == b"\x01\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(b"\x11\x22\x33\x44") == b"\x05\x11\x22\x33\x44"
    assert cobs_encode(b"\x11\x00\x00\x00") == b"\x02\x11\x01\x01\x01"
    run = bytes(range(1, 255))  # 254 non-zero bytes: one full block
    assert cobs_encode(run) == b"\xff" + run + b"\x01"
    assert cobs_encode(b"\x00" + run) == b"\x01\xff" + run + b"\x01"


def test_crc32_check_value() -> None:
    assert crc32(b"123456789") == 0xCBF43926


@SETTINGS
@given(st.binary(max_size=2000))
def test_cobs_round_trip_and_bounds(data: bytes) -> None:
    enc = cobs_encode(data)
    assert b"\x00" not in enc
    assert len(enc) <= len(data) + cobs_overhead(len(data))
    assert cobs_decode(enc) == data


@SETTINGS
@given(st.lists(payloads, max_size=6), st.lists(st.integers(min_value=0), max_size=10))
def test_frames_round_trip_whatever_the_split(packets: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in packets)
    dec = FrameDecoder()
    assert feed_split(dec, stream, cuts) == packets
    assert dec.stats.frames == len(packets) and dec.stats.rejected == 0


@SETTINGS
@given(st.binary(max_size=4000), st.lists(st.integers(min_value=0), max_size=10))
def test_any_byte_stream_is_taken_without_error_and_yields_no_false_frame(data: bytes, cuts: list[int]) -> None:
    dec = FrameDecoder()
    out = feed_split(dec, data, cuts)
    # a random body passes CRC-32 with probability 2**-32: nothing that was not framed comes out
    assert out == []
    assert len(dec._buf) <= MAX_ENCODED


mutation = st.tuples(st.sampled_from(["flip", "drop", "dup", "insert"]), st.integers(min_value=0), st.integers(0, 255))


@settings(deadline=None, max_examples=300)
@given(st.lists(payloads, min_size=1, max_size=6), st.lists(mutation, max_size=8), st.binary(max_size=40))
def test_corrupted_stream_never_yields_a_false_frame_and_intact_frames_resync(
    packets: list[bytes], mutations: list[tuple[str, int, int]], garbage: bytes
) -> None:
    frames = [encode_frame(p) for p in packets]
    stream = bytearray(garbage + b"".join(frames))
    owner = [-1] * len(garbage)  # which frame each byte belongs to (-1: garbage)
    for i, f in enumerate(frames):
        owner += [i] * len(f)
    touched: set[int] = set()
    for kind, pos, value in mutations:
        if not stream:
            break
        at = pos % len(stream)
        touched.add(owner[at])
        if kind == "flip":
            stream[at] ^= 1 << (value % 8)
        elif kind == "drop":
            del stream[at]
            del owner[at]
        elif kind == "dup":
            stream.insert(at, stream[at])
            owner.insert(at, owner[at])
        else:
            stream.insert(at, value)
            owner.insert(at, owner[at])
            if at > 0:
                touched.add(owner[at - 1])
    out = FrameDecoder().feed(bytes(stream))
    # nothing false: the output is a subsequence of what was sent, in order
    it = iter(packets)
    assert all(any(p == q for q in it) for p in out), "a frame that was not sent was accepted"
    # resync: every frame none of whose bytes were touched comes out
    intact = [p for i, p in enumerate(packets) if i not in touched]
    it2 = iter(out)
    assert all(any(p == q for q in it2) for p in intact), "an intact frame was lost"


def test_single_bit_flips_in_a_frame_are_all_rejected() -> None:
    packet = bytes(range(256)) * 2
    frame = encode_frame(packet)
    for i in range(1, len(frame) - 1):
        for bit in range(8):
            bad = bytearray(frame)
            bad[i] ^= 1 << bit
            dec = FrameDecoder()
            assert dec.feed(bytes(bad)) == [], f"flip of bit {bit} of byte {i} accepted"


def test_garbage_then_frame_is_recovered() -> None:
    dec = FrameDecoder()
    frame = encode_frame(b"hello")
    assert dec.feed(b"\x13\x37noise without a delimiter" + frame) == [b"hello"]
    # a frame cut off mid-way (a reset) followed by a whole one
    assert dec.feed(frame[: len(frame) // 2] + frame) == [b"hello"]
    assert dec.stats.frames == 2 and dec.stats.rejected >= 1


def test_overlong_run_is_dropped_with_bounded_memory_then_resyncs() -> None:
    dec = FrameDecoder()
    chunk = b"\x01" * 1000
    for _ in range(20):
        assert dec.feed(chunk) == []
        assert len(dec._buf) <= MAX_ENCODED
    assert dec.feed(encode_frame(b"after")) == [b"after"]
    assert dec.stats.oversize == 1


def test_largest_packet_fits_and_one_more_byte_is_refused() -> None:
    big = bytes(MAX_PACKET)
    assert FrameDecoder().feed(encode_frame(big)) == [big]
    with pytest.raises(FramingError, match="exceeds"):
        encode_frame(big + b"\x00")
    assert issubclass(FramingError, DeviceError)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"\x05\x01\x02", "runs past the end"),
        (cobs_encode(b"abcd" + (crc32(b"abcd") ^ 1).to_bytes(4, "little")), "CRC-32 mismatch"),
        (cobs_encode(b"ab"), "shorter than its CRC"),
    ],
)
def test_decode_frame_rejects(body: bytes, message: str) -> None:
    with pytest.raises(FramingError, match=message):
        decode_frame(body)


def test_decode_frame_accepts_its_own_encoding() -> None:
    assert decode_frame(encode_frame(b"\x00abc\x00")[1:-1]) == b"\x00abc\x00"
