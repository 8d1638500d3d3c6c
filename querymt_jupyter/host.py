"""What the host does for a plugin: HTTP, the allow-list, streams, logs (wire spec sections 5.4, 8-10).

``PluginHost`` is one plugin instance's view of the outside world. It implements the six
``extism:host/user`` functions (``loaders.base.HostCalls``) for both Wasm and native plugins, and
``send`` for the requests that generation-A exports build. Every request, whichever side builds it,
passes ``AllowList.check`` first: this is the sandbox's single gate. (QueryMT's Rust host does not
check generation-A requests, only ``base_url``; we check both — wire spec checklist item 19.)
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import wire
from .errors import HostBlockedError, TransportError
from .loaders.base import HostRefusal

_LOG_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG}
_VISIBLE_ASCII = re.compile(r"^[\t\x20-\x7e]*$")


# ---- the allow-list (section 9) ------------------------------------------------------------------


@dataclass(frozen=True)
class AllowList:
    """Hosts a plugin may reach; empty means unrestricted. Matching is exact, ports ignored."""

    hosts: tuple[str, ...] = ()

    @classmethod
    def compute(cls, config: Mapping[str, Any], plugin_base_url: str | None) -> AllowList:
        """``allowed_hosts`` from the config, then the config's base_url host, else the plugin's."""
        hosts = [h for h in config.get("allowed_hosts") or () if h]
        base_url = config.get("base_url")
        if not isinstance(base_url, str):
            base_url = plugin_base_url
        host = _host_of(base_url) if base_url else None
        if host:
            hosts.append(host)
        return cls(tuple(dict.fromkeys(hosts)))

    def permits(self, url: str) -> bool:
        host = _host_of(url)
        return not self.hosts or host is None or host in self.hosts

    def check(self, url: str, plugin: str) -> None:
        if not self.permits(url):
            raise HostBlockedError(plugin, _host_of(url) or url, list(self.hosts))


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


# ---- status classification (section 5.4) --------------------------------------------------------


def classify_http_status(response: wire.HttpResponse) -> dict[str, Any]:
    """The generic classifier: a non-2xx response as an LLMErrorPayload."""
    status, message, retry = response.status, _error_message(response), _retry_after(response)
    if status == 499:
        return {"type": "cancelled"}
    if status in (401, 403):
        return {"type": "auth_error", "message": message}
    if status == 429:
        return {"type": "rate_limited", "message": message, "retry_after_secs": retry}
    if status == 400:
        return {"type": "invalid_request", "message": message}
    if 500 <= status <= 599:
        return {"type": "http_status", "status_code": status, "message": message, "retry_after_secs": retry}
    return {"type": "provider_error", "message": message}


def classify_chat_status(response: wire.HttpResponse) -> dict[str, Any]:
    """The default chat classifier, for generation-A plugins without ``classify_chat_error``."""
    status = response.status
    if status == 499:
        return {"type": "cancelled"}
    if status == 429:
        kind = "rate_limited"
    elif status in (401, 403):
        kind = "authentication"
    elif status in (400, 422):
        kind = "invalid_request"
    elif status in (408, 425) or 500 <= status <= 599:
        kind = "unknown_transient"
    else:
        kind = "unknown_permanent"
    payload: dict[str, Any] = {"type": "provider_error", "message": _error_message(response), "kind": kind}
    retry = _retry_after(response)
    if retry is not None:
        payload["retry_after_secs"] = retry
    return payload


def _error_body(response: wire.HttpResponse) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        return None


def _error_message(response: wire.HttpResponse) -> str:
    body = _error_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    text = response.body.decode("utf-8", "replace").strip()
    return text or f"HTTP {response.status}"


def _retry_after(response: wire.HttpResponse) -> int | None:
    seconds = _seconds_header(response.header("retry-after"))
    if seconds is None and (ms := response.header("retry-after-ms")) is not None:
        seconds = _number(ms, 1 / 1000)
    if seconds is None and (reset := response.header("x-ratelimit-reset-requests")) is not None:
        seconds = _duration(reset)
    if seconds is None:
        seconds = _body_retry_after(_error_body(response))
    return None if seconds is None else max(1, math.ceil(seconds))


def _seconds_header(value: str | None) -> float | None:
    if value is None:
        return None
    number = _number(value, 1)
    if number is not None:
        return number
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(text: str, scale: float) -> float | None:
    try:
        return float(text) * scale
    except ValueError:
        return None


def _duration(text: str) -> float | None:
    """Durations like ``1m30s``, ``250ms`` or ``6s``."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def _body_retry_after(body: Any) -> float | None:
    if not isinstance(body, dict):
        return None
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    for source in (error, body):
        for key in ("retry_after", "retry_after_secs"):
            if isinstance(source.get(key), (int, float)):
                return float(source[key])
    return None


def stream_lines(response: httpx.Response, plugin: str) -> Iterator[bytes]:
    """The LF-terminated lines of a streamed body as they arrive, blank ones included; a final LF flushes
    the rest (wire spec 6.1). A connection lost mid-stream ends it with a TransportError naming the URL."""
    return iter_lines(_body_pieces(response, plugin))


def iter_lines(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """LF-terminated lines of a byte stream, blank ones included; a final LF flushes the rest (6.1)."""
    buffer = b""
    for piece in pieces:
        buffer += piece
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            yield buffer[start : end + 1]
            start = end + 1
        buffer = buffer[start:]
    yield buffer + b"\n"


def _body_pieces(response: httpx.Response, plugin: str) -> Iterator[bytes]:
    try:
        yield from response.iter_raw()
    except httpx.HTTPError as exc:
        raise TransportError(transport_payload(exc, str(response.url)), plugin=plugin) from exc


def transport_payload(exc: Exception, url: str) -> dict[str, Any]:
    """An httpx failure as a ``transport`` LLMErrorPayload whose message names the URL."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        kind = "timeout"
    elif isinstance(exc, httpx.ConnectError):
        kind = "dns" if "name" in text.lower() and "resolution" in text.lower() else "connection_refused"
    elif isinstance(exc, httpx.RemoteProtocolError):
        kind = "connection_closed"
    else:
        kind = "other"
    return {"type": "transport", "kind": kind, "message": f"cannot reach {url}: {text}"}


# ---- one plugin's host state ---------------------------------------------------------------------


def new_http_client() -> httpx.Client:
    """One client per registry: pooled connections, no content decoding asked for (as QueryMT)."""
    client = httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0), follow_redirects=True)
    client.headers = httpx.Headers({"user-agent": "querymt-jupyter"})
    return client


class CallState(threading.local):
    """One thread's current call into a plugin: where ``qmt_yield_chunk`` goes, what the host refused.

    Per thread because a plugin runs host functions on the thread that called it, and a thread-safe
    native plugin runs calls of one instance on several threads at once.
    """

    def __init__(self) -> None:
        self.consumer: Callable[[bytes], None] | None = None
        self.errors: list[Exception] = []


@dataclass
class PluginHost:
    """Host functions and generation-A HTTP for one plugin instance."""

    plugin: str
    allow: AllowList
    client: httpx.Client
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("querymt_jupyter.plugin"))
    cancelled: bool = False
    logs: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=200))
    _streams: dict[int, tuple[httpx.Response, Iterator[bytes]]] = field(default_factory=dict)
    _next_stream: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)
    call: CallState = field(default_factory=lambda: CallState(), repr=False)

    def sibling(self) -> PluginHost:
        """The host of another instance of the same plugin (an instance pool's): the same allow-list,
        HTTP client, logger and log buffer; its own streams, cancel flag and per-thread call state."""
        return PluginHost(self.plugin, self.allow, self.client, self.logger, logs=self.logs)

    # -- call bracketing

    def begin_call(self, *, clear_cancel: bool, consumer: Callable[[bytes], None] | None = None) -> CallState:
        """Start a call on this thread; returns its state (the caller resets ``consumer`` after)."""
        state = self.call
        if state.errors:
            state.errors.clear()
        state.consumer = consumer
        if clear_cancel:
            self.cancelled = False
        return state

    def record_error(self, error: Exception) -> None:
        """Remember a host-side error of the current call, to be raised once the call returns."""
        self.call.errors.append(error)

    def take_error(self) -> Exception | None:
        """The first host-side error of this thread's last call (e.g. a blocked host), if any."""
        errors = self.call.errors
        return errors[0] if errors else None

    # -- generation A: requests the plugin built, sent by the host

    def send(self, request: bytes, timeout: float | None = None) -> httpx.Response:
        """Send a ``SerializableHttpRequest``; returns the open response, its body unread.

        ``timeout`` (seconds) is the provider's ``timeout_seconds``; without it the client's default
        applies. Raises HostBlockedError before any I/O, or TransportError naming the URL.
        """
        req = wire.HttpRequest.from_wire(request)
        self.allow.check(req.uri, self.plugin)
        try:
            return self.client.send(self._build(req, timeout), stream=True)
        except httpx.HTTPError as exc:
            raise TransportError(transport_payload(exc, req.uri), plugin=self.plugin) from exc

    def _build(self, req: wire.HttpRequest, timeout: float | None = None) -> httpx.Request:
        headers = [(k, v) for k, v in req.headers if _VISIBLE_ASCII.match(v)]
        extra = {} if timeout is None else {"timeout": timeout}
        return self.client.build_request(req.method, req.uri, headers=headers, content=req.body or None, **extra)

    # -- the six host functions (section 8)

    def http_request(self, request: bytes) -> bytes:
        req = wire.HttpRequest.from_wire(request)
        if not self.allow.permits(req.uri):
            blocked = HostBlockedError(self.plugin, _host_of(req.uri) or req.uri, list(self.allow.hosts))
            self.record_error(blocked)
            body = f"Host '{blocked.host}' not in allowlist".encode()
            return wire.HttpResponse(403, [], body).to_wire()
        if self.cancelled:
            return wire.HttpResponse(499, [], b"cancelled").to_wire()
        try:
            return read_response(self.client.send(self._build(req), stream=True)).to_wire()
        except httpx.HTTPError as exc:
            return wire.HttpResponse(500, [], str(exc).encode()).to_wire()

    def http_stream_open(self, request: bytes) -> bytes:
        req = wire.HttpRequest.from_wire(request)
        if not self.allow.permits(req.uri):
            blocked = HostBlockedError(self.plugin, _host_of(req.uri) or req.uri, list(self.allow.hosts))
            self.record_error(blocked)
            raise HostRefusal(f"Host '{blocked.host}' not in allowlist")
        if self.cancelled:
            return b'{"status":"cancelled"}'
        try:
            response = self.client.send(self._build(req), stream=True)
        except httpx.HTTPError as exc:
            return _stream_error(transport_payload(exc, req.uri))
        if not 200 <= response.status_code <= 299:
            return _stream_error(classify_http_status(read_response(response)))
        with self._lock:
            stream_id, self._next_stream = self._next_stream, self._next_stream + 1
            self._streams[stream_id] = (response, response.iter_raw())
        return wire.dumps({"status": "ok", "stream_id": stream_id})

    def http_stream_next(self, stream_id: int) -> bytes:
        if stream_id == 0:
            return b""
        entry = self._streams.get(stream_id)
        if entry is None:
            raise HostRefusal(f"Stream {stream_id} not found")
        if self.cancelled:
            self.http_stream_close(stream_id)
            return b""
        try:
            # An empty block means end of stream, so never hand out an empty chunk of real data.
            return next((chunk for chunk in entry[1] if chunk), b"")
        except httpx.HTTPError as exc:
            raise HostRefusal(f"Stream error: {exc}") from exc

    def http_stream_close(self, stream_id: int) -> None:
        entry = self._streams.pop(stream_id, None)
        if entry is not None:
            entry[0].close()

    def yield_chunk(self, chunk: bytes) -> None:
        consumer = self.call.consumer
        if consumer is not None:
            consumer(chunk)

    def log(self, record: bytes) -> None:
        doc = json.loads(record)
        level = int(doc.get("level", 5))
        self.logs.append(doc)
        target = logging.getLogger(f"querymt_jupyter.plugin.{doc.get('target') or self.plugin}")
        target.log(_LOG_LEVELS.get(level, 5), "[extism:%s] %s", self.plugin, doc.get("message", ""))

    def close(self) -> None:
        for stream_id in list(self._streams):
            self.http_stream_close(stream_id)


def _to_wire_response(response: httpx.Response, body: bytes) -> wire.HttpResponse:
    version = response.http_version if response.http_version.startswith("HTTP/") else "HTTP/1.1"
    version = {"HTTP/2": "HTTP/2.0", "HTTP/3": "HTTP/3.0"}.get(version, version)
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers.raw]
    return wire.HttpResponse(response.status_code, headers, body, version)


def read_response(response: httpx.Response) -> wire.HttpResponse:
    """Read a streamed httpx response to the end, in wire form (the body exactly as received)."""
    try:
        body = b"".join(response.iter_raw())
    finally:
        response.close()
    return _to_wire_response(response, body)


def _stream_error(payload: dict[str, Any]) -> bytes:
    return wire.dumps({"status": "error", "plugin_error": wire.dumps({"payload": payload}).decode(), "error_code": 1})
