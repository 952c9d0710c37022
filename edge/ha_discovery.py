"""Device identity + topics -> Home Assistant MQTT discovery configs: a list of (topic, JSON payload) pairs.

Published retained under `homeassistant/sensor/<node>/<object>/config` (the default discovery
prefix). Each entity reads the device's `events` topic, is available while the retained `status` is
`online`, and belongs to one HA device per Tympan device (identifiers `tympan_<device>`). Pure
functions: the publisher sends what these return.
"""

from __future__ import annotations

import json
import re
from typing import Any

DISCOVERY_PREFIX = "homeassistant"

# (object id, name, value template, extra config)
_SENSORS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("last_event", "Last sound event", "{{ value_json.lbl }}", {"icon": "mdi:ear-hearing"}),
    (
        "confidence",
        "Last sound event confidence",
        "{{ value_json.p }}",
        {"state_class": "measurement", "icon": "mdi:percent"},
    ),
    (
        "direction",
        "Last sound event direction",
        "{{ value_json.az if value_json.az is not none else 'unknown' }}",
        {"unit_of_measurement": "°", "icon": "mdi:compass-outline"},
    ),
)


def ha_object_id(text: str) -> str:
    """A discovery node/object id: only [a-zA-Z0-9_-] (anything else becomes `_`)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", text) or "_"


def discovery_configs(
    topic_base: str,
    device_id: str,
    site: str,
    model: str | None,
    sw_version: str,
    prefix: str = DISCOVERY_PREFIX,
) -> list[tuple[str, bytes]]:
    """The retained discovery messages for one device; `topic_base` is `tympan/v1/<site>/<device>`."""
    node = ha_object_id(f"tympan_{site}_{device_id}")
    device: dict[str, Any] = {
        "identifiers": [node],
        "name": f"Tympan {device_id}",
        "manufacturer": "Tympan",
        "sw_version": sw_version,
        "suggested_area": site,
    }
    if model:
        device["model"] = model
    out: list[tuple[str, bytes]] = []
    for obj, name, template, extra in _SENSORS:
        cfg: dict[str, Any] = {
            "name": name,
            "unique_id": f"{node}_{obj}",
            "object_id": f"{node}_{obj}",
            "state_topic": f"{topic_base}/events",
            "value_template": template,
            "json_attributes_topic": f"{topic_base}/events",
            "availability_topic": f"{topic_base}/status",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            **extra,
        }
        out.append((f"{prefix}/sensor/{node}/{obj}/config", json.dumps(cfg, separators=(",", ":")).encode()))
    return out
