"""The `tympan` entry point: finds subcommands through the `tympan.commands` entry-point group.

Each package owns its subcommands in its own `cli.py`; only the module of the command that runs is
imported (so `tympan listen` never imports `quantize` or torch). Every `TympanError` is printed as one
line on stderr with a non-zero exit; so is an `OSError` no command caught (the path and the system's
reason; `-vv` logs its traceback): there are no tracebacks for a user's mistakes.
"""

from __future__ import annotations

import os

# numpy's BLAS on one thread unless the environment says otherwise (set before numpy loads): a pipeline
# runs on one core, its matrix products are small, and BLAS worker threads only spin beside them
# (measured with a second, idle core: `tympan listen` on the 10 s sample 0.71-0.78 -> 0.54-0.55 s of user
# CPU, three runs each; the SED benchmark's pipeline 10.2 -> 4.8 ms of process CPU time per audio second)
for _v in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from importlib.metadata import EntryPoint, entry_points  # noqa: E402

from edge import __version__  # noqa: E402
from edge.errors import TympanError  # noqa: E402

EXIT_USAGE = 2
EXIT_ERROR = 1


def _commands() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group="tympan.commands")}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tympan", description="Edge listening: detect, tag and localise sound events on a device."
    )
    parser.add_argument("--version", action="version", version=f"tympan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, ep in sorted(_commands().items()):
        if only is not None and name != only:
            continue
        try:
            add = ep.load()
        except ImportError as e:  # a broken or partial install must not take every other command down
            if only is not None:
                raise TympanError(f"command {name!r} is unavailable: {e}") from None
            print(f"tympan: warning: command {name!r} is unavailable: {e}", file=sys.stderr)
            continue
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    first = next((a for a in args_list if not a.startswith("-")), None)
    try:
        parser = build_parser(first if first in commands else None)
        args = parser.parse_args(args_list)
        logging.basicConfig(
            level=logging.WARNING - 10 * min(args.verbose, 2),
            format="tympan: %(levelname)s: %(message)s",
        )
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return int(func(args))
    except TympanError as e:
        print(f"tympan: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tympan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file or device the command could not use: one line naming it, no traceback
        logging.getLogger(__name__).debug("OS error", exc_info=True)
        names = ": ".join(str(n) for n in (e.filename, e.filename2) if n is not None)
        print(f"tympan: error: {names + ': ' if names else ''}{e.strerror or e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
