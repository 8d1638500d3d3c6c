"""``PluginFactory``: one loaded plugin, and the calls every operation goes through.

A factory owns a ``PluginInstance`` (Wasm or native; the code here does not care which) and its
``PluginHost``. ``call`` is the single door into the plugin: it serialises calls (Extism instances are
not re-entrant; native plugins may opt out), turns error codes into typed exceptions (wire spec 5.2),
prefers a host-side error recorded during the call (a blocked host explains a failure better than the
plugin's 403 parse) and keeps secrets out of messages.

Config resolution (wire spec 3) lives here too, because both building a provider and listing models
need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from . import wire
from .config import ProviderSpec, expand_env
from .errors import (
    InvalidRequestError,
    LLMError,
    PluginCallError,
    QueryMTError,
    TransportError,
    decode_plugin_error,
    error_from_payload,
)
from .host import PluginHost, classify_http_status, read_response, transport_payload
from .loaders.base import CallFailed, PluginInstance

if TYPE_CHECKING:
    from .provider import ProviderBuilder

_GEN_A = ("chat_request", "chat_stream_request", "parse_chat_response", "list_models_request", "parse_list_models_response")
_STREAM_PARSER = ("chat_stream_parser_start", "chat_stream_parser_parse", "chat_stream_parser_finish", "chat_stream_parser_close")


class PluginFactory:
    """A loaded provider plugin (QueryMT's ``ProviderFactory``)."""

    def __init__(self, spec: ProviderSpec, instance: PluginInstance, host: PluginHost, *, plugin_name: str) -> None:
        self.spec = spec
        self.instance = instance
        self.host = host
        self.plugin_name = plugin_name  # what the plugin calls itself; spec.name wins
        self._lock: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if instance.thread_safe else threading.Lock()
        )
        self._schema: dict[str, Any] | None = None
        self._secrets: tuple[str, ...] = ()

    # -- identity

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def plugin_type(self) -> str:
        return self.instance.kind

    @property
    def path(self) -> str:
        return str(self.instance.path)

    @property
    def generation(self) -> str:
        """"A" (host does HTTP) or "B" (plugin does HTTP through host functions), wire spec 1."""
        return "A" if all(op in self.instance.exports for op in _GEN_A) else "B"

    @property
    def allowed_hosts(self) -> list[str]:
        return list(self.host.allow.hosts)

    def supports(self, op: str) -> bool:
        return op in self.instance.exports

    def _repr_html_(self) -> str:
        from .reprs import factory_html

        return factory_html(self)

    def __repr__(self) -> str:
        return f"<PluginFactory {self.name!r} {self.plugin_type} gen {self.generation} from {self.spec.path}>"

    # -- the one door into the plugin

    def call(self, op: str, data: bytes, *, clear_cancel: bool = False, consumer: Callable[[bytes], None] | None = None) -> bytes:
        host = self.host
        with self._lock:
            state = host.begin_call(clear_cancel=clear_cancel, consumer=consumer)
            try:
                output = self.instance.call(op, data)
            except CallFailed as failed:
                error = self._host_error(op) or decode_plugin_error(self.name, op, failed.message)
                raise self.redact(error) from None
            finally:
                state.consumer = None
            # The host refused something during the call (a blocked host, an unknown stream id) and the
            # plugin carried on: QueryMT's host would have trapped the call (and a blocked request must
            # raise HostBlockedError, README), so a successful return must not hide it.
            if state.errors:
                raise self.redact(self._host_error(op))
            return output

    def _host_error(self, op: str) -> QueryMTError | None:
        """The first host-side error recorded during the call just made, as a QueryMTError."""
        error = self.host.take_error()
        if error is None or isinstance(error, QueryMTError):
            return error
        # Recorded by the Wasm loader (a HostRefusal, a malformed record...): report it the way the
        # native build does, as this operation failing with the host's text.
        return PluginCallError.from_text(self.name, op, str(error))

    def redact(self, error: Exception) -> Exception:
        """Replace any known secret in an error's message and payload with ``***``."""
        if self._secrets and error.args:
            error.args = (self._scrub(str(error.args[0])), *error.args[1:])
            if isinstance(error, LLMError):
                # Every string of the payload, not only "message": response_format_error's raw_response
                # quotes a whole response body, which may quote the request's Authorization header.
                error.payload.update({k: self._scrub(v) for k, v in error.payload.items() if isinstance(v, str)})
        return error

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def text(self, op: str) -> str | None:
        """A raw-text export (name, base_url, api_key_name, config_schema), or None if absent."""
        return self.call(op, b"null").decode() if self.supports(op) else None

    # -- metadata

    def config_schema(self) -> dict[str, Any]:
        """The plugin's JSON Schema for its config (``{}`` when it has none)."""
        if self._schema is None:
            text = self.text("config_schema")
            self._schema = json.loads(text) if text else {}
        return self._schema

    def api_key_name(self) -> str | None:
        return self.text("api_key_name") or None

    def supports_streaming(self, cfg_json: bytes) -> bool:
        if self.generation == "A":
            if not all(self.supports(op) for op in _STREAM_PARSER):
                return False
        return not self.supports("supports_streaming") or json.loads(self.call("supports_streaming", cfg_json)) is True

    # -- config (wire spec 3)

    def resolve_config(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Static config, then the env api_key, then builder ``options``, then pruning by schema."""
        cfg = expand_env(self.spec.config)
        if self.generation == "A" and not cfg.get("api_key") and (key_name := self.api_key_name()):
            if value := os.environ.get(key_name, "").strip():
                cfg["api_key"] = value
        cfg.update(options or {})
        # Add, never replace: every provider built from this factory (and list_models, which resolves
        # without the builder's key) raises through it, so each key ever resolved must stay redacted.
        if cfg.get("api_key"):
            self._secrets = tuple(dict.fromkeys((*self._secrets, str(cfg["api_key"]))))
        return prune(cfg, self.config_schema())

    def check_base_url(self, cfg: Mapping[str, Any]) -> None:
        """A configured base_url must parse and be allowed (wire spec 9)."""
        base_url = cfg.get("base_url")
        if base_url is None:
            return
        if not isinstance(base_url, str) or not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]", base_url):
            raise InvalidRequestError({"type": "invalid_request", "message": f"Invalid base_url for provider {self.name}: {base_url!r}"})
        if not self.host.allow.permits(base_url):
            raise InvalidRequestError(
                {
                    "type": "invalid_request",
                    "message": f"base_url {base_url!r} of provider {self.name} is not in allowed_hosts {self.allowed_hosts}",
                },
                plugin=self.name,
            )

    def builder(self) -> ProviderBuilder:
        from .provider import ProviderBuilder

        return ProviderBuilder(self)

    # -- generation A HTTP exchange (wire spec 6.1)

    def exchange(
        self, request_op: str, request: bytes, parse_op: str, cfg_json: bytes | None, timeout: float | None = None
    ) -> bytes:
        """request export -> host sends it -> non-2xx classified -> parse export."""
        response = self.host.send(self.call(request_op, request), timeout)
        resp = self._read(response)
        if not 200 <= resp.status <= 299:
            raise self.redact(error_from_payload(classify_http_status(resp), self.name))
        return self.call(parse_op, wire.parse_request(cfg_json, resp.to_wire()))

    def _read(self, response: httpx.Response) -> wire.HttpResponse:
        try:
            return read_response(response)
        except httpx.HTTPError as exc:
            raise TransportError(transport_payload(exc, str(response.url)), plugin=self.name) from exc

    # -- models

    def list_models(self) -> list[str]:
        """Model ids, live from the provider (static config, env key, no builder overlay)."""
        cfg = self.resolve_config()
        cfg_json = wire.dumps(cfg)
        if self.generation == "B":
            return json.loads(self.call("list_models", cfg_json, clear_cancel=True))
        request = b'{"cfg":' + cfg_json + b"}"
        if self.supports("list_models_static"):
            static = json.loads(self.call("list_models_static", request))
            if static is not None:
                return static
        self.check_base_url(cfg)
        timeout = cfg.get("timeout_seconds")
        return json.loads(self.exchange("list_models_request", request, "parse_list_models_response", None, timeout))

    def close(self) -> None:
        self.host.close()
        self.instance.close()


def prune(cfg: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Keep only keys the schema's ``properties`` name, recursing into inline sub-schemas (not $ref)."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return dict(cfg)
    kept: dict[str, Any] = {}
    for key, value in cfg.items():
        if key not in properties:
            continue
        sub = properties[key]
        if isinstance(sub, Mapping) and isinstance(sub.get("properties"), Mapping) and isinstance(value, Mapping):
            value = prune(value, sub)
        kept[key] = value
    return kept


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

