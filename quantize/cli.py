"""`tympan quantize ...`: argv -> pipeline calls. Imports no torch at module level (`tympan --help`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import TympanError

if TYPE_CHECKING:
    from quantize.config import PipelineConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.json"


def _config(args: argparse.Namespace) -> PipelineConfig:
    from quantize.config import PipelineConfig, load_config

    return load_config(args.config) if args.config else PipelineConfig()


def _run(args: argparse.Namespace) -> int:
    from quantize.pipeline import run

    command = f"tympan quantize run --config {shlex.quote(str(args.config))} --out {shlex.quote(str(args.out))} " + (
        f"--seed {args.seed}" + (" --install-default" if args.install_default else "")
    )
    run(_config(args), args.out, args.seed, command, args.install_default)
    return 0


def _teacher_cache(args: argparse.Namespace) -> int:
    from quantize.pipeline import setup, transfer_sets

    s = setup(_config(args))
    train, val = transfer_sets(s, args.seed)
    print(f"transfer sets ready: {len(train)} train / {len(val)} val windows in {s.cache_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from quantize.pipeline import evaluate_and_package

    evaluate_and_package(args.run_dir, args.install_default, reexport=args.reexport)
    return 0


def _cv(args: argparse.Namespace) -> int:
    from quantize.cv import run_cv, write_cv_report

    if args.report_only:
        write_cv_report(args.out)
    else:
        run_cv(args.config, args.out, args.folds, args.seed, args.jobs)
    return 0


def _heads(args: argparse.Namespace) -> int:
    from quantize.heads import train_heads
    from quantize.pipeline import evaluate_and_package

    train_heads(args.run_dir, args.heads, args.seed)
    if not args.no_evaluate:
        evaluate_and_package(args.run_dir, args.install_default)
    return 0


def _install(args: argparse.Namespace) -> int:
    from quantize.export import install_model_dir
    from quantize.pipeline import DEFAULT_MODEL_DIR

    install_model_dir(args.model_dir, DEFAULT_MODEL_DIR)
    print(f"installed {args.model_dir} -> {DEFAULT_MODEL_DIR}")
    return 0


def add_quantize(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `quantize` (run | teacher-cache | heads | evaluate | cv | install) to the `tympan` command."""
    p = subparsers.add_parser("quantize", help="distil, quantise and export the on-device model")
    sub = p.add_subparsers(dest="quantize_command", required=True)

    r = sub.add_parser("run", help="teacher -> transfer set -> student -> int8 .tflite/.onnx -> report")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="JSON config (default: %(default)s)")
    r.add_argument("--out", type=Path, required=True, help="run directory to write")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--install-default", action="store_true", help="install the model into edge/models/default")
    r.set_defaults(func=_run)

    t = sub.add_parser("teacher-cache", help="build the teacher logits cache and transfer sets only")
    t.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_teacher_cache)

    h = sub.add_parser("heads", help="train the learned state/trait heads of a run, re-export and re-evaluate it")
    h.add_argument("run_dir", type=Path)
    h.add_argument("--heads", type=Path, default=None, help="head CSV (default: the run config's, else packaged)")
    h.add_argument("--seed", type=int, default=None, help="default: the run's seed")
    h.add_argument("--no-evaluate", action="store_true", help="only train and export (no report/model rebuild)")
    h.add_argument("--install-default", action="store_true", help="install the model into edge/models/default")
    h.set_defaults(func=_heads)

    e = sub.add_parser("evaluate", help="re-evaluate a run directory and rebuild its model directory")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--install-default", action="store_true", help="install the model into edge/models/default")
    e.add_argument(
        "--reexport",
        action="store_true",
        help="first export the run's int8 .tflite again with this version's exporter (the run's own weights and "
        "calibration windows); prints whether its outputs equal the old file's",
    )
    e.set_defaults(func=_evaluate)

    c = sub.add_parser(
        "cv",
        help="cross-validate a config over UrbanSound8K recording folds (K runs) and pool their held-out clips",
    )
    c.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="JSON config (default: %(default)s)")
    c.add_argument("--out", type=Path, required=True, help="directory for the fold runs and cv.md")
    c.add_argument("--folds", type=int, default=3)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--jobs", type=int, default=1, help="folds trained side by side (one thread each)")
    c.add_argument("--report-only", action="store_true", help="only (re)write cv.md from the finished folds")
    c.set_defaults(func=_cv)

    i = sub.add_parser("install", help="verify a model directory and install it as edge/models/default")
    i.add_argument("model_dir", type=Path)
    i.set_defaults(func=_install)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m quantize.cli ...`), for when the `tympan` script is not installed."""
    parser = argparse.ArgumentParser(prog="tympan")
    add_quantize(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except TympanError as e:
        print(f"tympan: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
