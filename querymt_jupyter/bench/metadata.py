"""Where and how a benchmark ran: the machine, the versions, the method — a result's provenance."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["collect"]

_PACKAGES = ("querymt-jupyter", "extism", "extism-sys", "httpx", "numpy", "pandas", "matplotlib")


def collect(method: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a run; ``method`` describes how it measured."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": _machine(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "extism": _extism_runtime(),
        "zig": _version("ziglang"),
        "packages": {name: _version(name) for name in _PACKAGES},
        "method": method,
    }


def _machine() -> dict[str, Any]:
    cpuinfo = _cpuinfo()
    return {
        "system": platform.platform(),
        "arch": platform.machine(),
        "cpu": cpuinfo.get("model name") or platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        # Under a hypervisor, waking a thread on another vCPU can cost ~10 µs: it shows in Wasm calls.
        "virtualised": "hypervisor" in cpuinfo.get("flags", "").split(),
        "load_average": _load_average(),  # was the machine idle? (1, 5, 15 min; None off Unix)
    }


def _load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def _extism_runtime() -> str:
    """The libextism runtime the Python SDK drives (its version differs from the SDK's)."""
    from extism.extism import _ffi, _lib

    return _ffi.string(_lib.extism_version()).decode()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
