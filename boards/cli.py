"""`tympan boards list | show NAME | check`: the bundled board and array profiles, for people and scripts.

`list` prints one line per profile (kind, name, description). `show NAME` prints a board (and its
default array) or an array: description, source, mic table, channel map, geometry, aperture, smallest
spacing and the spatial-aliasing frequency c / (2 d_min); `--json` prints the profile as one JSON object
in its file schema, so `show NAME --json > my.json` is a starting point for a custom `--array` file.
`check (--board NAME | --array FILE) --az DEG [--el DEG] FILE...` checks a recording of a source at a
known direction against the profile (`boards.check`): OK, or which channels are swapped, the channel
order, a rotation, a mirror image or a scale error; exit status 0 only when OK.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TextIO

from boards.profiles import (
    SPEED_OF_SOUND_M_S,
    ArrayProfile,
    BoardProfile,
    kind_of,
    list_profiles,
    load_array,
    load_board,
    resolve,
)

_LABEL = 15
_WIDTHS = (3, 3, 8, 8, 8, 6, 7)
_CENTRE_M = 1e-6
"""A mic this close to the axis has no azimuth."""


def add_boards(subparsers: argparse._SubParsersAction) -> None:
    """Add the `boards` command (and its `list` / `show` subcommands) to the `tympan` parser."""
    parser = subparsers.add_parser(
        "boards",
        help="list and show board and microphone-array profiles",
        description="Board and microphone-array profiles bundled with tympan.",
    )
    parser.set_defaults(func=_cmd_list)
    sub = parser.add_subparsers(dest="boards_command", metavar="{list,show,check}")

    list_parser = sub.add_parser("list", help="one line per profile: kind, name, description")
    list_parser.set_defaults(func=_cmd_list)

    show = sub.add_parser(
        "show",
        help="a profile in detail: geometry, channel map, aliasing frequency",
        description="Show a board (with its default array) or an array, by name or array .json file.",
    )
    show.add_argument("name", metavar="NAME", help="board or array name, or path to an array .json file")
    show.add_argument("--json", action="store_true", help="print the profile as one JSON object")
    show.set_defaults(func=_cmd_show)

    check = sub.add_parser(
        "check",
        help="calibration check: a recording of a source at a known direction against the profile",
        description="Measure each mic pair's delay in recordings of one source at a known direction and "
        "report a swapped channel pair, a wrong channel order, a rotated or mirrored array, a wrong "
        "radius, or OK. Exit status 0 only when the profile is OK.",
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="multichannel recording(s), one source each")
    g = check.add_mutually_exclusive_group(required=True)
    g.add_argument("--board", metavar="NAME", help="board or array profile name")
    g.add_argument("--array", metavar="FILE", help="array geometry JSON file")
    check.add_argument(
        "--az", type=float, action="append", required=True, metavar="DEG",
        help="azimuth of the source in the array's frame (degrees counter-clockwise from +x); once per FILE",
    )  # fmt: skip
    check.add_argument(
        "--el", type=float, action="append", metavar="DEG", help="elevation of the source (default 0); once per FILE"
    )
    check.add_argument(
        "--tolerance", type=float, default=None, metavar="SAMPLES",
        help="RMS delay error that still fits, in samples at 16 kHz (default 0.3)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="print the result as one JSON object")
    check.set_defaults(func=_cmd_check)


def _cmd_list(args: argparse.Namespace) -> int:
    out = sys.stdout
    rows = list_profiles()
    width = max(len(name) for _, name, _ in rows)
    for kind, name, description in rows:
        print(f"{kind:<5}  {name:<{width}}  {description}", file=out)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    out = sys.stdout
    name: str = args.name
    if kind_of(name) == "board":
        board = load_board(name)
        if args.json:
            print(json.dumps(board.to_dict()), file=out)
            return 0
        _print_board(board, out)
        print(file=out)
        _print_array(load_array(board.default_array), out)
        return 0
    array = resolve(board=name, array=None)  # an array name or file; an unknown name lists both kinds
    if args.json:
        print(json.dumps(array.to_dict()), file=out)
    else:
        _print_array(array, out)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from boards.check import DEFAULT_TOLERANCE_SAMPLES, check_recordings
    from edge.errors import InputError
    from edge.sources import read_audio

    array = resolve(args.board, args.array)
    files: list[str] = args.files
    az: list[float] = args.az
    el: list[float] = args.el or [0.0] * len(az)
    if len(az) != len(files):
        raise InputError(f"{len(files)} file(s) but {len(az)} --az value(s): give one --az per file")
    if len(el) != len(files):
        raise InputError(f"{len(files)} file(s) but {len(el)} --el value(s): give one --el per file, or none")
    recordings = [read_audio(f, expected_channels=array.n_mics, array=array) for f in files]
    tol = DEFAULT_TOLERANCE_SAMPLES if args.tolerance is None else args.tolerance
    result = check_recordings(recordings, list(zip(az, el, strict=True)), array, tolerance=tol)
    if args.json:
        print(json.dumps({"files": files, "directions": [[a, e] for a, e in zip(az, el, strict=True)],
                          **result.to_dict()}))  # fmt: skip
    else:
        print(result.message)
    return 0 if result.ok else 1


def _line(out: TextIO, label: str, value: str) -> None:
    print(f"  {label + ':':<{_LABEL}}{value}", file=out)


def _print_board(board: BoardProfile, out: TextIO) -> None:
    print(f"{board.name}  (board)", file=out)
    _line(out, "description", board.description)
    _line(out, "cpu", f"{board.cpu}, {board.arch}, {board.cores} cores")
    _line(out, "memory", f"{board.memory_gb:g} GB")
    _line(out, "accelerator", board.accelerator or "none")
    _line(out, "dsp backend", board.dsp_backend)
    _line(out, "model runtime", board.model_runtime)
    _line(out, "default array", board.default_array)
    _line(out, "source", board.source)
    if board.notes:
        _line(out, "notes", board.notes)


def _print_array(array: ArrayProfile, out: TextIO) -> None:
    print(f"{array.name}  (array)", file=out)
    if array.description:
        _line(out, "description", array.description)
    if array.path:
        _line(out, "file", array.path)
    _line(out, "device", repr(array.device_match) if array.device_match else "(any: no name to match)")
    _line(out, "capture", f"{array.sample_rate} Hz, {array.channels} channels, {array.n_mics} mics")
    _line(out, "channel map", f"{list(array.channel_map)}  (device channel of each mic)")
    _line(out, "geometry", array.geometry)
    _line(out, "aperture", f"{array.aperture_m * 1e3:.1f} mm")
    _line(out, "min spacing", f"{array.min_spacing_m * 1e3:.1f} mm")
    alias = array.spatial_alias_hz
    _line(out, "aliasing", f"above {alias:.0f} Hz (c / (2 d_min), c = {SPEED_OF_SOUND_M_S:g} m/s)")
    lo, hi = array.doa_band_hz
    note = "  (upper edge above the aliasing frequency)" if hi > alias else ""
    _line(out, "doa band", f"{lo:g}-{hi:g} Hz{note}")
    if array.source:
        _line(out, "source", array.source)
    if array.notes:
        _line(out, "notes", array.notes)
    header = ("mic", "ch", "x mm", "y mm", "z mm", "r mm", "az deg")
    print("  " + "  ".join(f"{h:>{w}}" for h, w in zip(header, _WIDTHS, strict=True)), file=out)
    for i, ((x, y, z), channel) in enumerate(zip(array.mics.tolist(), array.channel_map, strict=True)):
        radius = math.hypot(x, y)
        azimuth = f"{math.degrees(math.atan2(y, x)):.1f}" if radius > _CENTRE_M else "-"
        cells = (str(i), str(channel), *(f"{v * 1e3:.2f}" for v in (x, y, z, radius)), azimuth)
        print("  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, _WIDTHS, strict=True)), file=out)
