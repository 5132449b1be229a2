"""OpenAIChatModel against the REAL llama-cpp-python OpenAI server serving SmolLM2, and the in-process backend."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

pytest.importorskip("llama_cpp")
pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server] (fastapi, uvicorn)")
pytest.importorskip("httpx")

import httpx

from lumir.models.chat.base import ChatEndpointError, PromptTooLongError, user_message
from lumir.models.chat.llamacpp import LlamaCppChatModel
from lumir.models.chat.openai import OpenAIChatModel
from lumir.models.chat.registry import gguf_path

STARTUP_TIMEOUT = 60.0


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(model: Path, port: int, n_ctx: int) -> list[str]:
    """The command line that serves a GGUF over the OpenAI API (logits_all is needed for logprobs)."""
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", "1",
        "--n_threads_batch", "1",
        "--logits_all", "true",
        "--verbose", "false",
    ]  # fmt: skip


def start_server(log: Path, *, n_ctx: int = 2048) -> Server:
    port = _free_port()
    out = log.open("wb")
    cmd = server_command(gguf_path("smollm2"), port, n_ctx)
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{server.url}/v1/models", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    server.stop()
    tail = log.read_text(errors="replace")[-3000:]
    pytest.fail(
        f"llama_cpp.server did not answer {server.url}/v1/models within {STARTUP_TIMEOUT:.0f} s "
        f"(exit code {proc.returncode}); command: {' '.join(cmd)}\n--- server output (tail) ---\n{tail}"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("llama-server") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def local() -> Iterator[LlamaCppChatModel]:
    m = LlamaCppChatModel(gguf_path("smollm2"), n_ctx=2048, n_threads=1)
    yield m
    m.close()


CONVS = [
    user_message("Is Paris the capital of France? Answer Yes or No."),
    user_message("Do cats have four legs? Answer Yes or No."),
    [{"role": "system", "content": "You answer with Yes or No."}, {"role": "user", "content": "Is ice cold?"}],
]


def test_generate_returns_text(server: Server, local: LlamaCppChatModel) -> None:
    model = OpenAIChatModel(server.url, "smollm2", timeout=60)
    out = model.generate(CONVS[:2], max_new_tokens=8)
    assert len(out) == 2 and all(isinstance(t, str) and t.strip() for t in out)
    assert model.generate(CONVS[:1], max_new_tokens=1) == local.generate(CONVS[:1], max_new_tokens=1)
    assert model.stats.calls == 3 and model.stats.prompt_tokens > 0
    assert model.fingerprint.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")  # the server-reported model id


def test_token_logprobs_agree_with_in_process_model(server: Server, local: LlamaCppChatModel) -> None:
    model = OpenAIChatModel(server.url, "smollm2", timeout=60, concurrency=2)
    remote = model.token_logprobs(CONVS, ["Yes", "No"])
    here = local.token_logprobs(CONVS, ["Yes", "No"])
    assert model.stats.extra.get("logprob_floor", 0) == 0  # both candidates were in the top 20
    assert torch.equal(remote.argmax(-1), here.argmax(-1))
    assert torch.allclose(remote, here, atol=1e-3), (remote - here).abs().max()  # measured: identical
    # a candidate outside the top 20 gets the floor: below every returned alternative, finite
    q = [user_message("What is the capital of France?")]
    remote = model.token_logprobs(q, ["Paris", "Berlin"])[0]
    here = local.token_logprobs(q, ["Paris", "Berlin"])[0]
    assert model.stats.extra["logprob_floor"] == 1
    assert abs(float(remote[0] - here[0])) < 1e-3 and remote[1].isfinite() and remote[1] < remote[0]


def test_too_long_prompt_is_prompt_too_long(server: Server) -> None:
    model = OpenAIChatModel(server.url, "smollm2", timeout=60, max_retries=3)
    with pytest.raises(PromptTooLongError, match="maximum context length is 2048"):
        model.generate([user_message("word " * 2500)], max_new_tokens=1)
    assert model.stats.extra.get("retries", 0) == 0


def test_server_killed_mid_run_raises_endpoint_error(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "server.log", n_ctx=512)
    model = OpenAIChatModel(srv.url, "smollm2", timeout=10, max_retries=2, backoff=0.1, max_backoff=0.4, concurrency=2)
    convs = [user_message(f"Is {i} an even number? Answer Yes or No.") for i in range(300)]

    def kill_after_three() -> None:
        deadline = time.monotonic() + 60
        while model.stats.calls < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        srv.proc.kill()

    killer = threading.Thread(target=kill_after_three, daemon=True)
    killer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ChatEndpointError) as info:
            model.token_logprobs(convs, ["Yes", "No"])
        elapsed = time.monotonic() - t0
    finally:
        killer.join(timeout=70)
        srv.stop()
    assert 3 <= model.stats.calls < len(convs)  # some answers came back before the server died
    assert info.value.endpoint == f"{srv.url}/v1/chat/completions" and srv.url in str(info.value)
    assert "3 attempt" in str(info.value) and "connection failed" in str(info.value)
    assert elapsed < 30, elapsed  # bounded: 3 attempts with <= 0.4 s backoff once the server is gone
