"""The Wasm loader: a QueryMT Extism plugin, run by the ``extism`` runtime.

The six ``extism:host/user`` host functions are defined once for the process and find the calling
instance's ``HostCalls`` through Extism's per-call host context, so each plugin instance talks to its own
host state (its allow-list, streams, stream consumer) and never to a global.

A Python host function cannot trap the guest (an exception is swallowed by the SDK's cffi callback and
the guest sees 0), so refusals are answered in data the guest understands — a 403 response, a
``{"status":"error"}`` stream result, end of stream — and the host raises the recorded error once the
export call returns (``PluginHost.take_error``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import extism
from extism.extism import _ffi, _lib

from .base import CallFailed, HostCalls

HOST_NAMESPACE = "extism:host/user"
_PTR = extism.ValType.I64
_EMPTY_REGISTRY_DATA = '{"providers":{}}'


def _host_function(name: str, returns: bool, body: Callable[[HostCalls, bytes], bytes | None], fallback: bytes) -> Any:
    """Wrap ``body(host, input_bytes)`` as an Extism host function that never lets an exception out."""

    def run(current: extism.CurrentPlugin, params: list[extism.Val], results: list[extism.Val], *_: Any) -> None:
        host = current.host_context()
        try:
            output = body(host, current.input_bytes(params[0]))
        except Exception as exc:  # noqa: BLE001 - anything escaping here would be silently lost
            host.record_error(exc)
            output = fallback
        if returns:
            if output:
                current.return_bytes(results[0], output)
            else:
                results[0].value = 0  # offset 0: "nothing" (end of stream)

    signature = ([_PTR], [_PTR] if returns else [])
    return extism.host_fn(name=name, namespace=HOST_NAMESPACE, signature=signature)(run)


# What a refused qmt_http_stream_open answers (the real reason is raised after the call).
_REFUSED_STREAM = json.dumps(
    {
        "status": "error",
        "plugin_error": json.dumps({"payload": {"type": "http_error", "message": "refused by the host"}}),
        "error_code": 1,
    },
    separators=(",", ":"),
).encode()

HOST_FUNCTIONS = [
    _host_function("qmt_http_request", True, lambda h, b: h.http_request(b), b""),
    _host_function("qmt_http_stream_open", True, lambda h, b: h.http_stream_open(b), _REFUSED_STREAM),
    _host_function("qmt_http_stream_next", True, lambda h, b: h.http_stream_next(int(b)), b""),
    _host_function("qmt_http_stream_close", False, lambda h, b: h.http_stream_close(int(b)), b""),
    _host_function("qmt_yield_chunk", False, lambda h, b: h.yield_chunk(b), b""),
    _host_function("qmt_log", False, lambda h, b: h.log(b), b""),
]


def plugin_environment() -> dict[str, str]:
    """The Extism config map QueryMT gives plugins: the whole environment + registry data (2.5)."""
    return {**os.environ, "PROVIDERS_REGISTRY_DATA": _EMPTY_REGISTRY_DATA}


def read_only_mounts(allowed_paths: dict[str, str]) -> dict[str, str]:
    """The manifest's ``allowed_paths`` for {host dir: guest path}: every directory mounted read-only.

    QueryMT grants no paths (wire spec 4); this is querymt-jupyter's extension, set from the provider's
    ``allowed_paths`` key. The Extism runtime (checked with extism-sys 1.41) opens a host directory whose
    key starts with ``ro:`` read-only: the guest can open files for reading, while opening one for writing
    (new or existing) fails with EPERM. Without the prefix the guest could create and overwrite files.
    """
    return {f"ro:{host}": guest for host, guest in allowed_paths.items()}


def wasm_exports(module: bytes) -> frozenset[str]:
    """Names of the function exports of a Wasm module, read from its export section."""
    if module[:4] != b"\0asm":
        raise ValueError("not a WebAssembly module (bad magic number)")
    pos, names = 8, set()
    while pos < len(module):
        section, pos = module[pos], pos + 1
        size, pos = _leb128(module, pos)
        if section == 7:
            count, p = _leb128(module, pos)
            for _ in range(count):
                length, p = _leb128(module, p)
                name = module[p : p + length].decode()
                kind = module[p + length]
                _, p = _leb128(module, p + length + 1)
                if kind == 0:
                    names.add(name)
        pos += size
    return frozenset(names)


def _leb128(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


class WasmPlugin:
    """One Extism instance of a QueryMT Wasm plugin (calls must not overlap)."""

    kind = "wasm"
    thread_safe = False

    def __init__(
        self,
        path: Path,
        module: bytes,
        host: HostCalls,
        *,
        allowed_hosts: list[str] | None,
        allowed_paths: dict[str, str] | None = None,
    ) -> None:
        manifest: dict[str, Any] = {"wasm": [{"data": module}], "config": plugin_environment()}
        if allowed_hosts is not None:
            manifest["allowed_hosts"] = allowed_hosts
        if allowed_paths:
            manifest["allowed_paths"] = read_only_mounts(allowed_paths)
        self.path = path
        self.exports = wasm_exports(module)
        self.host = host
        self._plugin = extism.Plugin(manifest, wasi=True, functions=HOST_FUNCTIONS)
        self._ptr = self._plugin.plugin
        self._context = _ffi.new_handle(host)  # kept alive as long as the instance
        self._names: dict[str, bytes] = {}

    def call(self, op: str, data: bytes) -> bytes:
        name = self._names.get(op)
        if name is None:
            name = self._names[op] = op.encode()
        rc = _lib.extism_plugin_call_with_host_context(self._ptr, name, data, len(data), self._context)
        if rc != 0:
            error = _lib.extism_plugin_error(self._ptr)
            message = _ffi.string(error) if error != _ffi.NULL else f"exit code {rc}".encode()
            raise CallFailed(rc, message)
        length = _lib.extism_plugin_output_length(self._ptr)
        return _ffi.buffer(_lib.extism_plugin_output_data(self._ptr), length)[:] if length else b""

    def bare_call(self, op: str, data: bytes) -> Callable[[], bytes]:
        """Through extism's Python SDK, on a second instance of the same module (this one keeps its state)."""
        manifest = {"wasm": [{"path": str(self.path)}], "config": plugin_environment()}
        plugin = extism.Plugin(manifest, wasi=True, functions=HOST_FUNCTIONS)
        host = self.host
        return lambda: plugin.call(op, data, host_context=host)

    def close(self) -> None:
        if self._plugin is not None:
            self._plugin.__del__()
            self._plugin = None

