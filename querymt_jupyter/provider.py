"""``ProviderBuilder`` and ``Provider``: chat, streaming chat, completion, embeddings, models.

A provider is a factory plus a resolved, pruned ``cfg`` (wire spec 3). Each operation runs the flow of
wire spec 6.1 for the plugin's generation:

- generation B: one export call; the plugin does its own HTTP through the host functions and streams
  through ``qmt_yield_chunk`` (run on a worker thread so chunks reach the caller as they are yielded);
- generation A: the plugin builds the request, the host sends it, the plugin parses the answer; a
  streamed answer is fed to the plugin's stream parser one LF-terminated line at a time.

Both plugin types (Wasm, native) go through exactly this code.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from . import wire
from .errors import NotImplementedByPluginError, error_from_payload
from .factory import PluginFactory
from .host import classify_chat_status, stream_lines
from .keys import check_keys
from .promptlog import CallRecord
from .reprs import provider_html
from .wire import ChatResponse, CompletionResponse, MessageLike, StreamChunk, Usage

__all__ = ["Provider", "ProviderBuilder", "call_context", "on_call"]

_END = object()
Messages = str | Iterable[MessageLike]  # a plain string is one user message


class ProviderBuilder:
    """Collects builder options (QueryMT's ``LLMBuilder``) and builds a ``Provider``.

    Only options that were set are sent; they overwrite the static config before schema pruning.
    """

    def __init__(self, factory: PluginFactory) -> None:
        self.factory = factory
        self.options: dict[str, Any] = {}

    def _set(self, key: str, value: Any) -> ProviderBuilder:
        self.options[key] = value
        return self

    def model(self, model: str) -> ProviderBuilder:
        return self._set("model", model)

    def api_key(self, key: str) -> ProviderBuilder:
        return self._set("api_key", key)

    def base_url(self, url: str) -> ProviderBuilder:
        return self._set("base_url", url)

    def max_tokens(self, n: int) -> ProviderBuilder:
        return self._set("max_tokens", n)

    def temperature(self, t: float) -> ProviderBuilder:
        return self._set("temperature", t)

    def top_p(self, p: float) -> ProviderBuilder:
        return self._set("top_p", p)

    def top_k(self, k: int) -> ProviderBuilder:
        return self._set("top_k", k)

    def system(self, text: str) -> ProviderBuilder:
        """Add a system prompt (QueryMT sends them as the ``system`` list)."""
        self.options.setdefault("system", []).append(text)
        return self

    def parameter(self, key: str, value: Any) -> ProviderBuilder:
        """Any other config key, flattened into the top level; one the schema lacks is an UnknownKeyError."""
        check_keys({key: value}, self.factory.config_schema(), self.factory.name)
        return self._set(key, value)

    def build(self) -> Provider:
        cfg = self.factory.resolve_config(self.options)
        self.factory.check_base_url(cfg)
        self.factory.call("from_config", wire.dumps(cfg))
        return Provider(self.factory, cfg)


class Provider:
    """A configured provider. Methods mirror QueryMT's ``LLMProvider``."""

    def __init__(self, factory: PluginFactory, cfg: dict[str, Any]) -> None:
        self.factory = factory
        self.cfg = cfg
        self._cfg_json = wire.dumps(cfg)
        self._timeout: float | None = cfg.get("timeout_seconds")  # the host applies it (generation A)

    def __repr__(self) -> str:
        model = self.cfg.get("model", "default model")
        return f"<Provider {self.factory.name!r} ({self.factory.plugin_type}) model={model!r}>"

    @property
    def model(self) -> str | None:
        """The configured model, else the default the plugin's schema declares."""
        declared = self.factory.config_schema().get("properties", {}).get("model", {})
        return self.cfg.get("model") or (declared.get("default") if isinstance(declared, dict) else None)

    def _repr_html_(self) -> str:
        return provider_html(self)

    # -- chat

    def chat(self, messages: Messages, tools: list[Any] | None = None) -> ChatResponse:
        if not _hooks:  # the common, benchmarked path: no observer, no bookkeeping
            return self._chat(messages, tools)
        with self._observed("chat", messages) as record:
            answer = self._chat(messages, tools)
            record.response, record.usage = answer.text, answer.usage
        return answer

    def _chat(self, messages: Messages, tools: list[Any] | None) -> ChatResponse:
        cfg_json, request = self._chat_request(messages, tools)
        f = self.factory
        if f.generation == "B":
            return ChatResponse.from_wire(f.call("chat", request, clear_cancel=True))
        response = f.host.send(f.call("chat_request", request), self._timeout)
        resp = f._read(response)
        if not 200 <= resp.status <= 299:
            raise self._chat_error(cfg_json, resp)
        return ChatResponse.from_wire(f.call("parse_chat_response", wire.parse_request(cfg_json, resp.to_wire())))

    def chat_stream(self, messages: Messages, tools: list[Any] | None = None) -> Iterator[StreamChunk]:
        """Yield ``StreamChunk``s as they arrive (``chunk.text`` is the text delta)."""
        stream = self._chat_stream(messages, tools)
        return self._observed_stream(messages, stream) if _hooks else stream

    def _observed_stream(self, messages: Messages, stream: Iterator[StreamChunk]) -> Iterator[StreamChunk]:
        with self._observed("chat_stream", messages) as record:
            text: list[str] = []
            for chunk in stream:
                text.append(chunk.text)
                if chunk.kind == "usage":
                    record.usage = chunk.value
                yield chunk
            record.response = "".join(text)

    def _chat_stream(self, messages: Messages, tools: list[Any] | None) -> Iterator[StreamChunk]:
        cfg_json, request = self._chat_request(messages, tools, stream=True)
        if not self.factory.supports_streaming(cfg_json):
            raise NotImplementedByPluginError(
                {"type": "not_implemented", "message": f"provider {self.factory.name} does not stream"}
            )
        if self.factory.generation == "B":
            return self._stream_b(request)
        return self._stream_a(cfg_json, request)

    def _chat_request(self, messages: Messages, tools: list[Any] | None, stream: bool = False) -> tuple[bytes, bytes]:
        system, wire_messages = wire.split_messages([{"role": "user", "content": messages}] if isinstance(messages, str) else messages)
        cfg_json = self._cfg_json
        if system or (stream and self.factory.generation == "B"):
            cfg = dict(self.cfg)
            if system:
                if "system" not in self.factory.config_schema().get("properties", {"system": None}):
                    raise ValueError(f"provider {self.factory.name} takes no system prompt (its schema has no 'system')")
                cfg["system"] = [*cfg.get("system", []), *system]
            if stream and self.factory.generation == "B":
                cfg["stream"] = True  # wire spec 3: generation B streams with cfg.stream = true
            cfg_json = wire.dumps(cfg)
        return cfg_json, wire.chat_request(cfg_json, wire_messages, tools)

    def _chat_error(self, cfg_json: bytes, resp: wire.HttpResponse) -> Exception:
        f = self.factory
        if f.supports("classify_chat_error"):
            out = f.call("classify_chat_error", wire.parse_request(cfg_json, resp.to_wire()), clear_cancel=True)
            payload = json.loads(out).get("payload", {})
        else:
            payload = classify_chat_status(resp)
        return f.redact(error_from_payload(payload, f.name))

    def _stream_b(self, request: bytes) -> Iterator[StreamChunk]:
        """Run ``chat_stream`` on a worker; hand over each ``qmt_yield_chunk`` as it comes."""
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        lease = self.factory.lease()  # the instance whose host's cancel flag stops this stream

        def run() -> None:
            try:
                lease.call("chat_stream", request, clear_cancel=True, consumer=items.put)
                items.put(_END)
            except Exception as exc:  # noqa: BLE001 - handed to the consumer thread
                items.put(exc)
            finally:
                lease.release()

        worker = threading.Thread(target=run, name=f"querymt-stream-{self.factory.name}", daemon=True)
        worker.start()
        finished = False
        try:
            while (item := items.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield StreamChunk.from_chat_chunk(json.loads(item))
            finished = True
        finally:
            if not finished:  # the consumer went away: later host calls see "cancelled" (spec 10)
                lease.host.cancelled = True

    def _stream_a(self, cfg_json: bytes, request: bytes) -> Iterator[StreamChunk]:
        f = self.factory
        response = f.host.send(f.call("chat_stream_request", request), self._timeout)
        try:
            if not 200 <= response.status_code <= 299:
                raise self._chat_error(cfg_json, f._read(response))
            with f.lease() as lease:  # the parser lives in one instance: every parser call goes there
                parser = int(lease.call("chat_stream_parser_start", cfg_json))
                try:
                    for line in stream_lines(response, f.name):
                        parse = b'{"parser_id":%d,"chunk":%s}' % (parser, wire.byte_array(line))
                        yield from _chunks(lease.call("chat_stream_parser_parse", parse))
                    yield from _chunks(lease.call("chat_stream_parser_finish", b"%d" % parser))
                finally:
                    lease.call("chat_stream_parser_close", b"%d" % parser)
        finally:
            response.close()

    # -- completion, embeddings, models

    def complete(
        self, prompt: str, *, max_tokens: int | None = None, temperature: float | None = None, suffix: str | None = None
    ) -> CompletionResponse:
        if not _hooks:
            return self._complete(prompt, max_tokens, temperature, suffix)
        with self._observed("complete", prompt) as record:
            answer = self._complete(prompt, max_tokens, temperature, suffix)
            record.response = answer.text
        return answer

    def _complete(
        self, prompt: str, max_tokens: int | None, temperature: float | None, suffix: str | None
    ) -> CompletionResponse:
        request = wire.complete_request(self._cfg_json, prompt, suffix, max_tokens, temperature)
        out = self._operation("complete", "complete_request", "parse_complete_response", request)
        return CompletionResponse(json.loads(out)["text"])

    def embed(self, inputs: list[str] | str) -> list[list[float]]:
        if not _hooks:
            return self._embed(inputs)
        with self._observed("embed", inputs if isinstance(inputs, str) else "\n".join(inputs)) as record:
            vectors = self._embed(inputs)
            record.response = f"{len(vectors)} vectors of {len(vectors[0]) if vectors else 0}"
        return vectors

    def _embed(self, inputs: list[str] | str) -> list[list[float]]:
        request = wire.embed_request(self._cfg_json, [inputs] if isinstance(inputs, str) else list(inputs))
        return json.loads(self._operation("embed", "embed_request", "parse_embed_response", request))

    def list_models(self) -> list[str]:
        return self.factory.list_models()

    @contextmanager
    def _observed(self, operation: str, prompt: Messages) -> Iterator[_Observation]:
        """Time one call and hand a CallRecord to every hook, whether it succeeds or fails."""
        observation = _Observation()
        started = time.perf_counter()
        try:
            yield observation
        except BaseException as exc:
            observation.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            usage = observation.usage
            record = CallRecord(
                provider=self.factory.name,
                plugin_type=self.factory.plugin_type,
                model=self.model,
                operation=operation,
                prompt=_prompt_text(prompt),
                response=observation.response,
                parameters=self.cfg,
                input_tokens=usage.input_tokens if usage else None,
                output_tokens=usage.output_tokens if usage else None,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=observation.error,
                **_context.get(),
            )
            for hook in list(_hooks):
                hook(record)

    def _operation(self, op_b: str, request_op: str, parse_op: str, request: bytes) -> bytes:
        f = self.factory
        if f.generation == "B":
            if not f.supports(op_b):
                raise NotImplementedByPluginError({"type": "not_implemented", "message": f"{f.name} has no {op_b}"})
            return f.call(op_b, request, clear_cancel=True)
        return f.exchange(request_op, request, parse_op, self._cfg_json, self._timeout)


@dataclass
class _Observation:
    response: str | None = None
    usage: Usage | None = None
    error: str | None = None


_hooks: list[Callable[[CallRecord], None]] = []
_context: ContextVar[dict[str, Any]] = ContextVar("querymt_call_context", default={})


def on_call(hook: Callable[[CallRecord], None]) -> Callable[[], None]:
    """Call ``hook`` with a CallRecord after every provider call; returns a function that unhooks it."""
    _hooks.append(hook)
    return lambda: _hooks.remove(hook) if hook in _hooks else None


@contextmanager
def call_context(**fields: Any) -> Iterator[None]:
    """Tag the calls made inside the block (``source``, ``execution_count``, ``conversation``)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def _prompt_text(prompt: Messages) -> str:
    """The prompt as a person reads it: the text of the last user message."""
    if isinstance(prompt, str):
        return prompt
    messages = list(prompt)
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") in ("user", "User")]
    last = users[-1] if users else (messages[-1] if messages else {})
    content = last.get("content", "") if isinstance(last, Mapping) else getattr(last, "text", "")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
    return str(content)


def _chunks(data: bytes) -> Iterator[StreamChunk]:
    return (StreamChunk.from_chat_chunk(c) for c in json.loads(data))
