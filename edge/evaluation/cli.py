"""`tympan evaluate TASK ...`: one subcommand per evaluation, each in its own module.

A task module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and is imported only to add
its arguments; heavy dependencies are imported inside ``run``. A task whose module is missing or fails
to import is reported, and the other tasks keep working.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from edge.errors import TympanError

TASKS: dict[str, tuple[str, str]] = {
    "sed": ("edge.evaluation.sed_eval", "sound event detection on strongly labelled soundscapes (DCASE metrics)"),
    "doa": ("edge.evaluation.doa_eval", "direction of arrival and tracking in simulated rooms"),
    "states": ("edge.evaluation.states_eval", "DSP-derived states and traits on signals with known trajectories"),
    "anomaly": ("edge.evaluation.anomaly_eval", "normal/abnormal machine sounds with injected faults"),
}


def add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command and one subcommand per evaluation task."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score the edge pipeline on scenes with known truth (SED, DOA, states, anomaly)",
        description="Evaluate the edge pipeline on scenes with known truth. Needs the `eval` extra.",
    )
    sub = parser.add_subparsers(dest="task", metavar="TASK")
    for name, (module_name, help_text) in TASKS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            if e.name != module_name:
                print(f"tympan: warning: evaluation {name!r} is unavailable: {e}", file=sys.stderr)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
    parser.set_defaults(func=lambda args: _no_task(parser))


def _no_task(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    raise TympanError("name an evaluation task: " + ", ".join(TASKS))
