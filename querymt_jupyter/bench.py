"""How much the host adds to a plugin call: the registry's paths next to the raw runtime call.

For one export and one input, four ways to make the same call are timed in interleaved rounds (so drift
hits all of them alike), with the garbage collector off, and reported as medians:

- ``raw``: the runtime alone — ``extism.Plugin.call`` for Wasm, one ctypes ``qmt_call`` (+ copy + free)
  for native;
- ``dispatch``: ``PluginFactory.call`` with the same bytes (locking, error mapping, host bookkeeping);
- ``provider``: ``Provider.chat`` from a Python message list (adds encoding the request and decoding the
  answer — the whole cost a user pays).

    python -m querymt_jupyter.bench            # echo-native and echo-wasm, chat
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from . import wire
from .factory import PluginFactory
from .loaders.wasm import HOST_FUNCTIONS, plugin_environment
from .provider import Provider
from .registry import PluginRegistry

Call = Callable[[], Any]


def raw_call(factory: PluginFactory, op: str, data: bytes) -> Call:
    """The bare runtime call of ``op`` on a fresh instance of the same plugin file."""
    if factory.plugin_type == "wasm":
        import extism

        manifest = {"wasm": [{"path": factory.path}], "config": plugin_environment()}
        plugin = extism.Plugin(manifest, wasi=True, functions=HOST_FUNCTIONS)
        host = factory.host
        return lambda: plugin.call(op, data, host_context=host)
    lib = factory.instance._lib  # the loaded library itself: no wrapper in the way
    out, size = ctypes.c_void_p(), ctypes.c_size_t()
    out_ref, size_ref, name = ctypes.byref(out), ctypes.byref(size), op.encode()

    def call() -> bytes:
        lib.qmt_call(name, data, len(data), out_ref, size_ref)
        result = ctypes.string_at(out.value, size.value)
        lib.qmt_free(out.value, size.value)
        return result

    return call


def time_calls(calls: dict[str, Call], *, rounds: int = 30, batch: int = 200) -> dict[str, float]:
    """Median microseconds per call for each entry, measured in interleaved batches."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        for _ in range(batch):
            call()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter_ns()
                for _ in range(batch):
                    call()
                samples[name].append((time.perf_counter_ns() - start) / batch / 1000)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


def chat_overhead(provider: Provider, prompt: str = "hello there, how are you?") -> dict[str, float]:
    """raw / dispatch / provider medians (µs) for one chat on ``provider``."""
    messages = [{"role": "user", "content": prompt}]
    _, wire_messages = wire.split_messages(messages)
    data = wire.chat_request(wire.dumps(provider.cfg), wire_messages, None)
    factory = provider.factory
    return time_calls(
        {
            "raw": raw_call(factory, "chat", data),
            "dispatch": lambda: factory.call("chat", data, clear_cancel=True),
            "provider": lambda: provider.chat(messages),
        }
    )


def main() -> None:
    with PluginRegistry.default() as registry:
        print(f"{'plugin':<12} {'raw µs':>8} {'dispatch µs':>12} {'(+%)':>7} {'provider.chat µs':>17} {'(+%)':>7}")
        for name in ("echo-native", "echo-wasm"):
            t = chat_overhead(registry.builder(name).build())
            dispatch, full = (100 * (t[k] / t["raw"] - 1) for k in ("dispatch", "provider"))
            print(f"{name:<12} {t['raw']:8.2f} {t['dispatch']:12.2f} {dispatch:+6.1f}% {t['provider']:17.2f} {full:+6.1f}%")


if __name__ == "__main__":
    main()
