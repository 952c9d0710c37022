#!/usr/bin/env python3
"""DOA: Tympan SRP-PHAT / MUSIC / NormMUSIC vs pyroomacoustics SRP / MUSIC / NormMUSIC, same scenes.

The scenes, methods and scores are `tympan evaluate doa`'s (edge/evaluation/doa_eval.py): simulated
shoebox rooms (RT60 0.15-0.8 s, SNR 5-30 dB, sources 0.8-3 m away, above and below the array plane)
with ESC-50 recordings as sources, every bundled board array at the same spot of each room; single
sources and pairs of simultaneous sources >= 45 degrees apart. Reports median / 90th percentile
azimuth error, share within 10 degrees, two-source both-found rate and CPU time per audio second
(process time, medians; one thread), and the issue's targets as PASS/FAIL rows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_doa.py [--scenes 48] [--two-source-scenes 24]

Writes benchmarks/results/doa.md and doa.json. Needs ../shared/data (ESC-50) and the eval extra.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    from edge.evaluation import doa_eval

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    doa_eval.add_arguments(ap)
    args = ap.parse_args()
    if args.out is None:
        args.out = os.path.join(HERE, "results", "doa")
    return doa_eval.run(args)


if __name__ == "__main__":
    sys.exit(main())
