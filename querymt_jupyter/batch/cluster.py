"""The Dask engine: chunks of questions answered in worker processes, each with its own registry.

What crosses to a worker is data: the ``RegistryConfig`` (the parsed plugins.toml), a target's name,
model and parameters, the questions and the retry policy. The worker loads the plugins itself, once,
and keeps the registry for the chunks that follow; a plugin instance is never pickled. Results come
back a chunk at a time, as chunks finish, into the driver's progress bar and resume store.

``dask.distributed`` is an optional extra (``pip install querymt-jupyter[dask]``), imported here only.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import RegistryConfig
from ..errors import BatchError
from ..provider import call_context
from ..registry import PluginRegistry
from .runner import Answers, Question, RetryPolicy
from .store import RowResult

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Chunk", "answer_chunk", "chunk_size", "chunked", "ChunkAnswers", "close_default_client", "default_client", "worker_count"]


@dataclass(frozen=True)
class Chunk:
    """Questions for one target, answered together by one worker."""

    target: int  # index of the target in the batch
    name: str
    model: str | None
    parameters: Mapping[str, Any]
    questions: tuple[Question, ...]


_registries: dict[str, PluginRegistry] = {}  # per worker process: config digest -> its loaded registry
_local: Any = None  # (LocalCluster, Client) started by default_client()


def answer_chunk(config: RegistryConfig, chunk: Chunk, policy: RetryPolicy, concurrency: int) -> list[RowResult]:
    """Runs in a worker: answer every question of ``chunk`` with the worker's own registry."""
    registry = _worker_registry(config, concurrency)
    builder = registry.builder(chunk.name)
    if chunk.model:
        builder.model(chunk.model)
    for key, value in chunk.parameters.items():
        builder.parameter(key, value)
    provider = builder.build()
    with call_context(source="batch"):
        answers = Answers([(0, provider, q) for q in chunk.questions], policy, concurrency)
    try:
        return [result for _, result in answers]
    finally:
        answers.close()


def _worker_registry(config: RegistryConfig, concurrency: int) -> PluginRegistry:
    digest = hashlib.sha256(pickle.dumps(config)).hexdigest()
    registry = _registries.get(digest)
    if registry is None:
        registry = _registries[digest] = PluginRegistry(config)
    if registry.pool_size < concurrency:
        registry.set_pool_size(concurrency)
    return registry


class ChunkAnswers:
    """``(target index, result)`` for every question of ``chunks``, a chunk at a time as workers finish them."""

    def __init__(
        self, client: Client, config: RegistryConfig, chunks: Sequence[Chunk], policy: RetryPolicy, concurrency: int
    ) -> None:
        self._client = client
        shared = client.scatter(config, broadcast=True)  # sent to each worker once, not once per chunk
        self._chunks = {
            client.submit(answer_chunk, shared, chunk, policy, concurrency, pure=False): chunk for chunk in chunks
        }
        self._pending = set(self._chunks)

    def __iter__(self) -> Iterator[tuple[int, RowResult]]:
        from distributed import as_completed

        for future in as_completed(list(self._pending), loop=self._client.loop):
            self._pending.discard(future)
            for result in future.result():
                yield self._chunks[future].target, result

    def close(self) -> list[tuple[int, RowResult]]:
        """Cancel the chunks not finished (a running one completes in its worker, unseen); return those that
        finished but were not yet taken."""
        finished = [f for f in self._pending if f.status == "finished"]
        self._client.cancel([f for f in self._pending if f not in finished])
        self._pending.clear()
        return [(self._chunks[f].target, result) for f in finished for result in f.result()]


def chunked(questions: Sequence[Question], size: int) -> Iterator[tuple[Question, ...]]:
    for start in range(0, len(questions), size):
        yield tuple(questions[start : start + size])


def chunk_size(rows: int, workers: int, concurrency: int) -> int:
    """Small enough that every worker gets several chunks (a live bar, an even finish), big enough that
    each chunk keeps ``concurrency`` calls busy."""
    return max(1, min(4 * concurrency, math.ceil(rows / (4 * max(1, workers)))))


def default_client() -> Client:
    """A ``LocalCluster`` of two worker processes, started on first use and kept for the kernel's life."""
    global _local
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise BatchError("engine='dask' needs dask.distributed", hint="pip install 'querymt-jupyter[dask]'") from None
    if _local is None:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        _local = (cluster, Client(cluster, set_as_default=False))
        atexit.register(close_default_client)
    return _local[1]


def close_default_client() -> None:
    """Stop the LocalCluster ``default_client`` started (the next one starts afresh)."""
    global _local
    if _local is not None:
        cluster, client = _local
        _local = None
        client.close()
        cluster.close()


def worker_count(client: Client) -> int:
    return max(1, len(client.scheduler_info().get("workers", {})))
