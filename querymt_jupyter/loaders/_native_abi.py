"""Raw ctypes declarations of the querymt-jupyter native plugin ABI v1 (see native-abi.md).

This module only mirrors ``sdk/querymt_plugin.h``; the idiomatic loader is ``native.py``.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_char_p, c_int32, c_size_t, c_uint32, c_void_p

ABI_VERSION = 1
"""The value of ``QMT_ABI_VERSION`` in querymt_plugin.h and of ``qmt_abi_version()``."""

REQUIRED_SYMBOLS = ("qmt_abi_version", "qmt_call")
"""Without these a library is not a querymt-jupyter plugin at all."""

RUST_PLUGIN_SYMBOLS = ("plugin_factory", "plugin_http_factory")
"""Constructors exported by QueryMT's Rust native plugins (wire spec section 12)."""

# Callbacks of struct qmt_host_v1. Pointers arrive as plain ints (c_void_p), which is the cheapest form
# to hand to ctypes.string_at.
OutPtr = POINTER(c_void_p)
OutLen = POINTER(c_size_t)
HostBytesFn = ctypes.CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t, OutPtr, OutLen)
HostSinkFn = ctypes.CFUNCTYPE(c_int32, c_void_p, c_void_p, c_size_t)
HostFreeFn = ctypes.CFUNCTYPE(None, c_void_p, c_void_p, c_size_t)


class QmtHostV1(ctypes.Structure):
    """``struct qmt_host_v1``; field order and types must match the header exactly."""

    _fields_ = [
        ("abi_version", c_uint32),
        ("ctx", c_void_p),
        ("http_request", HostBytesFn),
        ("http_stream_open", HostBytesFn),
        ("http_stream_next", HostBytesFn),
        ("http_stream_close", HostSinkFn),
        ("yield_chunk", HostSinkFn),
        ("log", HostSinkFn),
        ("free_buf", HostFreeFn),
    ]


def declare(lib: ctypes.CDLL) -> None:
    """Set argtypes/restype once, so each call skips ctypes' argument guessing.

    ``in`` is declared ``c_char_p`` so a ``bytes`` argument is passed by pointer, without a copy.
    """
    lib.qmt_abi_version.argtypes = []
    lib.qmt_abi_version.restype = c_uint32
    lib.qmt_exports.argtypes = []
    lib.qmt_exports.restype = c_char_p
    lib.qmt_init.argtypes = [POINTER(QmtHostV1)]
    lib.qmt_init.restype = c_int32
    lib.qmt_call.argtypes = [c_char_p, c_char_p, c_size_t, OutPtr, OutLen]
    lib.qmt_call.restype = c_int32
    lib.qmt_free.argtypes = [c_void_p, c_size_t]
    lib.qmt_free.restype = None
