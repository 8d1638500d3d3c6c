"""The seam between the registry and the two plugin runtimes.

A loader turns a plugin file into a ``PluginInstance``: something that answers ``call(op, bytes)``
with the bytes of the Wasm export (or native operation) of that name. Everything above this seam —
config pruning, generation A/B flows, streaming, errors — is shared by Wasm and native plugins; the two
differ only in how bytes cross the boundary.

The plugin reaches back into the host through ``HostCalls`` (wire spec section 8): the six host
functions, with their bytes already copied out of plugin memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class CallFailed(Exception):
    """An operation returned a non-zero code; ``message`` is its raw error text/JSON.

    Raised by loaders only; the registry decodes it (errors.decode_plugin_error).
    """

    def __init__(self, code: int, message: bytes) -> None:
        super().__init__(message.decode("utf-8", "replace"))
        self.code, self.message = code, message


class HostRefusal(Exception):
    """Raised by a HostCalls method to refuse a call (blocked host, unknown stream id...).

    Native loaders report it to the plugin as a non-zero callback result carrying the text; the Wasm
    loader cannot trap from Python, so it answers in data and the host raises after the call returns.
    """


class HostCalls(Protocol):
    """The six ``extism:host/user`` functions, seen from the host; bytes as on the wire."""

    def http_request(self, request: bytes) -> bytes: ...
    def http_stream_open(self, request: bytes) -> bytes: ...
    def http_stream_next(self, stream_id: int) -> bytes: ...  # b"" at end of stream
    def http_stream_close(self, stream_id: int) -> None: ...
    def yield_chunk(self, chunk: bytes) -> None: ...
    def log(self, record: bytes) -> None: ...
    def record_error(self, error: Exception) -> None: ...  # raised by the host after the call returns


class PluginInstance(Protocol):
    """One loaded plugin (one Wasm instance, or one dlopen'd library)."""

    kind: str  # "wasm" or "native"
    path: Path
    exports: frozenset[str]  # operation names (wire spec section 6)
    thread_safe: bool  # may calls overlap? (never for Wasm)

    def call(self, op: str, data: bytes) -> bytes:
        """Run one operation; raise CallFailed on a non-zero code."""
        ...

    def bare_call(self, op: str, data: bytes) -> Callable[[], bytes]:
        """``op`` on ``data`` as the runtime alone makes it (extism's own ``Plugin.call``, one ctypes
        ``qmt_call``), nothing of ours around it: what the benchmark compares our call path with."""
        ...

    def close(self) -> None: ...
