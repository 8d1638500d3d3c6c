"""A prompt template over every row of a table, resumable, on one kernel's threads or on Dask.

    from querymt_jupyter import batch
    labelled = batch(tickets, "Classify as bug, question or praise: {title}\\n{body}",
                     provider="openai:gpt-4o-mini", output="label", concurrency=8)

Every finished row is written to the resume store (store.py) as it completes, so running the same call
again after an interrupt, a crash or a restart asks only the rows not yet answered. Transient failures
(429, 408, 5xx, a lost connection) are retried with backoff, honouring Retry-After (runner.py); a row
that still fails keeps its error in the ``error`` column and the batch goes on. The pieces: template.py
checks and renders, runner.py asks on threads, cluster.py asks on Dask workers, store.py remembers,
progress.py shows, frame.py assembles the table.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import session as sessions
from ..errors import BatchError, QueryMTError
from ..provider import Provider, call_context
from ..registry import PluginRegistry
from . import cluster
from .frame import result_frame
from .progress import Progress
from .runner import Answers, Question, RetryPolicy
from .store import ResultStore, RowResult, row_key
from .template import Template

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BatchSummary", "ResultStore", "RetryPolicy", "batch"]

FORMATS = ("text", "json")
ENGINES = ("local", "dask")


@dataclass
class BatchSummary:
    """What a batch did, in ``result.attrs["querymt_batch"]``: ``asked`` counts requests this run made
    (distinct questions; retries not counted), ``resumed`` the rows answered from the store."""

    rows: int
    targets: list[str]
    asked: int = 0
    resumed: int = 0
    failed: int = 0
    seconds: float = 0.0
    store: str = ""
    engine: str = "local"

    @property
    def rows_per_second(self) -> float:
        return self.asked / self.seconds if self.seconds else 0.0


@dataclass
class _Target:
    label: str  # as the user wrote it: "openai" or "openai:gpt-4o"
    provider: Provider
    parameters: dict[str, Any]
    results: list[RowResult | None] = field(default_factory=list)
    waiting: dict[str, list[int]] = field(default_factory=dict)  # key -> the rows that asked it

    @property
    def name(self) -> str:
        return self.provider.factory.name

    def answered(self) -> list[RowResult]:
        missing = self.results.count(None)
        assert not missing, f"{missing} rows of {self.label} have no result"  # each was answered, or we raised
        return self.results  # type: ignore[return-value]


@dataclass(frozen=True)
class _Engine:
    """Where the questions are asked: on this kernel's threads, or by Dask workers (``client``)."""

    kind: str
    registry: PluginRegistry
    policy: RetryPolicy
    concurrency: int
    client: Any = None

    def answers(self, targets: list[_Target], questions: list[list[Question]]) -> Answers | cluster.ChunkAnswers:
        """``(target index, result)`` for every question, as answers arrive; ``close()`` stops early."""
        if self.kind == "local":
            self.registry.set_pool_size(max(self.registry.pool_size, self.concurrency))  # a Wasm instance per call
            jobs = [(t, targets[t].provider, q) for t, qs in enumerate(questions) for q in qs]
            return Answers(jobs, self.policy, self.concurrency)
        client = self.client if self.client is not None else cluster.default_client()
        size = cluster.chunk_size(sum(map(len, questions)), cluster.worker_count(client), self.concurrency)
        chunks = [
            cluster.Chunk(t, targets[t].name, targets[t].provider.model, targets[t].parameters, part)
            for t, qs in enumerate(questions)
            for part in cluster.chunked(qs, size)
        ]
        return cluster.ChunkAnswers(client, self.registry.config, chunks, self.policy, self.concurrency)


def batch(
    data: Any,
    template: str,
    provider: str | Sequence[str] | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    system: str | None = None,
    output: str = "answer",
    fmt: str = "text",
    concurrency: int = 8,
    resume: bool = True,
    retry: RetryPolicy | None = None,
    engine: str = "local",
    client: Any = None,
    store: str | Path | ResultStore | None = None,
    registry: PluginRegistry | None = None,
    namespace: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Send ``template``, filled from each row of ``data``, to ``provider``; the rows with the answers added.

    data         a pandas DataFrame (a dask DataFrame is computed first, in this process)
    template     the prompt; ``{column}`` fields as in ``%%querymt``, ``{{``/``}}`` for literal braces
    provider     "NAME" or "NAME:MODEL", or a list of them for one set of columns each (default: the
                 session's default provider)
    params       config parameters for every target, checked against each plugin's schema
    system       a system prompt sent before every row's prompt
    output       the answer column's name; fmt="json" parses each reply and adds a column per key
    concurrency  calls in flight at once (per worker with engine="dask")
    resume       False asks every row again (and keeps the new answers)
    retry        how transient failures are retried (default: RetryPolicy(), 4 retries)
    engine       "local" (threads in this kernel) or "dask" (``client``, else a LocalCluster of 2 processes)
    store        the resume store: a path or a ResultStore (default: $QUERYMT_JUPYTER_BATCH_STORE, else
                 batches.sqlite in the user's data folder)
    registry     the plugins (default: the kernel session's); namespace: names a field may use besides columns
    """
    frame = _as_frame(data)
    _check_choices(fmt, engine, concurrency)
    prompt = Template(template, frame.columns, namespace)
    registry = registry if registry is not None else sessions.current().registry
    targets = [_build(registry, label, dict(params or {})) for label in _labels(provider)]
    prompts = [prompt.render(row) for row in _rows(frame)]
    where = _Engine(engine, registry, retry or RetryPolicy(), concurrency, client)
    opened = store if isinstance(store, ResultStore) else ResultStore(store)
    try:
        summary = _answer(targets, prompts, system, opened, resume, where, progress)
    finally:
        if opened is not store:
            opened.close()
    table = result_frame(frame, [t.label for t in targets], [t.answered() for t in targets], output, fmt)
    table.attrs["querymt_batch"] = summary
    return table


def _answer(
    targets: list[_Target],
    prompts: list[str],
    system: str | None,
    store: ResultStore,
    resume: bool,
    engine: _Engine,
    show: bool,
) -> BatchSummary:
    """Ask what the store lacks, keeping each answer as it comes; what was done, as a summary."""
    summary = BatchSummary(len(prompts), [t.label for t in targets], store=str(store.path), engine=engine.kind)
    questions = [_plan(target, prompts, system, store, resume) for target in targets]
    summary.resumed = sum(r is not None for t in targets for r in t.results)
    bar = Progress(len(prompts) * len(targets), summary.resumed, _label(targets, engine.kind), show)
    started = time.perf_counter()

    def keep(index: int, result: RowResult) -> None:
        target = targets[index]
        store.put(result, target.name, target.provider.model)
        rows = target.waiting.pop(result.key)
        for row in rows:
            target.results[row] = result
        summary.asked += 1
        summary.failed += len(rows) * (not result.ok)
        bar.done(result, len(rows))

    with call_context(source="batch"):
        answers = engine.answers(targets, questions)
    try:
        for index, result in answers:
            keep(index, result)
    except (KeyboardInterrupt, QueryMTError) as stopped:  # an interrupt, or a failure no row would escape
        for index, result in answers.close():  # the calls in flight finish: what they answered is kept too
            keep(index, result)
        bar.close()
        kept = sum(r is not None and r.ok for t in targets for r in t.results)
        why = "interrupted" if isinstance(stopped, KeyboardInterrupt) else "stopped"
        print(f"{why}: {kept} answered rows are kept in {store.path};"
              f" run the same call again to ask only the {summary.rows * len(targets) - kept} left", file=sys.stderr)
        raise
    finally:
        answers.close()
        summary.seconds = time.perf_counter() - started
    bar.close()
    return summary


def _plan(target: _Target, prompts: list[str], system: str | None, store: ResultStore, resume: bool) -> list[Question]:
    """The target's questions still to ask (one per distinct prompt), its stored answers filled in."""
    model = target.provider.model
    keys = [row_key(target.name, model, target.parameters, system, p) for p in prompts]
    stored = store.get_many(keys) if resume else {}
    target.results = [stored.get(k) for k in keys]
    questions: list[Question] = []
    for row, (key, text) in enumerate(zip(keys, prompts)):
        if key in stored:
            continue
        if key not in target.waiting:
            target.waiting[key] = []
            questions.append(Question(key, text, system))
        target.waiting[key].append(row)
    return questions


def _as_frame(data: Any) -> pd.DataFrame:
    import pandas as pd  # here, not at the top: ``import querymt_jupyter`` stays quick

    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "compute") and hasattr(data, "npartitions"):  # a dask DataFrame: its rows, here
        return _as_frame(data.compute())
    if isinstance(data, pd.Series):
        return data.to_frame()
    raise BatchError(
        f"batch() takes a pandas or dask DataFrame, not {type(data).__name__}",
        hint="wrap rows in pd.DataFrame(...), e.g. pd.DataFrame({'text': texts})",
    )


def _check_choices(fmt: str, engine: str, concurrency: int) -> None:
    if fmt not in FORMATS:
        raise BatchError(f"fmt={fmt!r} is not a batch format", hint=f"use one of {', '.join(FORMATS)}")
    if engine not in ENGINES:
        raise BatchError(f"engine={engine!r} is not a batch engine", hint=f"use one of {', '.join(ENGINES)}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise BatchError(f"concurrency={concurrency!r} must be a whole number of at least 1")


def _labels(provider: str | Sequence[str] | None) -> list[str]:
    if provider is None:
        session = sessions.current()
        model = f":{session.default_model}" if session.default_model else ""
        return [session.default_provider + model]
    labels = [provider] if isinstance(provider, str) else list(provider)
    if not labels or not all(isinstance(label, str) and label for label in labels):
        raise BatchError(f"provider={provider!r}: name a provider, or a list of them", hint='e.g. "echo-wasm"')
    if len(set(labels)) != len(labels):
        raise BatchError(f"provider={labels!r} names a target twice", hint="each target gets its own columns")
    return labels


def _build(registry: PluginRegistry, label: str, parameters: dict[str, Any]) -> _Target:
    """The built provider (so a bad name or parameter fails here, before any row is asked)."""
    name, _, model = label.partition(":")
    builder = registry.builder(name)
    if model:
        builder.model(model)
    for key, value in parameters.items():
        builder.parameter(key, value)
    return _Target(label, builder.build(), parameters)


def _rows(frame: pd.DataFrame) -> Iterator[dict[str, Any]]:
    columns = [str(c) for c in frame.columns]
    for values in frame.itertuples(index=False, name=None):
        yield dict(zip(columns, values))


def _label(targets: list[_Target], engine: str) -> str:
    return ", ".join(t.label for t in targets) + (" on dask" if engine == "dask" else "")
