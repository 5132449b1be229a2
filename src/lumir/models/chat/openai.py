"""A ChatModel over any OpenAI-compatible ``/chat/completions`` server (vLLM, Ollama, llama.cpp server, APIs).

``base_url`` may be given with or without the ``/v1`` suffix: a URL with no path (``http://host:8000``) gets
``/v1`` appended; a URL with a path (``http://host:8000/v1``, ``https://gateway/openai``) is used as given. Requests
go to ``{endpoint}/chat/completions`` with ``Authorization: Bearer $OPENAI_API_KEY`` (the variable named by
``api_key_env``) when that variable is set; the key itself is never stored in :meth:`OpenAIChatModel.spec`.

Failure handling: each request is retried ``max_retries`` times on connection errors, timeouts, HTTP 408/429 and
5xx, with exponential backoff and jitter (``backoff * 2**attempt``, capped at ``max_backoff``, times a random
factor in [0.5, 1]); a ``Retry-After`` header (seconds or an HTTP date) is honoured, up to 60 s. Other 4xx answers
are not retried. A 400 whose message mentions the context length raises :class:`PromptTooLongError`. When the
retries are exhausted a :class:`ChatEndpointError` names the endpoint URL, the number of attempts and the last
error. Conversations of one call run on ``concurrency`` threads; results keep the input order, and the first
failure cancels the requests not yet sent.

``token_logprobs`` asks for one token at temperature 0 with ``top_logprobs=N``. A candidate's log-probability is the
largest logprob among the returned top entries whose token text, stripped of leading whitespace and of the
sentencepiece/BPE word markers ``▁``/``Ġ``, equals the candidate (stripped alike). A candidate absent from the
top N gets a *floor*: the smallest returned top logprob minus ``log 2`` (below everything the server returned, yet
finite so a softmax over candidates is defined); ``stats.extra["logprob_floor"]`` counts how often that happened.

``stats.calls`` counts answered requests; ``stats.extra`` also holds ``retries``, ``backoff_ms`` (total wait) and
``failed_requests``.
"""

from __future__ import annotations

import base64
import email.utils
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

import torch

from lumir._deps import require
from lumir.models.chat.base import (
    CallStats,
    ChatEndpointError,
    ChatModelError,
    GenerationConfig,
    PromptTooLongError,
    conversation_images,
    conversation_key,
    conversation_text,
    encode_image_png,
    normalize_conversation,
)
from lumir.protocols import Conversation

__all__ = ["OpenAIChatModel", "normalize_endpoint"]

_CONTEXT_RE = re.compile(
    r"context[ _]length|context[ _]window|maximum context|n_ctx|too many tokens|prompt is too long|too long for",
    re.IGNORECASE,
)
_MARKERS = " \t\n\r\u2581\u0120"  # whitespace, sentencepiece "▁", byte-level BPE "Ġ"
_MAX_RETRY_AFTER = 60.0


def normalize_endpoint(base_url: str) -> str:
    """The API root requests are sent under: ``/v1`` is appended to a URL that has no path.

    Example:
        >>> normalize_endpoint("http://127.0.0.1:8000"), normalize_endpoint("http://127.0.0.1:8000/v1/")
        ('http://127.0.0.1:8000/v1', 'http://127.0.0.1:8000/v1')
    """
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
    return url if parts.path else url + "/v1"


def _token_text(token: str) -> str:
    return token.lstrip(_MARKERS)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_text(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return str(resp.text[:500])
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        return str(err.get("message") or err.get("detail") or err)[:500]
    return str(err)[:500]


class _AbortedError(Exception):
    """Another request of the same call failed; this one stops retrying."""


class OpenAIChatModel:
    """A ChatModel served over HTTP by an OpenAI-compatible server.

    Args:
        base_url: the server, e.g. ``http://127.0.0.1:8000`` or ``http://127.0.0.1:8000/v1`` (see the module doc).
        model: the ``model`` field of each request.
        api_key_env: environment variable holding the API key (sent as a Bearer token when set).
        timeout: seconds per request (connect, read, write).
        max_retries: retries per request after the first attempt.
        backoff: base delay (s) of the exponential backoff.
        max_backoff: largest computed delay (s) between attempts.
        concurrency: requests in flight at once.
        top_logprobs: alternatives requested per position by :meth:`token_logprobs` (OpenAI allows up to 20).
        supports_images: send images as data-URL ``image_url`` parts (a vision-language model); else images raise
            :class:`~lumir.errors.ModalityError`.
        name: a display name (defaults to ``model``).
    """

    backend = "openai"

    def __init__(
        self,
        base_url: str,
        model: str = "default",
        *,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        concurrency: int = 4,
        top_logprobs: int = 20,
        supports_images: bool = False,
        name: str | None = None,
    ) -> None:
        self._httpx = require("httpx", extra="llm")
        if max_retries < 0 or concurrency < 1 or top_logprobs < 1 or timeout <= 0:
            raise ValueError("need max_retries >= 0, concurrency >= 1, top_logprobs >= 1 and timeout > 0")
        self.base_url = base_url
        self.endpoint = normalize_endpoint(base_url)
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.concurrency = int(concurrency)
        self.top_logprobs = int(top_logprobs)
        self.supports_images = bool(supports_images)
        self.name = name or model
        self.stats = CallStats()
        self.context_length: int | None = None
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._fingerprint: str | None = None
        limits = self._httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._client = self._httpx.Client(timeout=self._httpx.Timeout(self.timeout), limits=limits)

    # ------------------------------------------------------------------ identity

    def spec(self) -> dict[str, Any]:
        """A JSON dict from which :func:`~lumir.models.chat.registry.load_chat_model` rebuilds this model."""
        return {
            "type": "openai",
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "backoff": self.backoff,
            "max_backoff": self.max_backoff,
            "concurrency": self.concurrency,
            "top_logprobs": self.top_logprobs,
            "supports_images": self.supports_images,
            "name": self.name,
        }

    def count_tokens(self, text: str) -> int:
        """An estimate, ``ceil(1.3 x words)``: an OpenAI-compatible server exposes no tokenizer to count with."""
        return math.ceil(1.3 * len(text.split()))

    @property
    def fingerprint(self) -> str:
        """``{endpoint}#{model}``, plus ``@{id}`` of the server-reported model when ``GET /models`` answers.

        Asked once (one attempt, at most 10 s) and remembered; an unreachable server leaves the plain form.
        """
        if self._fingerprint is None:
            base = f"{self.endpoint}#{self.model}"
            served = self._served_model()
            self._fingerprint = f"{base}@{served}" if served else base
        return self._fingerprint

    def _served_model(self) -> str | None:
        try:
            resp = self._client.get(f"{self.endpoint}/models", headers=self._headers(), timeout=min(self.timeout, 10))
            data = resp.json().get("data") if resp.status_code == 200 else None
        except (self._httpx.HTTPError, ValueError, AttributeError):
            return None
        ids = [str(d["id"]) for d in data or [] if isinstance(d, dict) and "id" in d]
        if not ids:
            return None
        return self.model if self.model in ids else ids[0]

    def __repr__(self) -> str:
        return f"OpenAIChatModel({self.endpoint!r}, model={self.model!r})"

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAIChatModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests

    def render(self, conversation: Conversation) -> str:
        """Canonical JSON of the request messages (images by pixel digest), as cache keys use.

        Raises:
            ModalityError: the conversation has an image and this model reads text only.
        """
        self._check_modality(conversation)
        return conversation_key(conversation)

    def _check_modality(self, conversation: Conversation) -> None:
        if not self.supports_images:
            conversation_text(conversation, image_token=None)  # raises ModalityError on an image part

    def messages(self, conversation: Conversation) -> list[dict[str, Any]]:
        """The ``messages`` field sent for a conversation (string content unless it holds images)."""
        if not conversation_images(conversation):
            return conversation_text(conversation)
        self._check_modality(conversation)
        out: list[dict[str, Any]] = []
        for m in normalize_conversation(conversation):
            parts: list[dict[str, Any]] = []
            for p in m["content"]:
                if p["type"] == "text":
                    parts.append({"type": "text", "text": p["text"]})
                else:
                    data = base64.b64encode(encode_image_png(p["image"])).decode("ascii")
                    parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
            out.append({"role": m["role"], "content": parts})
        return out

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _delay(self, attempt: int) -> float:
        return min(self.max_backoff, self.backoff * 2.0**attempt) * self._rng.uniform(0.5, 1.0)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats.extra[key] = self.stats.extra.get(key, 0) + n

    def _post(self, payload: dict[str, Any], abort: threading.Event | None = None) -> dict[str, Any]:
        """POST to ``/chat/completions`` with retries; the decoded JSON answer."""
        httpx = self._httpx
        url = f"{self.endpoint}/chat/completions"
        attempts = self.max_retries + 1
        last = "no attempt made"
        for attempt in range(attempts):
            if abort is not None and abort.is_set():
                raise _AbortedError
            wait_s: float | None = None
            try:
                resp = self._client.post(url, json=payload, headers=self._headers())
            except httpx.TimeoutException as err:
                last = f"timed out after {self.timeout:g} s ({type(err).__name__})"
            except httpx.TransportError as err:
                last = f"connection failed ({type(err).__name__}: {err})"
            else:
                code = resp.status_code
                if code == 200:
                    try:
                        body = resp.json()
                    except ValueError as err:
                        raise ChatEndpointError(
                            f"answered HTTP 200 with invalid JSON: {resp.text[:200]!r}", endpoint=url
                        ) from err
                    self._account(body)
                    return body if isinstance(body, dict) else {}
                text = _error_text(resp)
                if code == 400 and _CONTEXT_RE.search(text):
                    raise PromptTooLongError(f"{url}: the prompt does not fit {self.model}'s context: {text}")
                if code not in (408, 429) and code < 500:
                    raise ChatEndpointError(f"HTTP {code} (not retried): {text}", endpoint=url)
                last = f"HTTP {code}: {text}"
                wait_s = _retry_after(resp.headers.get("retry-after"))
            if attempt + 1 < attempts:
                delay = self._delay(attempt)
                if wait_s is not None:
                    delay = max(delay, min(wait_s, _MAX_RETRY_AFTER))
                self._count("retries")
                self._count("backoff_ms", round(delay * 1000))
                if abort is None:
                    time.sleep(delay)
                elif abort.wait(delay):  # another request of this call failed: stop now
                    raise _AbortedError
        self._count("failed_requests")
        raise ChatEndpointError(f"failed after {attempts} attempt(s); last error: {last}", endpoint=url)

    def _account(self, body: Any) -> None:
        usage = body.get("usage") if isinstance(body, dict) else None
        with self._lock:
            self.stats.calls += 1
            self.stats.conversations += 1
            if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
                self.stats.prompt_tokens += usage["prompt_tokens"]

    def _map(self, fn: Callable[[Any, threading.Event], Any], requests: Sequence[Any]) -> list[Any]:
        """Run ``fn`` over requests on ``concurrency`` threads, in input order; the first failure wins."""
        if not requests:
            return []
        abort = threading.Event()
        if self.concurrency == 1 or len(requests) == 1:
            return [fn(c, abort) for c in requests]
        workers = min(self.concurrency, len(requests))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lumir-http")
        try:
            futures: list[Future[Any]] = [pool.submit(fn, c, abort) for c in requests]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in futures if f in done and not f.cancelled()]
            first = next((e for e in errors if e is not None and not isinstance(e, _AbortedError)), None)
            if first is not None:
                abort.set()  # requests in flight stop at their next retry; queued ones never start
                raise first
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=not abort.is_set(), cancel_futures=True)

    # ------------------------------------------------------------------ ChatModel

    def generate(self, conversations: Sequence[Conversation], **gen: Any) -> list[str]:
        """The assistant's reply to each conversation (see :class:`GenerationConfig` for ``gen``)."""
        cfg = GenerationConfig.from_kwargs(gen)
        requests = [self.messages(c) for c in conversations]  # modality errors before any request

        def one(messages: list[dict[str, Any]], abort: threading.Event) -> str:
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "max_tokens": cfg.max_new_tokens,
                "temperature": cfg.temperature,
                "top_p": cfg.top_p,
                "seed": cfg.seed,
            }
            if cfg.stop:
                payload["stop"] = list(cfg.stop)
            body = self._post(payload, abort)
            try:
                content = body["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError) as err:
                raise ChatModelError(f"{self.endpoint}: unexpected chat completion answer: {str(body)[:300]}") from err
            text = str(content or "")
            for s in cfg.stop:  # some servers include the stop string
                if s and s in text:
                    text = text[: text.index(s)]
            return text

        return self._map(one, requests)

    def token_logprobs(self, conversations: Sequence[Conversation], tokens: Sequence[str]) -> torch.Tensor:
        """(n, len(tokens)) float32 log-probabilities of each candidate as the first assistant token.

        Candidates missing from the server's top ``top_logprobs`` get the floor described in the module doc.
        """
        wanted = [_token_text(t) for t in tokens]
        if any(not w for w in wanted) or len(set(wanted)) != len(wanted):
            raise ValueError(f"candidate tokens must be distinct and non-blank, got {list(tokens)!r}")
        requests = [self.messages(c) for c in conversations]

        def one(messages: list[dict[str, Any]], abort: threading.Event) -> list[float]:
            payload = {
                "model": self.model,
                "messages": messages,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
            top = self._top_logprobs(self._post(payload, abort))
            return self._score(top, wanted)

        rows = self._map(one, requests)
        return torch.tensor(rows, dtype=torch.float32).reshape(len(requests), len(wanted))

    def _top_logprobs(self, body: dict[str, Any]) -> list[tuple[str, float]]:
        """(token text, logprob) alternatives at the first generated position, in either OpenAI format."""
        try:
            lp = body["choices"][0].get("logprobs") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            lp = {}
        out: list[tuple[str, float]] = []
        if isinstance(lp.get("content"), list) and lp["content"]:  # chat format
            first = lp["content"][0]
            for e in first.get("top_logprobs") or []:
                out.append((str(e["token"]), float(e["logprob"])))
            if not out and "token" in first:
                out.append((str(first["token"]), float(first["logprob"])))
        elif isinstance(lp.get("top_logprobs"), list) and lp["top_logprobs"]:  # legacy completions format
            out = [(str(t), float(v)) for t, v in (lp["top_logprobs"][0] or {}).items()]
        out = [(t, v) for t, v in out if math.isfinite(v)]
        if not out:
            raise ChatModelError(
                f"{self.endpoint}: the answer holds no top logprobs (does this server support logprobs=true and "
                f"top_logprobs? llama.cpp's server needs logits_all); got: {str(body)[:300]}"
            )
        return out

    def _score(self, top: list[tuple[str, float]], wanted: list[str]) -> list[float]:
        best: dict[str, float] = {}
        for tok, lp in top:
            key = _token_text(tok)
            if key and lp > best.get(key, -math.inf):
                best[key] = lp
        floor = min(lp for _, lp in top) - math.log(2.0)
        row = [best.get(w, floor) for w in wanted]
        missing = sum(w not in best for w in wanted)
        if missing:
            self._count("logprob_floor", missing)
        return row
