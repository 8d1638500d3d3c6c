"""The resume store: every answered row of every batch, in one SQLite file, keyed by what was asked.

A row's key is the SHA-256 of provider, model, parameters, system prompt and rendered prompt, so the same
question to the same provider is answered once: a batch run again after a crash, an interrupt or a
notebook restart sends only the rows the file lacks. Only successes are kept (a failed row is asked
again), with the whole reply text (the prompt log keeps a prefix). One writer: the thread that drives
the batch writes each row the moment it is done.

The file is ``$QUERYMT_JUPYTER_BATCH_STORE``, else ``batches.sqlite`` beside the prompt log in the
user's data folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ResultStore", "RowResult", "default_path", "row_key"]

_SCHEMA = """
create table if not exists answers (
    key text primary key,
    provider text not null,
    model text,
    text text not null,
    input_tokens integer,
    output_tokens integer,
    latency_ms real,
    attempts integer,
    time real not null
)"""


@dataclass(frozen=True)
class RowResult:
    """What asking one row gave: its reply text, or the error it failed with after its retries."""

    key: str
    text: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    attempts: int = 1
    error: str | None = None
    resumed: bool = False  # read from the store, not asked this run

    @property
    def ok(self) -> bool:
        return self.error is None


def row_key(provider: str, model: str | None, parameters: Mapping[str, Any], system: str | None, prompt: str) -> str:
    """The key of one question; parameters in key order, so ``{a, b}`` and ``{b, a}`` are one question."""
    what = [provider, model, parameters, system, prompt]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def default_path() -> Path:
    setting = os.environ.get("QUERYMT_JUPYTER_BATCH_STORE")
    if setting:
        return Path(setting).expanduser()
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data / "querymt-jupyter" / "batches.sqlite"


class ResultStore:
    """Answered rows by key. Not shared between threads: the batch's driving thread owns it."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("pragma journal_mode=wal")  # a reader (another kernel) never blocks the writer
        self._db.execute("pragma synchronous=normal")  # durable across a kernel crash; one fsync per checkpoint
        self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"<ResultStore {str(self.path)!r}, {len(self)} answers>"

    def __len__(self) -> int:
        return int(self._db.execute("select count(*) from answers").fetchone()[0])

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def keys(self) -> set[str]:
        return {key for (key,) in self._db.execute("select key from answers")}

    def get_many(self, keys: Iterable[str]) -> dict[str, RowResult]:
        """The stored answers among ``keys``."""
        found: dict[str, RowResult] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 500):  # below SQLite's limit on bound parameters
            part = wanted[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                "select key, text, input_tokens, output_tokens, latency_ms, attempts"
                f" from answers where key in ({marks})",
                part,
            )
            for key, text, input_tokens, output_tokens, latency_ms, attempts in rows:
                found[key] = RowResult(key, text, input_tokens, output_tokens, latency_ms, attempts, resumed=True)
        return found

    def put(self, result: RowResult, provider: str, model: str | None) -> None:
        """Keep one answered row at once (a failed one is not kept: it is asked again next run)."""
        if not result.ok:
            return
        with self._db:
            self._db.execute(
                "insert or replace into answers values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.key,
                    provider,
                    model,
                    result.text,
                    result.input_tokens,
                    result.output_tokens,
                    result.latency_ms,
                    result.attempts,
                    time.time(),
                ),
            )

    def close(self) -> None:
        self._db.close()
