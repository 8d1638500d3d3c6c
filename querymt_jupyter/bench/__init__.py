"""Native versus Wasm: what a plugin call costs, measured the way a performance engineer would.

    from querymt_jupyter import bench
    result = bench.run(("echo-native", "echo-wasm"), ops=("noop", "chat", "embed"), sizes=(16, 1024))
    result.summary        # one row per provider × op × size × threads: n, median … min (µs), ops/s, ratio
    result.samples        # every timed call
    result.overhead       # the host's cost over the raw runtime call (op "dispatch")
    result.plot()

Operations (``ops.py``, ``http.py``): ``noop`` (the bare boundary), ``echo_bytes`` (payload scaling),
``embed`` (compute-bound), ``chat``, ``complete`` (tokens generated per second, for language models
such as the bundled tinyllm), ``dispatch`` (raw runtime call vs ``PluginFactory.call`` vs
``Provider.chat``), ``load`` (load and instantiate) and ``http-chat`` (end to end through the openai
plugin against a loopback server, with 1..N threads).

Method (``timing.py``): a warm-up, then interleaved rounds (A B, B A, ...) so drift hits every subject
alike; each call timed alone with ``time.perf_counter_ns`` after the same 50 µs busy pause; the garbage
collector off and the call hooks (the prompt log) detached while timing; a fixed number of calls per
subject; a tqdm progress bar.

One thing every Wasm figure carries (Extism 1.x): each ``extism_plugin_call`` sends a start and a stop
message to Extism's process-wide timer thread, which spins while a call runs and sleeps between calls. A
call made more than a few µs after the previous one — any call outside a tight loop — must wake it. On a
virtual machine, waking a thread on another vCPU is a hypervisor exit: ~10 µs for the caller, and the
Python code right around the call then runs 2-3× slower than it does elsewhere. So an isolated Wasm call
costs about twice the same call in a tight loop, and Python work between two Wasm calls makes the pair
slower than the sum of its parts. Every call timed here is an isolated one (the pause), as in a notebook.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from ..registry import PluginRegistry
from . import http, metadata, stats
from .ops import OPS, Target, groups
from .result import BenchResult
from .timing import PAUSE_NS, ROUNDS, Sample, Subject, detached_hooks, measure, timer_overhead_ns

__all__ = ["DEFAULT_OPS", "DEFAULT_PROVIDERS", "DEFAULT_SIZES", "OPS", "BenchResult", "run"]

DEFAULT_PROVIDERS = ("echo-native", "echo-wasm")
DEFAULT_OPS = ("chat", "embed")
DEFAULT_SIZES = (16, 1024, 65536, 1048576)
DEFAULT_REPEAT = 100
DEFAULT_THREADS = (1, 2, 4, 8)
DEFAULT_TOKENS = 128  # tokens each ``complete`` call generates: fits the bundled model's context of 256
MAX_WARMUP = 20


def run(
    providers: Sequence[str] = DEFAULT_PROVIDERS,
    ops: Sequence[str] = DEFAULT_OPS,
    sizes: Sequence[int] = DEFAULT_SIZES,
    repeat: int = DEFAULT_REPEAT,
    registry: PluginRegistry | None = None,
    progress: bool = True,
    threads: Sequence[int] = DEFAULT_THREADS,
    tokens: int = DEFAULT_TOKENS,
) -> BenchResult:
    """Time ``ops`` on ``providers`` at each payload size (bytes), ``repeat`` calls per combination.

    ``registry`` defaults to a fresh one with the bundled providers (closed afterwards). ``threads``
    applies to ``http-chat`` only, which runs at the smallest size; ``tokens`` to ``complete`` only, whose
size is the number of tokens each call generates. Providers lacking an export an operation needs are skipped; the
    result's ``metadata["skipped"]`` says which and why.
    """
    _check(ops, sizes, repeat, threads)
    if tokens < 1:
        raise ValueError(f"tokens must be at least 1, not {tokens}")
    warmup = min(max(2, repeat // 10), MAX_WARMUP)
    with ExitStack() as stack:
        registry = registry or stack.enter_context(PluginRegistry.default())
        targets = [Target.build(registry, name) for name in providers]
        plan, skipped = _plan(stack, ops, targets, sizes, threads, tokens, registry)
        bar = stack.enter_context(_progress(plan, repeat, progress))
        with detached_hooks():
            timer_ns = timer_overhead_ns()
            samples = [s for group in plan for s in measure(group, repeat, warmup=warmup, on_block=bar.update)]
    method = _method(repeat, warmup, timer_ns, threads, skipped)
    method["providers"] = {
        t.name: {"plugin_type": t.plugin_type, "generation": t.factory.generation, "path": t.factory.path}
        for t in targets
    }
    frame = _frame(samples)
    return BenchResult(stats.summarize(frame), frame, metadata.collect(method))


def _check(ops: Sequence[str], sizes: Sequence[int], repeat: int, threads: Sequence[int]) -> None:
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown benchmark operation(s) {', '.join(unknown)}; choose from {', '.join(OPS)}")
    if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"sizes must be positive byte counts, not {list(sizes)}")
    if repeat < 1 or not threads or any(n < 1 for n in threads):
        raise ValueError("repeat and every thread count must be at least 1")


def _plan(
    stack: ExitStack,
    ops: Sequence[str],
    targets: list[Target],
    sizes: Sequence[int],
    threads: Sequence[int],
    tokens: int,
    registry: PluginRegistry,
) -> tuple[list[list[Subject]], list[str]]:
    """Every group to time, in the order of ``ops``, and the (target, op) pairs skipped."""
    plan: list[list[Subject]] = []
    skipped: list[str] = []
    for op in ops:
        if op == "http-chat":
            kinds = list(dict.fromkeys(t.plugin_type for t in targets))
            plan += stack.enter_context(http.http_groups(kinds, min(sizes), threads))
            continue
        for group, skips in groups(op, targets, (tokens,) if op == "complete" else sizes, registry):
            plan += [group] if group else []
            skipped += [s for s in skips if s not in skipped]
    return plan, skipped


def _progress(plan: list[list[Subject]], repeat: int, enabled: bool) -> tqdm:
    total = sum(len(group) for group in plan) * repeat
    return tqdm(total=total, disable=not enabled, unit="call", desc="querymt bench", leave=False)


def _method(repeat: int, warmup: int, timer_ns: int, threads: Sequence[int], skipped: list[str]) -> dict[str, Any]:
    return {
        "clock": "time.perf_counter_ns, each call timed alone",
        "pause_us": PAUSE_NS / 1000,  # busy wait before each single-thread timed call
        "repeat": repeat,
        "warmup": warmup,
        "rounds": min(ROUNDS, repeat),
        "order": "interleaved rounds, alternating A B / B A",
        "gc": "disabled while timing",
        "hooks": "provider.on_call hooks detached for the run",
        "timer_overhead_ns": timer_ns,
        "bootstrap": stats.BOOTSTRAP,
        "http": {"chunks": http.CHUNKS, "chunk_delay_s": http.CHUNK_DELAY, "threads": list(threads)},
        "skipped": skipped,
    }


def _frame(samples: list[Sample]) -> pd.DataFrame:
    frame = pd.DataFrame(
        [(*s.subject.key, s.round, s.ns) for s in samples], columns=[*stats.KEYS, "round", "ns"]
    ).astype({"size": "int64", "threads": "int64", "round": "int64", "ns": "int64"})
    frame["us"] = frame["ns"] / 1000
    return frame
