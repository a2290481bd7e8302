"""Facts about the endpoint the LLM client talks to: is it a local (loopback) server, is a
400 a context overflow, does it answer at all (the preflight), what Retry-After says, what a
refusal means, and whether a failed request only hit a connection the server had closed.

Local servers (llama.cpp, Ollama, a vLLM on the same machine) usually generate one reply
at a time, so the default concurrency there is 1; a remote API gets 2.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import socket
import urllib.error
import urllib.request
import logging
import re
import time
from typing import Any
from urllib.parse import urlparse

from evolve.config import ModelConfig
from evolve.text import name_some

log = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_S = 5.0
OVERFLOW_PHRASES = (
    "context_length_exceeded",
    "maximum context length",
    "context length",
    "context window",
    "exceeds the context",
    "too many tokens",
    "prompt is too long",
    "exceed_context_size",
)


def is_loopback(url: str | None) -> bool:
    """True for http://localhost..., 127.x.x.x, [::1] (a server on this machine)."""
    if not url:
        return False
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def effective_concurrency(config: ModelConfig) -> int:
    """config.concurrency when positive; 0 (the default) means 1 on a loopback server, else 2."""
    if int(config.concurrency) > 0:
        return int(config.concurrency)
    return 1 if is_loopback(config.resolved_base_url()) else 2


def is_context_overflow(exc: Any) -> bool:
    """A 400 that says the prompt does not fit: OpenAI/llama-cpp-python's code
    context_length_exceeded, or the wording of llama-server, vLLM and Ollama."""
    body = getattr(exc, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else body
    parts = [str(getattr(exc, "message", "") or "")]
    if isinstance(inner, dict):
        parts += [str(inner.get("code") or ""), str(inner.get("type") or ""), str(inner.get("message") or "")]
    elif inner:
        parts.append(str(inner))
    text = " ".join(parts).lower()
    return any(phrase in text for phrase in OVERFLOW_PHRASES)


CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window", "n_ctx", "max_context_length")
CONTEXT_IN_MESSAGE = re.compile(r"(?:maximum context length|context (?:length|size|window))\D{0,20}?(\d{2,7})", re.IGNORECASE)


def context_size_in(message: str) -> int | None:
    """The context size a server names in its overflow message ("maximum context length is
    2048 tokens", llama.cpp's and vLLM's wording), else None."""
    found = CONTEXT_IN_MESSAGE.search(message or "")
    return int(found.group(1)) if found else None


def served_context_size(item: dict) -> int | None:
    """A model's context in tokens from its /models entry: vLLM's max_model_len, llama-server's
    meta.n_ctx..., else None (OpenAI, Ollama and llama-cpp-python do not say)."""
    for source in (item, item.get("meta") if isinstance(item.get("meta"), dict) else {}):
        for name in CONTEXT_FIELDS:
            value = source.get(name)
            if isinstance(value, int) and value > 0:
                return value
    return None


def check_endpoint(client: Any, timeout_s: float = PREFLIGHT_TIMEOUT_S) -> None:
    """GET {base_url}/models: raise LLMUnavailable (cannot connect) or LLMAuthError (401/403,
    or a remote endpoint without the model) with one line naming the URL.

    A timeout is only logged: llama.cpp's /models waits behind running generations, so a
    busy local server is slow here but still works.
    """
    from evolve.propose.errors import LLMAuthError, LLMUnavailable

    url = f"{client.base_url}/models"
    headers = {"Authorization": f"Bearer {client._api_key}"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise LLMAuthError(client._redact(f"the endpoint {url} refused the API key ({exc.code}): check OPENAI_API_KEY or [model] api_key")) from None
        log.warning("%s answered HTTP %d; starting anyway", url, exc.code)
        return
    except (TimeoutError, socket.timeout):
        log.warning("%s did not answer within %.0fs (a busy local server?); starting anyway", url, timeout_s)
        return
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, (TimeoutError, socket.timeout)):
            log.warning("%s did not answer within %.0fs (a busy local server?); starting anyway", url, timeout_s)
            return
        raise LLMUnavailable(client._redact(f"cannot reach the model endpoint {url}: {reason}")) from None
    try:
        items = [item for item in json.loads(body).get("data") or [] if isinstance(item, dict)]
    except (ValueError, AttributeError, TypeError):
        return
    served = {str(item.get("id")) for item in items}
    sizes = [served_context_size(item) for item in items if str(item.get("id")) in client._names or len(items) == 1]
    known = [size for size in sizes if size]
    if known:
        client.context_size = min(known)
    missing = [name for name in client._names if served and name not in served]
    if not missing:
        return
    listed = name_some(sorted(served), 5)
    if is_loopback(client.base_url):  # llama.cpp answers to any model name; Ollama would 404 later
        log.warning("%s lists %s, not %s; a local server may still answer", url, listed, ", ".join(missing))
        return
    raise LLMAuthError(client._redact(f"the endpoint {url} has no model {', '.join(missing)} (it lists {listed})", limit=400))


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asks us to wait: retry-after-ms, or Retry-After in seconds or as a date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_stale_connection(exc: BaseException) -> bool:
    """httpx's error for a request sent on a pooled connection the server closed before
    answering (RemoteProtocolError "Server disconnected without sending a response")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return type(exc).__name__ == "RemoteProtocolError" and "without sending a response" in str(exc)


def _root_cause(exc: BaseException) -> str:
    """The innermost cause, e.g. 'ConnectError: [Errno 111] Connection refused'."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def server_message(exc: Any) -> str:
    """What a refusing server said (its error message), else the HTTP status."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if message:
            return str(message)
    return exc.message or f"HTTP {exc.status_code}"


def refusal_message(status: int, url: str, model: str, detail: str) -> str:
    """One line saying what a 4xx refusal means for the user."""
    if status == 401:
        return f"the endpoint {url} refused the API key (401): check OPENAI_API_KEY or [model] api_key"
    if status == 403:
        return f"the endpoint {url} denied access (403): check the API key's permissions for model {model!r}"
    if status == 404:
        return f"the endpoint {url} has no model {model!r} or no chat completions route (404): {detail}"
    return f"the endpoint {url} rejected the request for model {model!r} ({status}): {detail}"
