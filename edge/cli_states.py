"""`tympan enroll` (few-shot custom classes) and `tympan anomaly` (per-device model of normal), and the
`listen` options that use them (`--anomaly DIR`, `--enrolled DIR`, `--no-enrolled`, `--no-states`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from typing import Any

from edge.errors import InputError


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="model directory, .tflite or .onnx (default: bundled)")
    p.add_argument("--runtime", default="auto", choices=["auto", "litert", "onnxruntime"], help="model runtime")


def _load_model(args: argparse.Namespace) -> Any:
    from edge.inference import Model

    return Model(args.model, runtime=args.runtime)


def _read_mono(path: str, sample_rate: int) -> Any:
    from edge.sources import read_audio

    x = read_audio(path)
    return x.mean(axis=0) if x.ndim == 2 else x


# --- tympan enroll -----------------------------------------------------------------------------
def add_enroll(sub: Any) -> None:
    p = sub.add_parser(
        "enroll",
        help="teach a new sound class from a few examples (no retraining); list, export, import, remove",
        description="Build a class prototype from a handful of example recordings in the student's embedding. "
        "Enrolled classes appear in `tympan listen` events. Store: --store DIR, else $TYMPAN_ENROLL_DIR, "
        "else ~/.local/share/tympan/enrolled.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="class name to enrol")
    p.add_argument("files", nargs="*", metavar="FILE", help="example recordings (3-10 are typical)")
    p.add_argument("--store", metavar="DIR", help="enrolment directory")
    p.add_argument(
        "--threshold", type=float, metavar="S", help="cosine similarity to fire at (default: from the examples)"
    )
    p.add_argument("--replace", action="store_true", help="overwrite an existing enrolment of that name")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--list", action="store_true", help="list the enrolled classes")
    g.add_argument("--export", metavar="FILE", help="write the enrolments (or NAME only) to one JSON file")
    g.add_argument("--import", dest="import_file", metavar="FILE", help="add the enrolments of an exported file")
    g.add_argument("--remove", metavar="NAME", help="delete an enrolled class")
    p.add_argument("--json", action="store_true", help="--list as JSON lines")
    _model_flags(p)
    p.set_defaults(func=cmd_enroll)


def cmd_enroll(args: argparse.Namespace) -> int:
    from edge.enroll import EnrolmentStore, build

    store = EnrolmentStore(args.store)
    if args.list:
        for en in store.all():
            if args.json:
                d = en.to_dict()
                d.pop("prototype")
                print(json.dumps(d))
            else:
                print(f"{en.name:<24} threshold {en.threshold:.3f}  {en.n_examples} example(s)  model {en.model_id}")
        if not args.json and not store.names():
            print(f"no enrolled classes in {store.dir}", file=sys.stderr)
        return 0
    if args.remove is not None:
        store.remove(args.remove)
        print(f"removed {args.remove!r} from {store.dir}", file=sys.stderr)
        return 0
    if args.export is not None:
        names = [args.name] if args.name else None
        n = store.export(args.export, names)
        print(f"exported {n} enrolment(s) to {args.export}", file=sys.stderr)
        return 0
    if args.import_file is not None:
        names = store.import_file(args.import_file, replace=args.replace)
        print(f"imported {', '.join(names) or 'nothing'} into {store.dir}", file=sys.stderr)
        return 0
    if not args.name:
        raise InputError("enroll: give NAME FILE... (or --list, --export, --import, --remove)")
    if not args.files:
        raise InputError(f"enroll {args.name!r}: give example recordings (FILE...)")
    model = _load_model(args)
    examples = [_read_mono(f, model.frontend.sample_rate) for f in args.files]
    en = build(model, args.name, examples, files=tuple(args.files), threshold=args.threshold)
    path = store.save(en, replace=args.replace)
    print(
        f"enrolled {en.name!r} from {en.n_examples} example(s), threshold {en.threshold:.3f}: {path}", file=sys.stderr
    )
    return 0


# --- tympan anomaly ----------------------------------------------------------------------------
def add_anomaly(sub: Any) -> None:
    p = sub.add_parser(
        "anomaly",
        help="learn a device's normal sound from normal recordings; score recordings against it",
        description="A per-device model of normal for one source (an ontology source such as 'machine', a model "
        "label such as 'Air conditioning', an enrolled class, or '*' for every event). `listen --anomaly DIR` "
        "then reports each matching event as normal or abnormal with a confidence.",
    )
    s = p.add_subparsers(dest="anomaly_cmd", metavar="fit|score")
    f = s.add_parser("fit", help="fit a model of normal from normal recordings only")
    f.add_argument("files", nargs="+", metavar="FILE")
    f.add_argument("--source", required=True, metavar="NAME", help="what the model is of (see above)")
    f.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    f.set_defaults(func=cmd_anomaly_fit)
    c = s.add_parser("score", help="anomaly score of recordings (> 0: abnormal)")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--model", dest="anomaly_model", required=True, metavar="DIR", help="model directory")
    c.add_argument("--json", action="store_true", help="one JSON object per file")
    c.set_defaults(func=cmd_anomaly_score)
    p.set_defaults(func=lambda args: _no_sub(p))


def _no_sub(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    raise InputError("anomaly: name a subcommand: fit or score")


def cmd_anomaly_fit(args: argparse.Namespace) -> int:
    from edge.anomaly import fit
    from edge.dsp.frontend import DEFAULT_FRONTEND

    recs = [_read_mono(f, DEFAULT_FRONTEND.sample_rate) for f in args.files]
    model = fit(recs, source=args.source, files=tuple(args.files))
    model.save(args.out)
    print(
        f"anomaly model of {args.source!r} from {model.n_windows} windows of {len(recs)} recording(s), "
        f"threshold {model.threshold:.3f}: {args.out}",
        file=sys.stderr,
    )
    return 0


def cmd_anomaly_score(args: argparse.Namespace) -> int:
    from edge.anomaly import AnomalyModel
    from edge.cli import _per_file
    from edge.dsp.frontend import DEFAULT_FRONTEND

    model = AnomalyModel.load(args.anomaly_model)

    def work(path: str) -> None:
        x = _read_mono(path, DEFAULT_FRONTEND.sample_rate)
        r = model.score(x) - model.threshold  # held-out standard deviations past the threshold
        st = model.state(x)
        if args.json:
            print(json.dumps({"file": path, "source": model.source, "score": round(r, 4), "state": st.name, "p": st.p}))
        else:
            print(f"{path}: {st.name} (score {r:.2f}, p={st.p:.2f})")

    return _per_file(args.files, work)


# --- listen options ----------------------------------------------------------------------------
def add_listen_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("states, anomaly and enrolled classes")
    g.add_argument("--anomaly", metavar="DIR", help="report normal/abnormal with this model (`tympan anomaly fit`)")
    g.add_argument("--enrolled", metavar="DIR", help="enrolment directory (default: the `tympan enroll` store)")
    g.add_argument("--no-enrolled", action="store_true", help="do not detect enrolled classes")
    g.add_argument("--no-states", action="store_true", help="do not compute DSP-derived states")


@dataclass(frozen=True)
class BirthModel:
    """A model as the birth message sees it: its labels plus the enrolled classes' codes."""

    id: str
    sha256: str
    labels: tuple[Any, ...]


def wrap_pipeline(args: argparse.Namespace, pipeline: Any) -> Any:
    """The pipeline with states, anomaly and enrolled classes (`edge.annotate`), or as it is when all
    three are off."""
    from edge.annotate import AnnotatedPipeline

    anomaly = None
    if getattr(args, "anomaly", None):
        from edge.anomaly import AnomalyModel

        anomaly = AnomalyModel.load(args.anomaly)
    enrolled = None
    if not getattr(args, "no_enrolled", False):
        from edge.enroll import EnrolledClassifier, EnrolmentStore

        store = EnrolmentStore(getattr(args, "enrolled", None))
        if getattr(args, "enrolled", None) and not store.names():
            raise InputError(f"--enrolled {args.enrolled}: no enrolments there")
        ens = store.all()
        if ens:
            enrolled = EnrolledClassifier(ens, pipeline.model)
    states = not getattr(args, "no_states", False)
    if not states and anomaly is None and enrolled is None:
        return pipeline
    return AnnotatedPipeline(pipeline, anomaly=anomaly, enrolled=enrolled, states=states)


def birth_model(model: Any, pipeline: Any) -> Any:
    extra = getattr(pipeline, "enrolled_labels", ())
    if not extra:
        return model
    return BirthModel(model.id, model.sha256, tuple(model.labels) + tuple(extra))
