"""An OpenAI-compatible HTTP server on 127.0.0.1, for tests, benchmarks and teaching notebooks.

A real LLM service is the one thing this project cannot reach from its test machines, so this server
speaks the OpenAI REST API as faithfully as a stand-in can: the same endpoints, the same JSON shapes,
the same Server-Sent-Events framing for streams, the same error envelopes, status codes and headers.
Only the "model" is fake: replies are scripted, embeddings are derived from a hash of the input text.

    with LoopbackOpenAI(reply="Hi there!", api_key="sk-test") as server:
        httpx.post(f"{server.base_url}/chat/completions", ...)
        server.requests[-1].json["messages"]

Endpoints: ``POST /v1/chat/completions`` (plain and ``stream: true``), ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /v1/models`` and ``GET /v1/models/{id}``. Anything else is a 404 with
OpenAI's error body. Stdlib only: a ``ThreadingHTTPServer`` on a daemon thread.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import re
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Union

__all__ = ["DEFAULT_MODELS", "DEFAULT_REPLY", "Failure", "LoopbackOpenAI", "RecordedRequest"]

DEFAULT_REPLY = "Hello! I am the loopback OpenAI server, answering from 127.0.0.1."
DEFAULT_MODELS: tuple[str, ...] = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "text-embedding-3-large")

JsonObject = dict[str, Any]
ReplySource = Union[str, None, Callable[[JsonObject], Union[str, None]]]
ToolCallSource = Union[Sequence[Mapping[str, Any]], None, Callable[[JsonObject], Union[Sequence[Mapping[str, Any]], None]]]

# Marks "reply not given", so that a server scripted with tool calls answers with content null, as
# OpenAI does, while an explicit reply text is still sent next to the tool calls.
_UNSET: Any = object()

_MODEL_CREATED = 1_686_935_002  # a fixed "created" stamp for /v1/models, like OpenAI's static catalogue
_EMBEDDING_DIMS = {"text-embedding-3-large": 3072}
_DEFAULT_EMBEDDING_DIMS = 1536


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str  # as sent, including any query string
    headers: dict[str, str]  # lowercase names; repeated headers joined with ", "
    body: bytes
    json: Any  # the parsed body, or None when the body is empty or not JSON


@dataclass(frozen=True)
class Failure:
    """A scripted error response for one request.

    ``message`` replaces the default OpenAI message for the status; ``retry_after`` sets the
    ``Retry-After`` header (429 defaults to 30 s, as OpenAI's rate-limit hints do); ``body`` replaces
    the whole JSON envelope with raw bytes (e.g. an HTML page from a failing proxy).
    """

    status: int
    message: str | None = None
    retry_after: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None


class _ApiError(Exception):
    """An OpenAI error response, raised anywhere in request handling."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, dict(headers or {})
        self.body = _json_bytes({"error": {"message": message, "type": type, "param": param, "code": code}})


class LoopbackOpenAI:
    """A scripted OpenAI API on ``http://127.0.0.1:<port>/v1``; starts serving on construction.

    reply         text of every chat/completion answer, or a callable mapping the request JSON to it;
                  None means content null. Not given: a greeting, or null when tool calls are scripted.
    tool_calls    tool calls to answer chat requests with: dicts with ``name``, ``arguments`` (dict or
                  JSON text) and optional ``id``; or a callable mapping the request JSON to such a list.
    models        ids listed by GET /v1/models.
    chunks        how many pieces a streamed reply (and each tool call's arguments) is split into.
    chunk_delay   seconds between consecutive stream events (the benchmarks use 0.025).
    latency       seconds each request waits before it is answered, as a model thinks (the batch
                  benchmark uses 0.1); ``max_in_flight`` then shows how many requests overlapped.
    api_key       when set, requests need ``Authorization: Bearer <api_key>`` or get a 401.
    failures      scripted failures for the next requests, in order (``Failure`` or a bare status).
    usage         token counts to report: ``prompt_tokens``, ``completion_tokens`` and optionally
                  ``cached_tokens`` and ``reasoning_tokens``; by default counted from the texts.
    finish_reason overrides the finish reason ("length", "content_filter", ...).
    port          0 picks a free port.
    """

    def __init__(
        self,
        reply: ReplySource = _UNSET,
        *,
        tool_calls: ToolCallSource = None,
        models: Iterable[str] = DEFAULT_MODELS,
        chunks: int = 8,
        chunk_delay: float = 0.0,
        latency: float = 0.0,
        api_key: str | None = None,
        failures: Iterable[Failure | int] = (),
        usage: Mapping[str, int] | None = None,
        finish_reason: str | None = None,
        port: int = 0,
    ) -> None:
        if chunks < 1:
            raise ValueError("chunks must be at least 1")
        if reply is _UNSET:
            reply = None if tool_calls is not None else DEFAULT_REPLY
        self.reply: ReplySource = reply
        self.tool_calls: ToolCallSource = tool_calls
        self.models: list[str] = list(models)
        self.chunks, self.chunk_delay, self.latency = chunks, chunk_delay, latency
        self.in_flight = 0  # requests being handled now
        self.max_in_flight = 0  # the most that were handled at once
        self.api_key = api_key
        self.usage = dict(usage) if usage is not None else None
        self.finish_reason = finish_reason
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self.sent: list[tuple[float, str]] = []  # (time.time() when written, SSE data) of streamed events
        self._failures: deque[Failure] = deque()
        self._ids = itertools.count(1)
        for failure in failures:
            self._queue_failure(failure)
        self._server = _Server(("127.0.0.1", port), _Handler, self)
        # A short poll interval keeps stop() quick: shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="loopback-openai", daemon=True)
        self._thread.start()
        self._stopped = False

    # ---- public API ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base, e.g. ``http://127.0.0.1:PORT/v1`` (what OpenAI clients call base_url)."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(self, status: int, times: int = 1, *, message: str | None = None,
                  retry_after: int | None = None, body: bytes | None = None) -> None:
        """Answer the next ``times`` requests (of any endpoint) with an error of this status."""
        for _ in range(times):
            self._queue_failure(Failure(status, message=message, retry_after=retry_after, body=body))

    def stop(self) -> None:
        """Stop serving and drop open connections; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackOpenAI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "serving"
        return f"<LoopbackOpenAI {self.base_url} {state}, {len(self.requests)} requests>"

    # ---- used by the handler ---------------------------------------------------------------------

    def _queue_failure(self, failure: Failure | int) -> None:
        with self._lock:
            self._failures.append(failure if isinstance(failure, Failure) else Failure(int(failure)))

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _end(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _next_failure(self) -> Failure | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-loopback{next(self._ids):06d}"

    def _reply_for(self, request: JsonObject) -> str | None:
        return self.reply(request) if callable(self.reply) else self.reply

    def _tool_calls_for(self, request: JsonObject) -> list[JsonObject]:
        specs = self.tool_calls(request) if callable(self.tool_calls) else self.tool_calls
        return [_tool_call(i, spec) for i, spec in enumerate(specs or ())]

    def _usage_for(self, prompt: str, completion: str) -> JsonObject:
        counts = self.usage or {}
        prompt_tokens = counts.get("prompt_tokens", _count_tokens(prompt))
        completion_tokens = counts.get("completion_tokens", _count_tokens(completion))
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": counts.get("cached_tokens", 0), "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": counts.get("reasoning_tokens", 0),
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }


# ---- HTTP plumbing -----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 owner: LoopbackOpenAI) -> None:
        self.owner = owner
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanished (a killed process, a closed pool) is not the server's error to print."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    # Keep-alive connections would otherwise outlive stop() in their handler threads.
    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._connections_lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like api.openai.com
    disable_nagle_algorithm = True  # else headers and body, written apart, wait ~40 ms for a delayed ACK
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def version_string(self) -> str:
        return "loopback-openai"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # tests and notebooks read server.requests instead of a noisy stderr

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.server.owner
        body = self._read_body()
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        parsed = _try_json(body)
        owner._record(RecordedRequest(self.command, self.path, headers, body, parsed))
        owner._begin()
        try:
            if owner.latency:
                time.sleep(owner.latency)
            failure = owner._next_failure()
            if failure is not None:
                self._send_failure(failure, parsed)
                return
            self._check_auth(owner.api_key, headers.get("authorization"))
            self._route(owner, body, parsed)
        except _ApiError as err:
            self._send(err.status, err.body, extra=err.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-response
        except Exception as exc:  # a user's reply/tool_calls callable failed: say so in the response
            self._send(500, _ApiError(500, f"loopback server error: {exc!r}", type="server_error").body)
        finally:
            owner._end()

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _check_auth(self, expected: str | None, header: str | None) -> None:
        if expected is None:
            return
        if not header or not header.startswith("Bearer "):
            raise _ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        given = header[len("Bearer "):]
        if given != expected:
            raise _ApiError(401, f"Incorrect API key provided: {_mask_key(given)}.", code="invalid_api_key")

    def _route(self, owner: LoopbackOpenAI, body: bytes, parsed: Any) -> None:
        path = self.path.split("?", 1)[0]
        if self.command == "GET" and path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [_model(m) for m in owner.models]})
            return
        if self.command == "GET" and path.startswith("/v1/models/"):
            self._send_json(200, _find_model(owner.models, path[len("/v1/models/"):]))
            return
        endpoints = {
            "/v1/chat/completions": self._chat_completions,
            "/v1/completions": self._completions,
            "/v1/embeddings": self._embeddings,
        }
        endpoint = endpoints.get(path) if self.command == "POST" else None
        if endpoint is None:
            raise _ApiError(404, f"Invalid URL ({self.command} {path})")
        endpoint(owner, _request_object(body, parsed))

    # ---- endpoints ----------------------------------------------------------------------------

    def _chat_completions(self, owner: LoopbackOpenAI, request: JsonObject) -> None:
        _require(request, "model", "you must provide a model parameter")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _ApiError(400, "Missing required parameter: 'messages'.", param="messages",
                            code="missing_required_parameter")
        text = owner._reply_for(request)
        calls = owner._tool_calls_for(request)
        finish = owner.finish_reason or ("tool_calls" if calls else "stop")
        completion_text = (text or "") + "".join(c["function"]["arguments"] for c in calls)
        usage = owner._usage_for(_prompt_text(messages), completion_text)
        common = _Common(owner._next_id("chatcmpl"), int(time.time()), request["model"])
        if request.get("stream"):
            self._stream(owner, _chat_events(owner, request, common, text, calls, finish, usage))
            return
        message: JsonObject = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = calls
        self._send_json(200, {
            **common.head("chat.completion"),
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage, "service_tier": "default", "system_fingerprint": "fp_loopback",
        })

    def _completions(self, owner: LoopbackOpenAI, request: JsonObject) -> None:
        _require(request, "model", "you must provide a model parameter")
        text = owner._reply_for(request) or ""
        finish = owner.finish_reason or "stop"
        prompt = request.get("prompt", "")
        usage = owner._usage_for(prompt if isinstance(prompt, str) else json.dumps(prompt), text)
        usage.pop("prompt_tokens_details")  # the legacy endpoint reports the plain three counters
        usage.pop("completion_tokens_details")
        common = _Common(owner._next_id("cmpl"), int(time.time()), request["model"])
        if request.get("stream"):
            self._stream(owner, _completion_events(owner, request, common, text, finish, usage))
            return
        self._send_json(200, {
            **common.head("text_completion"), "system_fingerprint": "fp_loopback",
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage,
        })

    def _embeddings(self, owner: LoopbackOpenAI, request: JsonObject) -> None:
        _require(request, "model", "you must provide a model parameter")
        inputs = _embedding_inputs(request.get("input"))
        model = str(request["model"])
        dims = request.get("dimensions", _EMBEDDING_DIMS.get(model, _DEFAULT_EMBEDDING_DIMS))
        if not isinstance(dims, int) or isinstance(dims, bool) or dims < 1:
            raise _ApiError(400, f"Invalid value for 'dimensions': {dims!r}; expected a positive integer.",
                            param="dimensions", code="invalid_value")
        encoding = request.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise _ApiError(400, f"Invalid value for 'encoding_format': {encoding!r}; "
                                 "supported values are 'float' and 'base64'.",
                            param="encoding_format", code="invalid_value")
        data = []
        for index, text in enumerate(inputs):
            vector = embedding_vector(text, dims)
            encoded: Any = vector
            if encoding == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_count_tokens(text) for text in inputs)
        self._send_json(200, {"object": "list", "data": data, "model": model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    # ---- writing responses ----------------------------------------------------------------------

    def _send_failure(self, failure: Failure, request: Any) -> None:
        model = request.get("model") if isinstance(request, dict) else None
        status, body, headers = _failure_response(failure, model if isinstance(model, str) else "gpt-4o-mini")
        self._send(status, body, extra=headers,
                   content_type="application/json" if failure.body is None else "text/html; charset=utf-8")

    def _send_json(self, status: int, doc: Any) -> None:
        self._send(status, _json_bytes(doc))

    def _send(self, status: int, body: bytes, *, extra: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self._send_openai_headers(extra)
        self.end_headers()
        self.wfile.write(body)

    def _send_openai_headers(self, extra: Mapping[str, str] | None) -> None:
        self.send_header("x-request-id", self.server.owner._next_id("req"))
        self.send_header("openai-version", "2020-10-01")
        self.send_header("openai-processing-ms", "1")
        for name, value in (extra or {}).items():
            self.send_header(name, value)

    def _stream(self, owner: LoopbackOpenAI, events: Iterator[Any]) -> None:
        """Send SSE events with chunked transfer encoding, one HTTP chunk per event, flushed at once,
        ``chunk_delay`` apart, so a client sees them arrive over time as from the real service."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self._send_openai_headers(None)
        self.end_headers()
        for n, event in enumerate(events):
            if n and owner.chunk_delay > 0:
                time.sleep(owner.chunk_delay)
            data = "[DONE]" if event is None else json.dumps(event, separators=(",", ":"))
            self._write_chunk(f"data: {data}\n\n".encode())
            owner.sent.append((time.time(), data))  # when each event left, for latency benchmarks
        self._write_chunk(b"")  # the terminating zero-length chunk

    def _write_chunk(self, payload: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        self.wfile.flush()


# ---- stream event builders (None stands for the final "[DONE]") -------------------------------------


@dataclass(frozen=True)
class _Common:
    """What every object or chunk of one response repeats (OpenAI: same id and stamp per chunk)."""

    id: str
    created: int
    model: str

    def head(self, object_type: str) -> JsonObject:
        return {"id": self.id, "object": object_type, "created": self.created, "model": self.model}


def _chat_events(owner: LoopbackOpenAI, request: JsonObject, common: _Common, text: str | None,
                 calls: list[JsonObject], finish: str, usage: JsonObject) -> Iterator[JsonObject | None]:
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    head = {**common.head("chat.completion.chunk"), "system_fingerprint": "fp_loopback"}

    def chunk(delta: JsonObject, finish_reason: str | None = None) -> JsonObject:
        event = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                      "finish_reason": finish_reason}]}
        if include_usage:
            event["usage"] = None  # every chunk but the last carries usage: null (OpenAI's contract)
        return event

    yield chunk({"role": "assistant", "content": "" if text is not None else None, "refusal": None})
    for piece in split_text(text or "", owner.chunks):
        yield chunk({"content": piece})
    for index, call in enumerate(calls):
        function = call["function"]
        yield chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": function["name"], "arguments": ""}}]})
        for piece in split_text(function["arguments"], owner.chunks):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield chunk({}, finish)
    if include_usage:
        yield {**head, "choices": [], "usage": usage}
    yield None


def _completion_events(owner: LoopbackOpenAI, request: JsonObject, common: _Common, text: str,
                       finish: str, usage: JsonObject) -> Iterator[JsonObject | None]:
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    head = common.head("text_completion")
    pieces = split_text(text, owner.chunks) or [""]
    for n, piece in enumerate(pieces):
        last = n == len(pieces) - 1
        yield {**head, "choices": [{"text": piece, "index": 0, "logprobs": None,
                                    "finish_reason": finish if last else None}]}
    if include_usage:
        yield {**head, "choices": [], "usage": usage}
    yield None


# ---- helpers --------------------------------------------------------------------------------------


def split_text(text: str, pieces: int) -> list[str]:
    """Split ``text`` into at most ``pieces`` contiguous, nearly equal, non-empty parts."""
    if not text:
        return []
    count = min(pieces, len(text))
    bounds = [round(i * len(text) / count) for i in range(count + 1)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``: SHA-256 in counter mode, as float32 values.

    A shorter vector is the renormalised prefix of a longer one, as with OpenAI's ``dimensions``."""
    raw: list[float] = []
    for block in itertools.count():
        digest = hashlib.sha256(f"{block}:".encode() + text.encode()).digest()
        raw.extend(u / 2**31 - 1.0 for u in struct.unpack("<8I", digest))
        if len(raw) >= dimensions:
            break
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    # Round through float32: that is what OpenAI's vectors are, and base64 output packs them so.
    return [struct.unpack("<f", struct.pack("<f", x / norm))[0] for x in raw]


def _tool_call(index: int, spec: Mapping[str, Any]) -> JsonObject:
    arguments = spec.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, separators=(",", ":"))
    name = str(spec["name"])
    call_id = spec.get("id") or "call_" + hashlib.sha256(f"{index}:{name}:{arguments}".encode()).hexdigest()[:24]
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _failure_response(failure: Failure, model: str) -> tuple[int, bytes, dict[str, str]]:
    status = failure.status
    headers = dict(failure.headers)
    retry_after = failure.retry_after if failure.retry_after is not None else (30 if status == 429 else None)
    if retry_after is not None:
        headers.setdefault("retry-after", str(retry_after))
    if status == 429:
        headers.setdefault("x-ratelimit-limit-requests", "3")
        headers.setdefault("x-ratelimit-remaining-requests", "0")
        headers.setdefault("x-ratelimit-reset-requests", f"{retry_after}s")
    if failure.body is not None:
        return status, failure.body, headers
    message, kind, code = _default_error(status, model, retry_after)
    err = _ApiError(status, failure.message or message, type=kind, code=code)
    return status, err.body, headers


def _default_error(status: int, model: str, retry_after: int | None) -> tuple[str, str, str | None]:
    """OpenAI's usual message, type and code for an error status."""
    if status == 401:
        return "Incorrect API key provided: sk-lo***back.", "invalid_request_error", "invalid_api_key"
    if status == 403:
        return "Country, region, or territory not supported", "request_forbidden", \
            "unsupported_country_region_territory"
    if status == 404:
        return f"The model `{model}` does not exist or you do not have access to it.", \
            "invalid_request_error", "model_not_found"
    if status == 429:
        return (f"Rate limit reached for {model} in organization org-loopback on requests per min (RPM): "
                f"Limit 3, Used 3, Requested 1. Please try again in {retry_after}s."), "requests", \
            "rate_limit_exceeded"
    if status == 503:
        return "The engine is currently overloaded, please try again later", "server_error", None
    if status >= 500:
        return "The server had an error while processing your request. Sorry about that!", "server_error", None
    return "The request was invalid.", "invalid_request_error", None


def _request_object(body: bytes, parsed: Any) -> JsonObject:
    if not isinstance(parsed, dict):
        raise _ApiError(
            400,
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON object "
            f"as the request body; this one was {'empty' if not body else 'not a JSON object'}.",
        )
    return parsed


def _require(request: JsonObject, key: str, message: str) -> None:
    if not isinstance(request.get(key), str) or not request[key]:
        raise _ApiError(400, message)


def _embedding_inputs(value: Any) -> list[str]:
    """OpenAI accepts a string, a list of strings, a token list or a list of token lists."""
    if isinstance(value, str):
        value = [value]
    elif isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        value = [value]
    if not isinstance(value, list) or not value or any(v == "" or v == [] for v in value):
        raise _ApiError(400, "'$.input' is invalid: expected a non-empty string or array of non-empty strings "
                             "or token arrays.", param="input", code="invalid_value")
    return [v if isinstance(v, str) else json.dumps(v) for v in value]


def _model(model_id: str) -> JsonObject:
    return {"id": model_id, "object": "model", "created": _MODEL_CREATED, "owned_by": "system"}


def _find_model(models: Sequence[str], model_id: str) -> JsonObject:
    if model_id not in models:
        raise _ApiError(404, f"The model '{model_id}' does not exist", param="model", code="model_not_found")
    return _model(model_id)


def _prompt_text(messages: list[Any]) -> str:
    """The text of every message, for token counting (content may be a string or content parts)."""
    parts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def _count_tokens(text: str) -> int:
    """A stable stand-in for a tokenizer: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _mask_key(key: str) -> str:
    return f"{key[:5]}***{key[-4:]}" if len(key) > 9 else "***"


def _try_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
