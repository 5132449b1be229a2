"""OpenAIChatModel against a small in-process OpenAI-style HTTP server that can inject faults."""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

pytest.importorskip("httpx")

from lumir.errors import ModalityError
from lumir.models.chat.base import ChatEndpointError, PromptTooLongError, image_part, user_message
from lumir.models.chat.openai import OpenAIChatModel, normalize_endpoint
from lumir.models.chat.registry import load_chat_model

TOP = [
    {"token": " Yes", "logprob": -0.1},
    {"token": "Yes", "logprob": -0.5},
    {"token": "\u2581No", "logprob": -2.0},
    {"token": "Maybe", "logprob": -3.0},
]


class FakeServer:
    """Canned OpenAI answers; ``faults`` is a queue of (kind, arg...) consumed one per chat request."""

    def __init__(self) -> None:
        self.faults: deque[tuple[Any, ...]] = deque()
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.delay: float = 0.0
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()
        self.top = list(TOP)
        self.legacy = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": "fake-model-7b"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append((dict(self.headers), body))
                    fake.active += 1
                    fake.max_active = max(fake.max_active, fake.active)
                    fault = fake.faults.popleft() if fake.faults else None
                try:
                    self._answer(body, fault)
                finally:
                    with fake.lock:
                        fake.active -= 1

            def _answer(self, body: dict[str, Any], fault: tuple[Any, ...] | None) -> None:
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if fault is not None:
                    kind = fault[0]
                    if kind == "status":
                        return self._send(
                            fault[1], {"error": {"message": fault[2]}}, fault[3] if len(fault) > 3 else {}
                        )
                    if kind == "sleep":
                        time.sleep(fault[1])
                    if kind == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return None
                text = body["messages"][-1]["content"]
                text = text if isinstance(text, str) else json.dumps(text)
                if fake.delay:
                    time.sleep(fake.delay)
                if "slow" in text:
                    time.sleep(0.3)
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": f"echo:{text}"}}
                if body.get("logprobs"):
                    if fake.legacy:
                        choice["logprobs"] = {"top_logprobs": [{e["token"]: e["logprob"] for e in fake.top}]}
                    else:
                        first = {**fake.top[0], "top_logprobs": fake.top[: body["top_logprobs"]]}
                        choice["logprobs"] = {"content": [first]}
                return self._send(200, {"choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 1}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def chat_requests(self) -> list[dict[str, Any]]:
        return [b for _, b in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.close()


def _model(server: FakeServer, **kw: Any) -> OpenAIChatModel:
    opts: dict[str, Any] = {"timeout": 5.0, "backoff": 0.01, "max_backoff": 0.05, **kw}
    return OpenAIChatModel(server.url, "fake", **opts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_with_or_without_v1() -> None:
    assert normalize_endpoint("http://h:1") == "http://h:1/v1"
    assert normalize_endpoint("http://h:1/v1/") == "http://h:1/v1"
    assert normalize_endpoint("https://gw.example/openai") == "https://gw.example/openai"
    with pytest.raises(ValueError, match="http"):
        normalize_endpoint("localhost:8000")


def test_generate_sends_options_and_keeps_order(server: FakeServer) -> None:
    model = _model(server, concurrency=4)
    convs = [user_message("slow first"), user_message("second"), user_message("third")]
    out = model.generate(convs, max_new_tokens=5, temperature=0.7, top_p=0.9, seed=3, stop=["\n"])
    assert out == ["echo:slow first", "echo:second", "echo:third"]  # the slow one finished last, order kept
    sent = server.chat_requests()[0]
    assert sent["model"] == "fake" and sent["max_tokens"] == 5 and sent["temperature"] == 0.7
    assert sent["top_p"] == 0.9 and sent["seed"] == 3 and sent["stop"] == ["\n"]
    assert sent["messages"] == [{"role": "user", "content": sent["messages"][0]["content"]}]
    assert model.stats.calls == 3 and model.stats.prompt_tokens == 21
    # a stop string the server echoed back is cut
    assert model.generate([user_message("a:b")], stop=":") == ["echo"]


def test_base_url_with_v1_reaches_the_same_server(server: FakeServer) -> None:
    assert OpenAIChatModel(server.url + "/v1/").generate([user_message("x")]) == ["echo:x"]


def test_retries_then_succeeds(server: FakeServer) -> None:
    server.faults.extend([("status", 500, "boom"), ("status", 503, "busy"), ("drop",)])
    model = _model(server, max_retries=3)
    assert model.generate([user_message("hi")]) == ["echo:hi"]
    assert len(server.requests) == 4
    assert model.stats.extra["retries"] == 3 and model.stats.extra["backoff_ms"] > 0


def test_429_retry_after_is_honoured(server: FakeServer) -> None:
    server.faults.append(("status", 429, "slow down", {"Retry-After": "1"}))
    model = _model(server)
    t0 = time.monotonic()
    assert model.generate([user_message("hi")]) == ["echo:hi"]
    assert time.monotonic() - t0 >= 0.95  # backoff alone would be <= 0.05 s
    assert len(server.requests) == 2


def test_persistent_500_names_endpoint_after_all_attempts(server: FakeServer) -> None:
    server.faults.extend([("status", 500, "internal kaboom")] * 10)
    model = _model(server, max_retries=2)
    with pytest.raises(ChatEndpointError) as info:
        model.generate([user_message("hi")])
    assert len(server.requests) == 3
    assert info.value.endpoint == f"{server.url}/v1/chat/completions"
    msg = str(info.value)
    assert server.url in msg and "3 attempt" in msg and "internal kaboom" in msg


def test_other_4xx_is_not_retried(server: FakeServer) -> None:
    server.faults.append(("status", 401, "bad key"))
    with pytest.raises(ChatEndpointError, match="HTTP 401.*bad key"):
        _model(server).generate([user_message("hi")])
    assert len(server.requests) == 1


def test_context_length_400_is_prompt_too_long(server: FakeServer) -> None:
    server.faults.append(("status", 400, "This model's maximum context length is 2048 tokens. However, ..."))
    with pytest.raises(PromptTooLongError, match="maximum context length"):
        _model(server).token_logprobs([user_message("hi")], ["Yes", "No"])
    assert len(server.requests) == 1


def test_slow_response_times_out(server: FakeServer) -> None:
    server.faults.extend([("sleep", 3.0), ("sleep", 3.0)])
    model = _model(server, timeout=0.3, max_retries=1)
    t0 = time.monotonic()
    with pytest.raises(ChatEndpointError, match="timed out") as info:
        model.generate([user_message("hi")])
    assert time.monotonic() - t0 < 2.0
    assert "2 attempt" in str(info.value)


def test_connection_refused_fails_fast() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    model = OpenAIChatModel(url, backoff=0.01, max_backoff=0.02, max_retries=2)
    t0 = time.monotonic()
    with pytest.raises(ChatEndpointError, match="connection failed") as info:
        model.generate([user_message("a"), user_message("b"), user_message("c")])
    assert time.monotonic() - t0 < 3.0
    assert url in str(info.value) and "3 attempt" in str(info.value)
    assert model.fingerprint == f"{url}/v1#default"  # no /models answer: the plain form


def test_concurrency_bound_is_respected(server: FakeServer) -> None:
    server.delay = 0.25  # long enough that three requests overlap even on a loaded machine
    model = _model(server, concurrency=3)
    out = model.generate([user_message(f"q{i}") for i in range(12)])
    assert out == [f"echo:q{i}" for i in range(12)]
    assert server.max_active == 3


def test_first_failure_stops_the_rest(server: FakeServer) -> None:
    server.faults.extend([("status", 404, "no such model")])
    server.delay = 0.05
    with pytest.raises(ChatEndpointError, match="404"):
        _model(server, concurrency=2).generate([user_message(f"q{i}") for i in range(40)])
    time.sleep(0.2)
    assert len(server.requests) < 10  # queued requests were cancelled


def test_api_key_header_from_env(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUMIR_TEST_KEY", "s3cret")
    model = _model(server, api_key_env="LUMIR_TEST_KEY")
    model.generate([user_message("hi")])
    assert server.requests[-1][0]["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in json.dumps(model.spec())
    monkeypatch.delenv("LUMIR_TEST_KEY")
    model.generate([user_message("hi")])
    assert "Authorization" not in server.requests[-1][0]


def test_token_logprobs_matching_and_floor(server: FakeServer) -> None:
    model = _model(server, top_logprobs=4)
    lp = model.token_logprobs([user_message("q1"), user_message("q2")], ["Yes", "No", "Absent"])
    assert lp.shape == (2, 3) and str(lp.dtype) == "torch.float32"
    expected = [-0.1, -2.0, -3.0 - math.log(2)]  # max over " Yes"/"Yes"; "▁No" matches; floor for the absent one
    assert lp[0].tolist() == pytest.approx(expected, abs=1e-6) and lp[1].tolist() == pytest.approx(expected, abs=1e-6)
    assert model.stats.extra["logprob_floor"] == 2
    sent = server.chat_requests()[0]
    assert sent["max_tokens"] == 1 and sent["temperature"] == 0 and sent["logprobs"] is True
    assert sent["top_logprobs"] == 4
    assert lp.softmax(-1).isfinite().all()


def test_token_logprobs_legacy_format_and_bad_candidates(server: FakeServer) -> None:
    server.legacy = True
    model = _model(server)
    lp = model.token_logprobs([user_message("q")], ["No", "Maybe"])
    assert lp.tolist() == [pytest.approx([-2.0, -3.0])]
    with pytest.raises(ValueError, match="distinct"):
        model.token_logprobs([user_message("q")], ["Yes", " Yes"])


def test_images_as_data_urls_or_modality_error(server: FakeServer) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 10, 10)).save(buf, format="JPEG")
    conv = user_message("what colour?", image_part(buf.getvalue()))
    with pytest.raises(ModalityError):
        _model(server).generate([conv])
    assert not server.requests  # refused before any request
    _model(server, supports_images=True).generate([conv])
    parts = server.chat_requests()[0]["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "what colour?"}
    url = parts[1]["image_url"]["url"]
    assert parts[1]["type"] == "image_url" and url.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (4, 3)


def test_spec_roundtrip_render_and_fingerprint(server: FakeServer) -> None:
    model = _model(server, concurrency=2, top_logprobs=5)
    again = load_chat_model(json.loads(json.dumps(model.spec())))
    assert isinstance(again, OpenAIChatModel) and again.spec() == model.spec()
    assert model.spec()["type"] == "openai"
    assert model.fingerprint == f"{server.url}/v1#fake@fake-model-7b"
    assert model.render(user_message("a")) == model.render([{"role": "user", "content": "a"}])
    assert model.render(user_message("a")) != model.render(user_message("b"))
    via_string = load_chat_model(f"openai:{server.url}#fake", timeout=3)
    assert via_string.endpoint == model.endpoint and via_string.model == "fake"
