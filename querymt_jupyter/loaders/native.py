"""Native plugins: shared libraries that speak the querymt-jupyter C ABI v1, loaded with ctypes.

A native plugin answers the same operations with the same bytes as its Wasm build; only the crossing
differs. ``qmt_call`` runs one operation, and the plugin reaches the host through the callbacks of the
``struct qmt_host_v1`` it received in ``qmt_init``; each callback forwards to the ``HostCalls`` object.

A library has one set of globals, and ``dlopen`` hands back the already-loaded library for a file it has
seen. So a second live instance of the same file — or a file rebuilt at the same path — is loaded from a
private copy; otherwise two providers would share one host pointer (and so one allow-list).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import tempfile
import threading
from ctypes import byref, c_size_t, c_void_p, string_at
from pathlib import Path
from typing import TYPE_CHECKING

from querymt_jupyter.errors import AbiMismatchError, PluginCallError, PluginLoadError
from querymt_jupyter.loaders import _native_abi as abi
from querymt_jupyter.loaders.base import CallFailed, HostCalls, HostRefusal

if TYPE_CHECKING:
    from collections.abc import Callable

    OutPtr = ctypes._Pointer[c_void_p]
    OutLen = ctypes._Pointer[c_size_t]

__all__ = ["NativePlugin", "load_native"]


def load_native(path: Path, host: HostCalls, *, plugin: str) -> NativePlugin:
    """Load the native plugin at ``path``, with ``host`` answering its host-function callbacks.

    Raises ``PluginLoadError`` (missing file, dlopen failure, ``qmt_init`` failure) or
    ``AbiMismatchError`` (not a querymt-jupyter ABI v1 library).
    """
    path = Path(path)
    if not path.is_file():
        raise PluginLoadError(plugin, "file not found", path=str(path))
    lib, release = _open_library(path, plugin)
    try:
        _check_abi(lib, plugin, path)
        abi.declare(lib)
        exports = _read_exports(lib, plugin, path)
        bridge = _init(lib, host, plugin, path)
    except BaseException:
        release()
        raise
    return NativePlugin(plugin=plugin, path=path, lib=lib, bridge=bridge, exports=exports, release=release)


class NativePlugin:
    """One loaded native plugin (a ``PluginInstance``)."""

    kind = "native"

    def __init__(
        self,
        *,
        plugin: str,
        path: Path,
        lib: ctypes.CDLL,
        bridge: _HostBridge,
        exports: list[str],
        release: Callable[[], None],
    ) -> None:
        self.plugin, self.path = plugin, path
        self.exports = frozenset(name for name in exports if not name.startswith("qmt:"))
        self.thread_safe = "qmt:thread_safe" in exports
        self._lib: ctypes.CDLL | None = lib
        self._bridge, self._release = bridge, release  # the bridge must outlive every call
        self._call: Callable[..., int] = lib.qmt_call
        self._free = lib.qmt_free
        self._slots = threading.local()

    def call(self, op: str, data: bytes) -> bytes:
        """Run one operation; raise ``CallFailed`` on a non-zero code.

        The hot path, benchmarked against a bare ctypes call: the out-parameters and pointers to them
        are made once per thread (a thread-safe plugin may be called from several at once) instead of
        once per call, which saves two allocations and two byref() calls (about 0.3 µs).
        """
        try:
            out, size, out_ptr, size_ptr = self._slots.out
        except AttributeError:
            out, size, out_ptr, size_ptr = self._slots.out = _out_slots()
        rc = self._call(op.encode(), data, len(data), out_ptr, size_ptr)
        address = out.value
        if address:
            result = string_at(address, size.value)
            self._free(address, size.value)
        else:
            result = b""
        if rc:
            raise CallFailed(rc, result)
        return result

    def bare_call(self, op: str, data: bytes) -> Callable[[], bytes]:
        """One ``qmt_call`` through ctypes, its answer copied and freed: no slots, no error check."""
        lib = self._lib
        assert lib is not None, "the plugin was closed"
        out, size = c_void_p(), c_size_t()
        out_ref, size_ref, name = ctypes.byref(out), ctypes.byref(size), op.encode()

        def call() -> bytes:
            lib.qmt_call(name, data, len(data), out_ref, size_ref)
            result = string_at(out.value, size.value)
            lib.qmt_free(out.value, size.value)
            return result

        return call

    def close(self) -> None:
        """Forget the library. It stays mapped (unloading code a plugin might still point into is not
        safe), but its file may be loaded afresh by the next ``load_native``."""
        if self._lib is not None:
            self._lib = None
            self._call = self._closed
            self._release()

    def _closed(self, op: bytes, *_: object) -> int:
        raise PluginCallError.from_text(self.plugin, op.decode(), "the plugin was closed")

    def __repr__(self) -> str:
        return f"<NativePlugin {self.plugin!r} {self.path}>"


def _out_slots() -> tuple[c_void_p, c_size_t, OutPtr, OutLen]:
    out, size = c_void_p(), c_size_t()
    return out, size, ctypes.pointer(out), ctypes.pointer(size)


# ---- loading ------------------------------------------------------------------------------------

_lock = threading.Lock()
_loaded_directly: set[Path] = set()  # files dlopen'd in place by this process


def _open_library(path: Path, plugin: str) -> tuple[ctypes.CDLL, Callable[[], None]]:
    """dlopen ``path`` itself the first time; afterwards a private copy, so every load starts from
    fresh globals (``qmt_init`` once, empty plugin state) even though ctypes never unloads a library.
    Returns the library and the function that releases it."""
    real = path.resolve()
    with _lock:
        first = real not in _loaded_directly
        _loaded_directly.add(real)
    if first:
        return _dlopen(real, plugin, path), lambda: None
    return _open_private_copy(real, plugin, path)


def _open_private_copy(real: Path, plugin: str, path: Path) -> tuple[ctypes.CDLL, Callable[[], None]]:
    # Beside the original first: a temp dir may be mounted noexec, which dlopen cannot map.
    try:
        folder = Path(tempfile.mkdtemp(prefix=".qmt-copy-", dir=real.parent))
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="qmt-native-"))
    copy = folder / real.name

    def release() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    try:
        shutil.copyfile(real, copy)
        lib = _dlopen(copy, plugin, path)
    except BaseException:
        release()
        raise
    if os.name != "nt":
        release()  # the mapping outlives the file on POSIX; Windows keeps it until close()
    return lib, release


def _dlopen(file: Path, plugin: str, path: Path) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(str(file))
    except OSError as exc:
        # dlopen names the file it mapped, which may be our private copy: say the user's file instead
        reason = str(exc).replace(str(file), str(path))
        raise PluginLoadError(plugin, f"cannot load the shared library: {reason}", path=str(path)) from exc


def _check_abi(lib: ctypes.CDLL, plugin: str, path: Path) -> None:
    missing = next((name for name in abi.REQUIRED_SYMBOLS if not hasattr(lib, name)), None)
    if missing:
        message = f"not a querymt-jupyter native plugin: symbol {missing} missing"
        rust = next((name for name in abi.RUST_PLUGIN_SYMBOLS if hasattr(lib, name)), None)
        if rust:
            message += (
                f"; it exports {rust}, so it is a QueryMT Rust native plugin, which cannot be loaded from"
                " Python — rebuild it against querymt_plugin.h"
            )
        raise AbiMismatchError(plugin, message, path=str(path))
    lib.qmt_abi_version.restype = ctypes.c_uint32
    version = lib.qmt_abi_version()
    if version != abi.ABI_VERSION:
        raise AbiMismatchError(
            plugin,
            f"native plugin ABI version {version}, but this host speaks version {abi.ABI_VERSION}",
            path=str(path),
            hint="rebuild the plugin against this version's querymt_plugin.h",
        )
    missing = next((name for name in ("qmt_exports", "qmt_init", "qmt_free") if not hasattr(lib, name)), None)
    if missing:
        raise AbiMismatchError(plugin, f"incomplete native plugin: symbol {missing} missing", path=str(path))


def _init(lib: ctypes.CDLL, host: HostCalls, plugin: str, path: Path) -> _HostBridge:
    bridge = _HostBridge(host)
    rc = lib.qmt_init(byref(bridge.struct))
    if rc != 0:
        raise PluginLoadError(plugin, f"qmt_init failed with code {rc}", path=str(path))
    return bridge


def _read_exports(lib: ctypes.CDLL, plugin: str, path: Path) -> list[str]:
    raw = lib.qmt_exports()
    try:
        names = json.loads(raw or b"null")
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise AbiMismatchError(plugin, f"qmt_exports() is not a JSON array of names: {raw!r}", path=str(path))
    return names


# ---- host callbacks -----------------------------------------------------------------------------


def _read(address: int | None, size: int) -> bytes:
    return string_at(address, size) if address and size else b""


def _error_text(exc: BaseException) -> bytes:
    text = str(exc) if isinstance(exc, HostRefusal) else f"{type(exc).__name__}: {exc}"
    return (text or type(exc).__name__).encode("utf-8", "replace")


class _HostBridge:
    """The ``qmt_host_v1`` callbacks of one plugin instance, forwarding to a ``HostCalls`` object.

    An exception must never escape a ctypes callback (ctypes would print it and return 0, "success"):
    each becomes a non-zero result with its text in ``*out``, which the plugin reports as its failure.
    Buffers lent to the plugin stay referenced in ``_lent`` until it calls ``free_buf``.
    """

    def __init__(self, host: HostCalls) -> None:
        self._host = host
        self._lent: dict[int, ctypes.Array[ctypes.c_char]] = {}
        self._callbacks = (
            abi.HostBytesFn(self._http_request),
            abi.HostBytesFn(self._http_stream_open),
            abi.HostBytesFn(self._http_stream_next),
            abi.HostSinkFn(self._http_stream_close),
            abi.HostSinkFn(self._yield_chunk),
            abi.HostSinkFn(self._log),
            abi.HostFreeFn(self._free_buf),
        )
        self.struct = abi.QmtHostV1(abi.ABI_VERSION, None, *self._callbacks)

    def _http_request(self, _ctx: int | None, request: int, size: int, out: OutPtr, out_len: OutLen) -> int:
        return self._answer(lambda: self._host.http_request(_read(request, size)), out, out_len)

    def _http_stream_open(
        self, _ctx: int | None, request: int, size: int, out: OutPtr, out_len: OutLen
    ) -> int:
        return self._answer(lambda: self._host.http_stream_open(_read(request, size)), out, out_len)

    def _http_stream_next(
        self, _ctx: int | None, stream_id: int, size: int, out: OutPtr, out_len: OutLen
    ) -> int:
        return self._answer(lambda: self._host.http_stream_next(int(_read(stream_id, size))), out, out_len)

    def _http_stream_close(self, _ctx: int | None, stream_id: int, size: int) -> int:
        return self._sink(lambda: self._host.http_stream_close(int(_read(stream_id, size))))

    def _yield_chunk(self, _ctx: int | None, chunk: int, size: int) -> int:
        return self._sink(lambda: self._host.yield_chunk(_read(chunk, size)))

    def _log(self, _ctx: int | None, record: int, size: int) -> int:
        return self._sink(lambda: self._host.log(_read(record, size)))

    def _free_buf(self, _ctx: int | None, address: int, _size: int) -> None:
        self._lent.pop(address, None)

    def _answer(self, produce: Callable[[], bytes], out: OutPtr, out_len: OutLen) -> int:
        try:
            data, rc = bytes(produce()), 0
        except BaseException as exc:  # noqa: BLE001 - nothing may cross back into C
            data, rc = _error_text(exc), 1
        self._lend(data, out, out_len)
        return rc

    def _sink(self, action: Callable[[], None]) -> int:
        try:
            action()
        except BaseException:  # noqa: BLE001 - nothing may cross back into C
            return 1
        return 0

    def _lend(self, data: bytes, out: OutPtr, out_len: OutLen) -> None:
        if not data:
            out[0], out_len[0] = None, 0
            return
        buffer = ctypes.create_string_buffer(data, len(data))
        address = ctypes.addressof(buffer)
        self._lent[address] = buffer
        out[0], out_len[0] = address, len(data)
