"""ontology.json -> Ontology: Tympan's sources x states x traits, validated on load.

States ("accelerating", "approaching", "abnormal") and traits ("heavy", "diesel") are shared across
sources: each belongs to one group ("speed", "motion", "weight", ...), and an event carries at most one
state or trait per group. A source ("vehicle", "machine", "dog", ...) lists the states and traits that
apply to it and the model labels (or enrolled class names) that belong to it; `label_states` and
`label_traits` are what a label implies by itself (an "Idling" event is in state "idling", a "Truck" is
"heavy"). `mid` is the AudioSet MID where AudioSet names the concept, else null.

Every problem is a `ConfigError` naming the file and the key path ("states.accelerating.group").
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from edge.errors import ConfigError
from edge.messages import StateEstimate

ONTOLOGY_VERSION = 1
GROUP_KINDS = ("state", "trait")
DERIVED = ("dsp", "anomaly", "label", "learned")
_MID = re.compile(r"/(m|g|t)/[0-9a-z_]+")
_NAME = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Group:
    name: str
    kind: str  # "state" or "trait"
    means: str
    derived: str  # who sets it: "dsp", "anomaly", "label" or "learned" (a model head)


@dataclass(frozen=True)
class Concept:
    """A state or a trait."""

    name: str
    group: str
    mid: str | None


@dataclass(frozen=True)
class Source:
    name: str
    mid: str | None
    states: tuple[str, ...]
    traits: tuple[str, ...]
    labels: tuple[str, ...]
    label_states: dict[str, str]
    label_traits: dict[str, tuple[str, ...]]


class _Reader:
    """Typed access to the parsed JSON that reports `file: key path: problem`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, why: str) -> ConfigError:
        return ConfigError(f"{self.path}: key {key!r}: {why}")

    def obj(self, d: Any, key: str) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise self.fail(key, f"expected an object, got {type(d).__name__}")
        return d

    def get(self, d: dict[str, Any], key: str, path: str) -> Any:
        if key not in d:
            raise self.fail(f"{path}.{key}" if path else key, "is missing")
        return d[key]

    def only(self, d: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
        extra = sorted(set(d) - set(allowed))
        if extra:
            raise self.fail(f"{path}.{extra[0]}", f"unknown key (allowed: {', '.join(allowed)})")

    def text(self, v: Any, key: str) -> str:
        if not isinstance(v, str) or not v.strip():
            raise self.fail(key, f"expected a non-empty string, got {v!r}")
        return v

    def name(self, v: Any, key: str) -> str:
        s = self.text(v, key)
        if not _NAME.fullmatch(s):
            raise self.fail(key, f"{s!r} is not a lower-case name (letters, digits, '-')")
        return s

    def mid(self, v: Any, key: str) -> str | None:
        if v is None:
            return None
        if not isinstance(v, str) or not _MID.fullmatch(v):
            raise self.fail(key, f"expected an AudioSet MID like '/m/07yv9' or null, got {v!r}")
        return v

    def names(self, v: Any, key: str) -> tuple[str, ...]:
        if not isinstance(v, list):
            raise self.fail(key, f"expected a list of names, got {type(v).__name__}")
        out = tuple(self.text(x, f"{key}[{i}]") for i, x in enumerate(v))
        dup = sorted({x for x in out if out.count(x) > 1})
        if dup:
            raise self.fail(key, f"{dup[0]!r} is listed twice")
        return out


class Ontology:
    """The validated ontology. `states`/`traits`: name -> Concept; `sources`: name -> Source."""

    def __init__(self, data: Any, path: str = "<ontology>") -> None:
        r = _Reader(path)
        d = r.obj(data, "<top level>")
        r.only(d, ("version", "about", "groups", "states", "traits", "sources"), "")
        version = r.get(d, "version", "")
        if version != ONTOLOGY_VERSION or isinstance(version, bool):
            raise r.fail("version", f"unsupported ontology version {version!r} (this reader reads {ONTOLOGY_VERSION})")
        self.path = path
        self.groups: dict[str, Group] = {}
        for g, body in r.obj(r.get(d, "groups", ""), "groups").items():
            key = f"groups.{g}"
            r.name(g, key)
            b = r.obj(body, key)
            r.only(b, ("kind", "means", "derived"), key)
            kind = r.get(b, "kind", key)
            if kind not in GROUP_KINDS:
                raise r.fail(f"{key}.kind", f"expected one of {', '.join(GROUP_KINDS)}, got {kind!r}")
            derived = r.get(b, "derived", key)
            if derived not in DERIVED:
                raise r.fail(f"{key}.derived", f"expected one of {', '.join(DERIVED)}, got {derived!r}")
            self.groups[g] = Group(g, kind, r.text(r.get(b, "means", key), f"{key}.means"), derived)
        self.states = self._concepts(r, d, "states", "state")
        self.traits = self._concepts(r, d, "traits", "trait")
        both = sorted(set(self.states) & set(self.traits))
        if both:
            raise r.fail(f"traits.{both[0]}", "is also a state (names are shared by every source, so they must differ)")
        self.sources: dict[str, Source] = {}
        self._by_label: dict[str, str] = {}
        for s, body in r.obj(r.get(d, "sources", ""), "sources").items():
            self.sources[s] = self._source(r, s, body)

    def _concepts(self, r: _Reader, d: dict[str, Any], section: str, kind: str) -> dict[str, Concept]:
        out: dict[str, Concept] = {}
        for n, body in r.obj(r.get(d, section, ""), section).items():
            key = f"{section}.{n}"
            r.name(n, key)
            b = r.obj(body, key)
            r.only(b, ("group", "mid"), key)
            group = r.get(b, "group", key)
            if group not in self.groups:
                raise r.fail(f"{key}.group", f"unknown group {group!r} (groups: {', '.join(self.groups)})")
            if self.groups[group].kind != kind:
                raise r.fail(f"{key}.group", f"group {group!r} holds {self.groups[group].kind}s, not {kind}s")
            out[n] = Concept(n, group, r.mid(r.get(b, "mid", key), f"{key}.mid"))
        return out

    def _source(self, r: _Reader, s: str, body: Any) -> Source:
        key = f"sources.{s}"
        r.name(s, key)
        b = r.obj(body, key)
        fields = ("mid", "states", "traits", "labels", "label_states", "label_traits")
        r.only(b, fields, key)
        states = r.names(r.get(b, "states", key), f"{key}.states")
        for i, st in enumerate(states):
            if st not in self.states:
                raise r.fail(f"{key}.states[{i}]", f"unknown state {st!r}")
        traits = r.names(r.get(b, "traits", key), f"{key}.traits")
        for i, tr in enumerate(traits):
            if tr not in self.traits:
                raise r.fail(f"{key}.traits[{i}]", f"unknown trait {tr!r}")
        labels = r.names(r.get(b, "labels", key), f"{key}.labels")
        for lb in labels:
            if lb in self._by_label:
                raise r.fail(f"{key}.labels", f"label {lb!r} already belongs to source {self._by_label[lb]!r}")
            self._by_label[lb] = s
        label_states: dict[str, str] = {}
        for lb, st in r.obj(r.get(b, "label_states", key), f"{key}.label_states").items():
            k = f"{key}.label_states.{lb}"
            if lb not in labels:
                raise r.fail(k, f"label {lb!r} is not in this source's labels")
            if st not in states:
                raise r.fail(k, f"state {st!r} is not one of this source's states")
            label_states[lb] = st
        label_traits: dict[str, tuple[str, ...]] = {}
        for lb, trs in r.obj(r.get(b, "label_traits", key), f"{key}.label_traits").items():
            k = f"{key}.label_traits.{lb}"
            if lb not in labels:
                raise r.fail(k, f"label {lb!r} is not in this source's labels")
            names = r.names(trs, k)
            for tr in names:
                if tr not in traits:
                    raise r.fail(k, f"trait {tr!r} is not one of this source's traits")
            groups = [self.traits[t].group for t in names]
            if len(set(groups)) != len(groups):
                raise r.fail(k, "two traits of one group (a source is not both heavy and light)")
            label_traits[lb] = names
        return Source(s, r.mid(r.get(b, "mid", key), f"{key}.mid"), states, traits, labels, label_states, label_traits)

    # --- queries ------------------------------------------------------------------------------------
    def source_of(self, label: str) -> Source | None:
        """The source a model label (or enrolled class) belongs to; None if the ontology does not place it."""
        s = self._by_label.get(label)
        return None if s is None else self.sources[s]

    def group_of(self, name: str) -> str:
        """The group of a state or trait name; ConfigError for a name the ontology does not know."""
        c = self.states.get(name) or self.traits.get(name)
        if c is None:
            raise ConfigError(f"{self.path}: {name!r} is neither a state nor a trait of the ontology")
        return c.group

    def applies(self, label: str, name: str) -> bool:
        """Whether state or trait `name` applies to events of `label` (labels the ontology does not place
        accept every DSP-derived state: the DSP does not need to know what made the sound)."""
        src = self.source_of(label)
        if src is None:
            c = self.states.get(name)
            return c is not None and self.groups[c.group].derived in ("dsp", "anomaly")
        return name in src.states or name in src.traits

    def implied(self, label: str) -> tuple[StateEstimate, ...]:
        """States and traits a label implies by itself (p = 1: they are part of the label's meaning)."""
        src = self.source_of(label)
        if src is None:
            return ()
        out = []
        if label in src.label_states:
            st = src.label_states[label]
            out.append(StateEstimate(st, 1.0, self.states[st].group))
        for tr in src.label_traits.get(label, ()):
            out.append(StateEstimate(tr, 1.0, self.traits[tr].group))
        return tuple(out)


def load_ontology(path: str | None = None) -> Ontology:
    """The bundled ontology (edge/ontology/ontology.json) or the one at `path`, validated."""
    if path is None:
        ref = resources.files("edge").joinpath("ontology", "ontology.json")
        label = "edge/ontology/ontology.json"
        try:
            text = ref.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{label}: cannot read the bundled ontology ({e})") from None
    else:
        label = path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read the ontology ({e.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ConfigError(f"{label}: not valid JSON ({e})") from None
    return Ontology(data, label)
