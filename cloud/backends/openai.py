"""Scene -> caption from any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, hosted).

POST `<url>/chat/completions` with `{"model", "messages", "max_tokens", "temperature"}` and read
`choices[0].message.content`. Timeouts, connection failures, 429 and 5xx are retried with exponential
backoff (honouring a numeric `Retry-After`); once the retries are spent the caption is skipped
(`CaptionUnavailable`). Any other 4xx, or a reply of the wrong shape, is a `CaptionError` that says
what to fix. The API key goes only into the `Authorization` header: never into logs or messages.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from cloud.backends.base import CaptionBackend, CaptionError, CaptionUnavailable
from cloud.prompt import FEW_SHOT, ZERO_SHOT, build_messages
from cloud.scene import Scene
from edge.errors import ConfigError

log = logging.getLogger(__name__)

KEY_ENV = "OPENAI_API_KEY"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
DEFAULT_MAX_TOKENS = 120
DEFAULT_TEMPERATURE = 0.2
RETRY_STATUS = frozenset({408, 409, 429})  # plus every 5xx


def completions_url(url: str) -> str:
    """`http://host:8000/v1` -> `http://host:8000/v1/chat/completions` (a full endpoint URL is kept)."""
    u = url.strip().rstrip("/")
    if not u.startswith(("http://", "https://")):
        raise ConfigError(f"--openai-url {url!r}: expected an http:// or https:// URL such as http://localhost:8000/v1")
    return u if u.endswith("/chat/completions") else u + "/chat/completions"


def _error_detail(body: bytes) -> str:
    try:
        err = json.loads(body).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:300]
    except (ValueError, AttributeError):
        pass
    return body.decode("utf-8", "replace").strip()[:300]


def _content(reply: Any) -> str:
    """`choices[0].message.content` (a string, or a list of text parts)."""
    try:
        content = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise CaptionError(f"chat-completions reply has no choices[0].message.content: {str(reply)[:300]}") from None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise CaptionError(f"chat-completions content is not text: {content!r:.300}")
    return content


class OpenAIBackend(CaptionBackend):
    """Captions from a chat-completions endpoint (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        url: str,
        model: str,
        key: str | None = None,
        few_shot: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not model:
            raise ConfigError("the openai backend needs a model name (--openai-model)")
        if not timeout_s > 0:
            raise ConfigError(f"--openai-timeout must be positive, got {timeout_s!r}")
        if retries < 0:
            raise ConfigError(f"--openai-retries must be 0 or more, got {retries!r}")
        super().__init__(model=model, template=FEW_SHOT if few_shot else ZERO_SHOT)
        self.url = completions_url(url)
        self._key = key
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r}, template={self.template!r})"

    def _text(self, scene: Scene) -> str:
        body = {
            "model": self.model,
            "messages": build_messages(scene, self.template),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        return _content(self._post(json.dumps(body).encode()))

    def _post(self, data: bytes) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        problem = ""
        for attempt in range(self.retries + 1):
            wait = min(MAX_BACKOFF_S, self.backoff_s * 2**attempt)
            req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw)
                except ValueError:
                    raise CaptionError(f"{self.url}: reply is not JSON: {raw[:200]!r}") from None
            except urllib.error.HTTPError as e:
                detail = _error_detail(e.read())
                if e.code not in RETRY_STATUS and e.code < 500:
                    hint = " (check --openai-key or OPENAI_API_KEY)" if e.code in (401, 403) else ""
                    raise CaptionError(f"{self.url}: HTTP {e.code} {e.reason}: {detail}{hint}") from None
                problem = f"HTTP {e.code} {e.reason}: {detail}"
                after = e.headers.get("Retry-After") if e.headers else None
                if after is not None and after.strip().replace(".", "", 1).isdigit():
                    wait = min(MAX_BACKOFF_S, float(after))
            except TimeoutError:
                problem = f"no reply within {self.timeout_s:g} s"
            except urllib.error.URLError as e:
                if isinstance(e.reason, TimeoutError):
                    problem = f"no reply within {self.timeout_s:g} s"
                else:
                    problem = f"cannot reach the server: {e.reason}"
            except (ConnectionError, OSError) as e:
                problem = f"connection failed: {e}"
            if attempt < self.retries:
                log.info("openai: %s; retry %d/%d in %.1f s", problem, attempt + 1, self.retries, wait)
                self._sleep(wait)
        raise CaptionUnavailable(f"{self.url}: {problem} (after {self.retries + 1} attempts)")

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("openai backend (any OpenAI-compatible chat-completions endpoint)")
        g.add_argument("--openai-url", metavar="URL", help="API base URL, e.g. http://localhost:8000/v1")
        g.add_argument("--openai-model", metavar="NAME", help="model name the server expects")
        g.add_argument("--openai-key", metavar="KEY", help=f"API key (default: ${KEY_ENV}; never logged)")
        g.add_argument(
            "--openai-timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            metavar="S",
            help=f"seconds to wait for a reply (default {DEFAULT_TIMEOUT_S:g})",
        )
        g.add_argument(
            "--openai-retries",
            type=int,
            default=DEFAULT_RETRIES,
            metavar="N",
            help=f"retries on timeouts, 429 and 5xx, backing off exponentially (default {DEFAULT_RETRIES})",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OpenAIBackend:
        if not args.openai_url:
            raise ConfigError("--backend openai needs --openai-url (e.g. http://localhost:8000/v1)")
        return cls(
            url=args.openai_url,
            model=args.openai_model or "",
            key=args.openai_key or os.environ.get(KEY_ENV) or None,
            few_shot=bool(args.few_shot),
            timeout_s=args.openai_timeout,
            retries=args.openai_retries,
        )
