"""The sources x states x traits ontology: the bundled file, its queries, and malformed files rejected."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from edge.errors import ConfigError
from edge.inference import default_model_dir
from edge.ontology import Ontology, load_ontology

BUNDLED = Path(__file__).resolve().parents[1] / "edge" / "ontology" / "ontology.json"


def bundled() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(BUNDLED.read_text(encoding="utf-8"))
    return data


def test_bundled_ontology_loads_and_is_compositional() -> None:
    o = load_ontology()
    # states are shared across sources: "approaching" applies to vehicles, dogs and people alike
    sharing = [s for s in o.sources.values() if "approaching" in s.states]
    assert {s.name for s in sharing} >= {"vehicle", "dog", "person"}
    for name in ("accelerating", "decelerating", "idling", "starting", "braking", "passing", "normal", "abnormal",
                 "slam", "bark", "growl", "whine", "speech", "shout", "scream", "cough", "dripping"):  # fmt: skip
        assert name in o.states, name
    for name in ("heavy", "light", "petrol", "diesel"):
        assert name in o.traits
    assert o.states["idling"].mid == "/m/07pb8fc"


def test_every_label_the_ontology_places_is_a_model_label() -> None:
    import csv

    with open(Path(default_model_dir()) / "labels.csv", newline="", encoding="utf-8") as f:
        names = {r["display_name"] for r in csv.DictReader(f)}
    o = load_ontology()
    for src in o.sources.values():
        assert set(src.labels) <= names, (src.name, set(src.labels) - names)


def test_label_implied_states_and_traits() -> None:
    o = load_ontology()
    assert {(s.name, s.group) for s in o.implied("Truck")} == {("heavy", "weight")}
    assert [s.name for s in o.implied("Idling")] == ["idling"]
    assert o.implied("Music") == ()
    assert o.applies("Car", "accelerating") and not o.applies("Dog", "accelerating")
    assert o.applies("Music", "impulsive")  # unplaced labels accept DSP states
    assert not o.applies("Music", "heavy")  # but no traits
    assert o.group_of("left-to-right") == "lateral"
    with pytest.raises(ConfigError, match="'flying'"):
        o.group_of("flying")


def _mutate(path: str, value: Any) -> dict[str, Any]:
    d = copy.deepcopy(bundled())
    keys = path.split("/")
    node = d
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return d


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("version", 2, "key 'version': unsupported ontology version 2"),
        ("states/accelerating/group", "sped", "key 'states.accelerating.group': unknown group 'sped'"),
        ("states/accelerating/mid", "m/07q2z82", "key 'states.accelerating.mid': expected an AudioSet MID"),
        ("traits/heavy/group", "speed", "key 'traits.heavy.group': group 'speed' holds states, not traits"),
        (
            "sources/vehicle/states",
            ["accelerating", "flying"],
            "key 'sources.vehicle.states[1]': unknown state 'flying'",
        ),
        ("sources/dog/labels", ["Dog", "Car"], "label 'Car' already belongs to source 'vehicle'"),
        ("sources/vehicle/label_traits", {"Truck": ["heavy", "light"]}, "two traits of one group"),
        ("sources/vehicle/label_states", {"Truck": "barking"}, "state 'barking' is not one of this source's states"),
        ("sources/vehicle/colour", "red", "key 'sources.vehicle.colour': unknown key"),
        ("groups/speed/kind", "mood", "key 'groups.speed.kind': expected one of state, trait"),
        ("sources/vehicle/traits", _DELETE, "key 'sources.vehicle.traits': is missing"),
        ("states/Fast", {"group": "speed", "mid": None}, "'Fast' is not a lower-case name"),
    ],
)
def test_malformed_ontology_is_rejected_naming_file_and_key(
    path: str, value: Any, message: str, tmp_path: Path
) -> None:
    f = tmp_path / "onto.json"
    f.write_text(json.dumps(_mutate(path, value)), encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(str(f)) + ".*" + re.escape(message)):
        load_ontology(str(f))


def test_unreadable_and_non_json_ontology_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the ontology"):
        load_ontology(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_ontology(str(bad))
    with pytest.raises(ConfigError, match="expected an object"):
        Ontology([1, 2], "list.json")
