"""Asking many questions at once: a thread pool over built providers, each call retried by one policy.

A plugin call spends its time waiting on HTTP (or inside a native plugin's C code), with the GIL
released, so threads overlap calls; a Wasm plugin gets one instance per concurrent call from its pool
(factory.py). The same function answers a chunk inside a Dask worker (cluster.py).
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from ..errors import (
    AuthError,
    HostBlockedError,
    HttpStatusError,
    PluginLoadError,
    ProviderError,
    RateLimitedError,
    TransportError,
)
from ..provider import Provider
from .store import RowResult

__all__ = ["Answers", "Question", "RetryPolicy", "fatal", "retryable"]

_TRANSIENT_KINDS = frozenset({"rate_limited", "unknown_transient"})  # host.classify_chat_status


@dataclass(frozen=True)
class Question:
    key: str
    prompt: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, {"role": "user", "content": self.prompt}]


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after a transient failure, ``base_delay * 2**n`` apart (with jitter),
    or as long as the server's Retry-After says; never longer than ``max_delay``."""

    retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, error: BaseException) -> float:
        told = getattr(error, "retry_after_secs", None)
        if isinstance(told, (int, float)) and told >= 0:
            return min(float(told), self.max_delay)
        backoff = self.base_delay * 2 ** (attempt - 1)
        return min(backoff * random.uniform(0.8, 1.2), self.max_delay)  # jitter: rows retried together spread out


def retryable(error: BaseException) -> bool:
    """A failure another attempt may cure: rate limits, 408 and 5xx, a lost connection or a timeout."""
    if isinstance(error, (RateLimitedError, TransportError)):
        return True
    if isinstance(error, ProviderError):
        return error.kind in _TRANSIENT_KINDS
    if isinstance(error, HttpStatusError):
        status = error.status_code or 0
        return status in (408, 429) or 500 <= status <= 599
    return False


def fatal(error: BaseException) -> bool:
    """A failure every row would meet (a bad key, a host not allowed): it stops the batch, not one row."""
    return isinstance(error, (AuthError, HostBlockedError, PluginLoadError))


def ask(provider: Provider, question: Question, policy: RetryPolicy, stop: threading.Event) -> RowResult:
    """One question, retried while its failure is transient, the budget lasts and nobody asked to stop."""
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            reply = provider.chat(question.messages())
        except Exception as error:  # a row's failure is recorded in its row; the batch goes on
            if fatal(error):
                raise
            if attempt <= policy.retries and retryable(error) and not stop.wait(policy.delay(attempt, error)):
                continue
            return RowResult(question.key, attempts=attempt, error=f"{type(error).__name__}: {error}")
        usage = reply.usage
        return RowResult(
            question.key,
            text=reply.text or "",
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            latency_ms=(time.perf_counter() - started) * 1000,
            attempts=attempt,
        )


class Answers:
    """The results of ``jobs`` as they finish, ``(tag, result)``, at most ``concurrency`` calls at once.

    A job is ``(tag, provider, question)``; the tag comes back with its result. Each runs in a copy of the
    caller's context, so ``call_context(source="batch")`` tags its prompt-log row.
    """

    def __init__(self, jobs: Sequence[tuple[int, Provider, Question]], policy: RetryPolicy, concurrency: int) -> None:
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="querymt-batch")
        self._tags: dict[Future[RowResult], int] = {
            self._pool.submit(contextvars.copy_context().run, ask, provider, question, policy, self._stop): tag
            for tag, provider, question in jobs
        }
        self._pending: set[Future[RowResult]] = set(self._tags)

    def __iter__(self) -> Iterator[tuple[int, RowResult]]:
        while self._pending:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            for future in done:
                self._pending.discard(future)
                yield self._tags[future], future.result()  # a fatal error (see fatal()) raises here

    def close(self) -> list[tuple[int, RowResult]]:
        """Stop early: jobs not started are dropped and waiting retries given up, while the calls in flight
        finish (a plugin is never closed under a running call); their answers are returned, to be kept."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        finished = [f for f in self._pending if not f.cancelled() and f.exception() is None]
        self._pending.clear()
        return [(self._tags[f], f.result()) for f in finished]
