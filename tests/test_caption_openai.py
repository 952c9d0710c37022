"""The `openai` backend against a local HTTP server that speaks the chat-completions shape."""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloud.backends import QUIET, CaptionError, CaptionUnavailable, OpenAIBackend, backend_class
from cloud.backends.openai import completions_url
from cloud.prompt import FEW_SHOT, ZERO_SHOT, build_messages
from cloud.scene import Scene, SceneWindow
from edge.errors import ConfigError
from tests.test_caption_scene import T, Tokens

KEY = "sk-test-0123456789"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able; default: a completion saying `text`
    text: str = "A dog barked to the left."
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeServer:
    """Replies from a script (the last one repeats); records every request (path, headers, JSON body)."""

    url: str
    script: list[Reply] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = FakeServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            fake.requests.append((self.path, dict(self.headers), json.loads(body)))
            r = fake.script.pop(0) if len(fake.script) > 1 else fake.script[0]
            if r.delay_s:
                time.sleep(r.delay_s)
            payload = r.body if r.body is not None else {
                "id": "cmpl-1", "object": "chat.completion", "model": "test-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": r.text},
                             "finish_reason": "stop"}],
            }  # fmt: skip
            data = json.dumps(payload).encode()
            try:
                self.send_response(r.status)
                for k, v in r.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    fake.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _scene() -> Scene:
    g, w = Tokens(), SceneWindow("dev-a")
    for tok in g.event(1, "Dog", T + 1, T + 2, az=90.0):
        w.feed(tok)
    return w.snapshot(T + 10)


def _backend(url: str, sleeps: list[float] | None = None, **kw: Any) -> OpenAIBackend:
    sink = sleeps if sleeps is not None else []
    return OpenAIBackend(url=url, model="test-model", key=KEY, sleep=sink.append, **kw)


def test_request_shape_and_reply(server: FakeServer) -> None:
    server.script = [Reply(text="  A dog barked to the left.\n")]
    scene = _scene()
    c = _backend(server.url, few_shot=True).caption(scene)
    assert (c.text, c.backend, c.model, c.template, c.events) == (
        "A dog barked to the left.", "openai", "test-model", FEW_SHOT, 1
    )  # fmt: skip
    assert (c.start, c.end) == (scene.start, scene.end)
    ((path, headers, body),) = server.requests
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == f"Bearer {KEY}" and headers["Content-Type"] == "application/json"
    assert body["model"] == "test-model"
    assert body["messages"] == build_messages(scene, FEW_SHOT)
    assert all(set(m) == {"role", "content"} for m in body["messages"])


def test_content_as_a_list_of_text_parts(server: FakeServer) -> None:
    parts = [{"type": "text", "text": "Rain "}, {"type": "text", "text": "fell."}]
    server.script = [Reply(body={"choices": [{"message": {"role": "assistant", "content": parts}}]})]
    assert _backend(server.url).caption(_scene()).text == "Rain fell."


def test_500_then_200_is_retried_with_backoff(server: FakeServer) -> None:
    server.script = [Reply(500, {"error": {"message": "overloaded"}}), Reply(text="ok.")]
    sleeps: list[float] = []
    c = _backend(server.url, sleeps, backoff_s=0.5).caption(_scene())
    assert c.text == "ok." and len(server.requests) == 2 and sleeps == [0.5]


def test_429_honours_retry_after_then_gives_up(server: FakeServer) -> None:
    server.script = [Reply(429, {"error": "slow down"}, headers={"Retry-After": "2"})]
    sleeps: list[float] = []
    with pytest.raises(CaptionUnavailable, match=r"HTTP 429.*slow down.*after 3 attempts"):
        _backend(server.url, sleeps, retries=2).caption(_scene())
    assert sleeps == [2.0, 2.0] and len(server.requests) == 3


def test_401_is_a_clear_error_at_once_and_never_shows_the_key(server: FakeServer) -> None:
    server.script = [Reply(401, {"error": {"message": "Incorrect API key provided"}})]
    with pytest.raises(CaptionError) as info:
        _backend(server.url).caption(_scene())
    assert not isinstance(info.value, CaptionUnavailable)
    msg = str(info.value)
    assert "HTTP 401" in msg and "Incorrect API key" in msg and "--openai-key" in msg and KEY not in msg
    assert len(server.requests) == 1


def test_404_names_the_url(server: FakeServer) -> None:
    server.script = [Reply(404, {"error": {"message": "The model `x` does not exist"}})]
    with pytest.raises(CaptionError, match=r"/v1/chat/completions: HTTP 404 .*does not exist"):
        _backend(server.url).caption(_scene())


def test_a_timeout_is_retried_then_reported(server: FakeServer) -> None:
    server.script = [Reply(delay_s=0.6), Reply(text="late but fine.")]
    sleeps: list[float] = []
    assert _backend(server.url, sleeps, timeout_s=0.2).caption(_scene()).text == "late but fine."
    assert len(server.requests) == 2 and len(sleeps) == 1
    server.script = [Reply(delay_s=0.6)]
    with pytest.raises(CaptionUnavailable, match=r"no reply within 0\.2 s"):
        _backend(server.url, timeout_s=0.2, retries=1).caption(_scene())


def test_unreachable_server_is_unavailable() -> None:
    with pytest.raises(CaptionUnavailable, match=r"cannot reach|connection failed"):
        _backend("http://127.0.0.1:9/v1", retries=1).caption(_scene())


@pytest.mark.parametrize("body", [{"choices": []}, {"nope": 1}, {"choices": [{"message": {"content": 3}}]}])
def test_replies_of_the_wrong_shape_are_errors(server: FakeServer, body: Any) -> None:
    server.script = [Reply(body=body)]
    with pytest.raises(CaptionError):
        _backend(server.url).caption(_scene())


def test_an_empty_window_is_quiet_without_a_request(server: FakeServer) -> None:
    server.script = [Reply()]
    assert _backend(server.url).caption(SceneWindow("dev-a").snapshot(T)).text == QUIET
    assert server.requests == []


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--few-shot", action="store_true")
    OpenAIBackend.add_arguments(p)
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    b = backend_class("openai").from_args(p.parse_args(["--openai-url", "http://h:8000/v1/", "--openai-model", "m"]))
    assert isinstance(b, OpenAIBackend)
    assert (b.url, b.model, b.template, b._key) == ("http://h:8000/v1/chat/completions", "m", ZERO_SHOT, "from-env")
    assert "from-env" not in repr(b)
    with pytest.raises(ConfigError, match="--openai-url"):
        OpenAIBackend.from_args(p.parse_args(["--openai-model", "m"]))
    with pytest.raises(ConfigError, match="--openai-model"):
        OpenAIBackend.from_args(p.parse_args(["--openai-url", "http://h/v1"]))
    with pytest.raises(ConfigError, match="http"):
        completions_url("localhost:8000/v1")
    with pytest.raises(ConfigError, match="unknown caption backend 'gpt'"):
        backend_class("gpt")
