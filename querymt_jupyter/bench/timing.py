"""The measuring loop: warm-up, interleaved rounds, ``perf_counter_ns`` per call, GC off, hooks off.

Subjects that are compared with each other (the same operation and payload on two providers, or the
three layers of one call) form a group. A group is timed in rounds; each round visits every subject in
turn, in alternating order (A B, then B A), so slow drift of the machine — frequency, a noisy neighbour —
hits all of them alike. Within a round a subject makes one untimed call (the previous subject left the
caches to itself), then its timed calls, each after the same short busy pause and each timed alone, so
the samples are per call. (Threaded subjects — HTTP-bound, milliseconds long — need no pause.)
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import provider as provider_module

__all__ = ["Sample", "Subject", "detached_hooks", "measure", "timer_overhead_ns"]

ROUNDS = 10  # at most; fewer when repeat is smaller
# A busy pause before each timed call, so every call starts from the same state — as a call from a
# notebook does. Back to back, Extism calls find its timer thread still awake and run faster than any
# call made after other work (see the package docstring); a mix of both makes medians unstable.
PAUSE_NS = 50_000


@dataclass(frozen=True)
class Subject:
    """One thing to time: ``call`` is one operation of one provider at one payload size.

    ``after`` receives what a call returned, outside the timing (``load`` closes the factory it made).
    ``threads`` > 1 makes that many threads call at once; each call is still timed alone.
    """

    provider: str
    plugin_type: str
    op: str
    size: int
    call: Callable[[], Any]
    threads: int = 1
    after: Callable[[Any], None] | None = None

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.provider, self.plugin_type, self.op, self.size, self.threads)


@dataclass(frozen=True)
class Sample:
    subject: Subject
    round: int
    ns: int


@contextmanager
def detached_hooks() -> Iterator[None]:
    """No ``provider.on_call`` hook (the prompt log, a widget) while the benchmark runs.

    With a hook attached, every Provider call builds a CallRecord and the prompt log writes an SQLite
    row: host bookkeeping, not the plugin call being measured, and thousands of benchmark rows in a
    person's log. ``Provider`` skips all of it when no hook exists, so the hooks leave for the run and
    come back after (ahead of any added meanwhile).
    """
    hooks = provider_module._hooks
    saved = list(hooks)
    hooks.clear()
    try:
        yield
    finally:
        hooks[:0] = saved


@contextmanager
def gc_disabled() -> Iterator[None]:
    """A collection in the middle of a timed call would land on whichever subject was running."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def timer_overhead_ns(calls: int = 10_000) -> int:
    """The median cost of one empty timed call (two clock reads and a call): part of every sample."""
    clock, empty = time.perf_counter_ns, _nothing
    samples = []
    for _ in range(calls):
        start = clock()
        empty()
        samples.append(clock() - start)
    samples.sort()
    return samples[len(samples) // 2]


def _nothing() -> None:
    return None


def measure(
    group: Sequence[Subject], repeat: int, *, warmup: int, on_block: Callable[[int], None] | None = None
) -> list[Sample]:
    """``repeat`` timed calls of each subject of ``group``, in interleaved rounds (GC off)."""
    rounds = min(ROUNDS, repeat)
    quotas = [repeat // rounds + (r < repeat % rounds) for r in range(rounds)]
    for subject in group:
        _timed(subject, max(warmup, subject.threads))  # threaded: the instance pool fills up here
    samples: list[Sample] = []
    with gc_disabled():
        for r, quota in enumerate(quotas):
            for subject in group if r % 2 == 0 else reversed(group):
                _timed(subject, subject.threads)  # untimed: back in the caches after the last subject
                samples += [Sample(subject, r, ns) for ns in _timed(subject, quota)]
                if on_block is not None:
                    on_block(quota)
    return samples


def _timed(subject: Subject, calls: int) -> list[int]:
    if subject.threads == 1:
        return _timed_loop(subject, calls)
    return _timed_threads(subject, calls)


def _timed_loop(subject: Subject, calls: int) -> list[int]:
    clock, call, after = time.perf_counter_ns, subject.call, subject.after
    durations = []
    for _ in range(calls):
        settle = clock() + PAUSE_NS
        while clock() < settle:
            pass
        start = clock()
        result = call()
        durations.append(clock() - start)
        if after is not None:
            after(result)
    return durations


def _timed_threads(subject: Subject, calls: int) -> list[int]:
    """``calls`` timed calls shared by ``subject.threads`` threads that start together."""
    remaining = iter(range(calls))  # next() on a range iterator is atomic under the GIL
    start_line = threading.Barrier(subject.threads)
    per_thread: list[list[int]] = [[] for _ in range(subject.threads)]
    errors: list[BaseException] = []

    def work(durations: list[int]) -> None:
        clock, call, after = time.perf_counter_ns, subject.call, subject.after
        try:
            start_line.wait()
            for _ in remaining:
                start = clock()
                result = call()
                durations.append(clock() - start)
                if after is not None:
                    after(result)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the measuring thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(d,), name=f"querymt-bench-{i}") for i, d in enumerate(per_thread)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return [ns for durations in per_thread for ns in durations]
