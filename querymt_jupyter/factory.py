"""``PluginFactory``: one loaded plugin, and the calls every operation goes through.

A factory owns a ``PluginInstance`` (Wasm or native; the code here does not care which) and its
``PluginHost``. ``call`` is the single door into the plugin: it serialises calls per instance (Extism
instances are not re-entrant; native plugins may opt out), turns error codes into typed exceptions (wire
spec 5.2), prefers a host-side error recorded during the call (a blocked host explains a failure better
than the plugin's 403 parse) and keeps secrets out of messages.

So that N threads can call one provider at once, a plugin that is not thread-safe gets a pool of up to
``pool_size`` instances, each with its own host (sharing the allow-list and HTTP client). Instances are
made only when calls overlap, so a pool size above 1 costs nothing until threads use it. A thread-safe
native plugin needs no pool: its one instance serves every thread.

Config resolution (wire spec 3) lives here too, because both building a provider and listing models
need it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from . import wire
from .config import ProviderSpec, expand_env
from .errors import (
    AuthError,
    ConfigError,
    InvalidRequestError,
    LLMError,
    PluginCallError,
    QueryMTError,
    TransportError,
    decode_plugin_error,
    error_from_payload,
)
from .host import PluginHost, classify_http_status, read_response, transport_payload
from .keys import unknown_keys
from .loaders.base import CallFailed, PluginInstance
from .reprs import factory_html

_GEN_A = ("chat_request", "chat_stream_request", "parse_chat_response", "list_models_request", "parse_list_models_response")
_STREAM_PARSER = ("chat_stream_parser_start", "chat_stream_parser_parse", "chat_stream_parser_finish", "chat_stream_parser_close")

Spawn = Callable[[PluginHost], PluginInstance]
"""Opens one more ready instance of a loaded plugin (init_logging done), answering to the given host."""


class PluginFactory:
    """A loaded provider plugin (QueryMT's ``ProviderFactory``)."""

    def __init__(
        self,
        spec: ProviderSpec,
        instance: PluginInstance,
        host: PluginHost,
        *,
        plugin_name: str,
        spawn: Spawn | None = None,
        pool_size: int = 1,
    ) -> None:
        self.spec = spec
        self.instance = instance  # the first instance, and its host: the pool's others are alike
        self.host = host
        self.plugin_name = plugin_name  # what the plugin calls itself; spec.name wins
        self._generation = "A" if all(op in instance.exports for op in _GEN_A) else "B"
        self._first = PluginSlot(instance, host)
        self._pool = None if instance.thread_safe else _Pool(self._first, self._spawner(spawn), 1)
        self.set_pool_size(pool_size)
        self._schema: dict[str, Any] | None = None
        self._secrets: tuple[str, ...] = ()
        # Read once at load: an AuthError's hint names it, and may be raised while this thread holds
        # the plugin's only instance.
        self._key_name = self.text("api_key_name") or None

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
        return self._generation  # read on every provider call; the exports never change

    @property
    def allowed_hosts(self) -> list[str]:
        return list(self.host.allow.hosts)

    def supports(self, op: str) -> bool:
        return op in self.instance.exports

    def _repr_html_(self) -> str:
        return factory_html(self)

    def __repr__(self) -> str:
        return f"<PluginFactory {self.name!r} {self.plugin_type} gen {self.generation} from {self.spec.path}>"

    # -- the instance pool

    @property
    def pool_size(self) -> int:
        """How many instances calls may spread over (1 for a thread-safe plugin: it needs no more)."""
        return 1 if self._pool is None else self._pool.size

    def set_pool_size(self, size: int) -> None:
        """Let up to ``size`` threads call at once. Instances are made as calls overlap; those beyond a
        lowered size stay until ``close``."""
        if size < 1:
            raise ValueError(f"pool size must be at least 1, not {size}")
        if self._pool is not None:
            self._pool.size = size

    @property
    def instances(self) -> tuple[PluginInstance, ...]:
        """Every instance made so far, the first one first."""
        return tuple(slot.instance for slot in self._slots())

    def _slots(self) -> tuple[PluginSlot, ...]:
        return (self._first,) if self._pool is None else self._pool.slots

    def _spawner(self, spawn: Spawn | None) -> Callable[[], PluginSlot] | None:
        if spawn is None:
            return None
        return lambda: PluginSlot.open(spawn, self.host.sibling())

    def lease(self) -> Lease:
        """An instance pinned for a sequence of calls that must all reach it (a stream's); ``release``
        it (or use ``with``) when the sequence ends."""
        if self._pool is None:
            return Lease(self, self._first, None)
        return Lease(self, self._pool.pin(), self._pool)

    # -- the one door into the plugin

    def call(self, op: str, data: bytes, *, clear_cancel: bool = False, consumer: Callable[[bytes], None] | None = None) -> bytes:
        slot = self._first
        lock = slot.lock
        if lock is None:  # thread-safe: the one instance serves every thread, no lock
            return self._run(slot, op, data, clear_cancel, consumer)
        # The first instance is tried in place and the pool asked only when it is busy: every Python
        # step here is on the measured dispatch path, and around a Wasm call each one costs several
        # times what it costs elsewhere (see querymt_jupyter.bench).
        if not lock.acquire(blocking=False):
            slot = self._pool.acquire()  # type: ignore[union-attr] - a lock means a pool
            lock = slot.lock
        try:
            return self._run(slot, op, data, clear_cancel, consumer)
        finally:
            lock.release()  # type: ignore[union-attr]

    def _run(
        self, slot: PluginSlot, op: str, data: bytes, clear_cancel: bool, consumer: Callable[[bytes], None] | None
    ) -> bytes:
        """One call on ``slot``, whose lock (if any) the caller holds."""
        host = slot.host
        state = host.begin_call(clear_cancel=clear_cancel, consumer=consumer)
        try:
            output = slot.instance.call(op, data)
        except CallFailed as failed:
            error = self._host_error(host, op) or decode_plugin_error(self.name, op, failed.message)
            raise self.redact(error) from None
        finally:
            state.consumer = None
        # The host refused something during the call (a blocked host, an unknown stream id) and the
        # plugin carried on: QueryMT's host would have trapped the call (and a blocked request must
        # raise HostBlockedError, README), so a successful return must not hide it.
        if state.errors:
            raise self.redact(self._host_error(host, op))
        return output

    def _host_error(self, host: PluginHost, op: str) -> QueryMTError | None:
        """The first host-side error recorded during the call just made, as a QueryMTError."""
        error = host.take_error()
        if error is None or isinstance(error, QueryMTError):
            return error
        # Recorded by the Wasm loader (a HostRefusal, a malformed record...): report it the way the
        # native build does, as this operation failing with the host's text.
        return PluginCallError.from_text(self.name, op, str(error))

    def redact(self, error: Exception) -> Exception:
        """Replace any known secret in an error's message and payload with ``***``; an AuthError's hint
        names this provider's key variable."""
        if isinstance(error, AuthError):
            error.hint = self._auth_hint()
        if self._secrets and error.args:
            error.args = (self._scrub(str(error.args[0])), *error.args[1:])
            if isinstance(error, LLMError):
                # Every string of the payload, not only "message": response_format_error's raw_response
                # quotes a whole response body, which may quote the request's Authorization header.
                error.payload.update({k: self._scrub(v) for k, v in error.payload.items() if isinstance(v, str)})
        return error

    def _auth_hint(self) -> str:
        field = f"api_key under [providers.config] of {self.name!r}"
        if self.generation == "A" and self._key_name:
            return f"set the environment variable {self._key_name}, or {field}"
        return f"set {field}"

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
        """The environment variable a generation-A plugin reads its key from (wire spec 3)."""
        return self._key_name

    def supports_streaming(self, cfg_json: bytes) -> bool:
        if self.generation == "A":
            if not all(self.supports(op) for op in _STREAM_PARSER):
                return False
        return not self.supports("supports_streaming") or json.loads(self.call("supports_streaming", cfg_json)) is True

    # -- config (wire spec 3)

    def resolve_config(self, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Static config, then the env api_key, then builder ``options``, then pruning by schema.

        A static key the schema lacks is a ConfigError naming its line (keys.py): pruned, it would do nothing.
        """
        self._check_static_keys()
        cfg = expand_env(self.spec.config)
        if self.generation == "A" and self._key_name and not cfg.get("api_key"):
            if value := os.environ.get(self._key_name, "").strip():
                cfg["api_key"] = value
        cfg.update(options or {})
        # Add, never replace: every provider built from this factory (and list_models, which resolves
        # without the builder's key) raises through it, so each key ever resolved must stay redacted.
        if cfg.get("api_key"):
            self._secrets = tuple(dict.fromkeys((*self._secrets, str(cfg["api_key"]))))
        return prune(cfg, self.config_schema())

    def _check_static_keys(self) -> None:
        spec = self.spec
        for unknown in unknown_keys(spec.config, self.config_schema()):
            raise ConfigError(
                unknown.message(f"the config of {spec.name!r}"),
                path=spec.origin,
                line=spec.lines.get(unknown.key.partition(".")[0]),
                field=f"{spec.label or spec.name}.config.{unknown.key}",
                hint=unknown.hint,
            )

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
        for slot in self._slots():
            slot.host.close()
            slot.instance.close()


class PluginSlot:
    """One instance of a plugin and its own host; ``lock`` (None when thread-safe) serialises its calls."""

    __slots__ = ("host", "instance", "leases", "lock")

    def __init__(self, instance: PluginInstance, host: PluginHost) -> None:
        self.instance, self.host = instance, host
        self.lock = None if instance.thread_safe else threading.Lock()
        self.leases = 0  # open leases (streams) pinned here

    @classmethod
    def open(cls, spawn: Spawn, host: PluginHost) -> PluginSlot:
        return cls(spawn(host), host)


class _Pool:
    """The instances of one plugin that is not thread-safe, made on demand up to ``size``."""

    def __init__(self, first: PluginSlot, spawn: Callable[[], PluginSlot] | None, size: int) -> None:
        self.slots: tuple[PluginSlot, ...] = (first,)  # replaced, never mutated: readers take no lock
        self.size = size
        self._spawn = spawn
        self._grow_lock = threading.Lock()
        self._turn = itertools.count()

    def acquire(self) -> PluginSlot:
        """An instance for one call, its lock held: an idle one, else a new one, else the next to free."""
        slot = self._grow()
        if slot is None:
            slots = self.slots
            slot = slots[next(self._turn) % len(slots)]  # all busy, none to add: queue on them in turn
            slot.lock.acquire()  # type: ignore[union-attr]
        return slot

    def _grow(self) -> PluginSlot | None:
        """An idle instance or else a new one, locked; None when all are busy and the pool is full."""
        with self._grow_lock:
            for slot in self.slots:
                if slot.lock.acquire(blocking=False):  # type: ignore[union-attr]
                    return slot
            if self._spawn is None or len(self.slots) >= self.size:
                return None
            slot = self._spawn()  # under the lock: threads that overlap make one instance each, no more
            slot.lock.acquire()  # type: ignore[union-attr]
            self.slots = (*self.slots, slot)
            return slot

    def pin(self) -> PluginSlot:
        """The instance for a new lease: one without leases, else a new one, else the least leased."""
        with self._grow_lock:
            slot = min(self.slots, key=lambda s: s.leases)
            if slot.leases and self._spawn is not None and len(self.slots) < self.size:
                slot = self._spawn()
                self.slots = (*self.slots, slot)
            slot.leases += 1
            return slot

    def unpin(self, slot: PluginSlot) -> None:
        with self._grow_lock:
            slot.leases -= 1


class Lease:
    """One instance pinned for a sequence of calls (``factory.lease()``).

    A generation-A stream parser lives inside the instance that started it, so every parser call of a
    stream must reach that instance; a generation-B stream's cancel flag is that instance's host's. The
    lease pins the instance but locks it only per call, so other calls may use it between a stream's
    calls: a notebook that interleaves streams (or chats while streaming) cannot deadlock on a pool of 1.
    """

    def __init__(self, factory: PluginFactory, slot: PluginSlot, pool: _Pool | None) -> None:
        self._factory, self._slot, self._pool = factory, slot, pool

    @property
    def host(self) -> PluginHost:
        return self._slot.host

    def call(self, op: str, data: bytes, *, clear_cancel: bool = False, consumer: Callable[[bytes], None] | None = None) -> bytes:
        slot = self._slot
        if slot.lock is None:
            return self._factory._run(slot, op, data, clear_cancel, consumer)
        with slot.lock:
            return self._factory._run(slot, op, data, clear_cancel, consumer)

    def release(self) -> None:
        """Unpin the instance (once; later calls are no-ops)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.unpin(self._slot)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


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
