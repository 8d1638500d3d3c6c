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
from .runner import Question, RetryPolicy, answer_all
from .store import RowResult

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["Chunk", "answer_chunk", "chunk_size", "chunked", "close_default_client", "default_client", "run_chunks", "worker_count"]


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
    results: list[RowResult | None] = [None] * len(chunk.questions)
    with call_context(source="batch"):
        for index, result in answer_all([(provider, q) for q in chunk.questions], policy, concurrency):
            results[index] = result
    return [r for r in results if r is not None]


def _worker_registry(config: RegistryConfig, concurrency: int) -> PluginRegistry:
    digest = hashlib.sha256(pickle.dumps(config)).hexdigest()
    registry = _registries.get(digest)
    if registry is None:
        registry = _registries[digest] = PluginRegistry(config)
    if registry.pool_size < concurrency:
        registry.set_pool_size(concurrency)
    return registry


def run_chunks(
    client: Client, config: RegistryConfig, chunks: Sequence[Chunk], policy: RetryPolicy, concurrency: int
) -> Iterator[tuple[Chunk, list[RowResult]]]:
    """Each chunk with its results, in the order chunks finish; closing the iterator cancels the rest."""
    from distributed import as_completed

    config_future = client.scatter(config, broadcast=True)  # sent to each worker once, not once per chunk
    futures = {
        client.submit(answer_chunk, config_future, chunk, policy, concurrency, pure=False): chunk for chunk in chunks
    }
    try:
        for future in as_completed(futures, loop=client.loop):
            yield futures[future], future.result()
    finally:
        client.cancel(list(futures))


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
