"""`tympan subscribe --mqtt URL`: event tokens from MQTT -> readable lines (or JSON lines) on stdout.

stdout: one line per decoded token. stderr: `birth:`/`status:` lines as devices announce themselves,
`gap: device SITE/DEV seq A -> B (N missing)` for lost tokens, and one warning per skipped payload.
Decoding, duplicate and gap logic live in `cloud.subscribe.TokenStream`; this module only does I/O.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, TextIO

from cloud.subscribe import (
    Birth,
    Gap,
    MqttSubscription,
    Problem,
    Received,
    Record,
    Status,
    TokenStream,
    format_gap,
    format_json,
    format_token,
    topic_filters,
)
from edge.errors import ConfigError, TokenError
from edge.mqtt_url import add_ca_option, parse_mqtt_url
from edge.token_codec import check_name

log = logging.getLogger("tympan.subscribe")

TICK_S = 0.2  # how often held packed tokens are checked when no message arrives


def add_subscribe(sub: Any) -> None:
    p = sub.add_parser(
        "subscribe",
        help="print decoded event tokens from an MQTT broker as they arrive",
        description="Subscribe to tympan/v1/<site>/<device>/events (JSON tokens) or .../tokens (packed, with "
        "--packed) and print each token; report gaps in each device's seq and skip malformed payloads.",
    )
    p.add_argument("--mqtt", required=True, metavar="URL", help="mqtt://[user[:pass]@]host[:port] or mqtts://...")
    p.add_argument("--site", metavar="S", help="only this site (default: all)")
    p.add_argument("--device", metavar="D", help="only this device id (default: all)")
    p.add_argument("--json", action="store_true", help="print tokens as JSON lines")
    p.add_argument("--packed", action="store_true", help="read packed tokens (.../tokens) instead of JSON events")
    add_ca_option(p)
    p.add_argument("--client-id", metavar="ID", help="persistent session: tokens sent while away arrive later")
    p.add_argument("--count", type=int, metavar="N", help="exit after N tokens")
    p.add_argument("--timeout", type=float, metavar="S", help="exit after S seconds")
    p.set_defaults(func=cmd_subscribe)


def _render(rec: Record, as_json: bool, out: TextIO, err: TextIO) -> None:
    if isinstance(rec, Received):
        print(format_json(rec.token) if as_json else format_token(rec.token, rec.late), file=out, flush=True)
    elif isinstance(rec, Gap):
        print(format_gap(rec), file=err, flush=True)
    elif isinstance(rec, Problem):
        log.warning("%s: %s (skipped)", rec.topic, rec.message)
    elif isinstance(rec, Birth):
        b = rec.birth
        print(f"birth: device {rec.site}/{rec.dev} sw {b['sw']} model {b['model']['id']} "
              f"({len(b['labels'])} labels)", file=err, flush=True)  # fmt: skip
    elif isinstance(rec, Status):
        print(f"status: device {rec.site}/{rec.dev} {rec.text}", file=err, flush=True)


def cmd_subscribe(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        for flag, v in (("--site", args.site), ("--device", args.device)):
            if v is not None:
                check_name(flag, v)
    except TokenError as e:
        raise ConfigError(str(e).replace("token key", "flag")) from None
    if args.count is not None and args.count < 1:
        raise ConfigError(f"--count must be 1 or more, got {args.count!r}")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout!r}")
    target = parse_mqtt_url(args.mqtt)
    stream = TokenStream(packed=args.packed)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    n = 0
    with MqttSubscription(target, topic_filters(args.site, args.device, args.packed), args.cafile,
                          args.client_id) as sub:  # fmt: skip
        while args.count is None or n < args.count:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait = TICK_S if deadline is None else min(TICK_S, deadline - now)
            msg = sub.get(wait)
            now = time.monotonic()
            recs = stream.expire(now) if msg is None else stream.feed(msg[0], msg[1], now)
            for rec in recs:
                _render(rec, args.json, out, err)
                if isinstance(rec, Received):
                    n += 1
                    if args.count is not None and n >= args.count:
                        break
    if args.count is not None and n < args.count:
        print(f"tympan: subscribe: {n} of {args.count} tokens within {args.timeout:g} s", file=err)
        return 1
    return 0
