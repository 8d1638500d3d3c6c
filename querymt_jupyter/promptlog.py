"""The prompt log: one SQLite row per provider call, from magics, widgets or the Python API.

``$QUERYMT_JUPYTER_LOG`` names the file (``off`` disables logging); the default lives in the user's data
folder so notebooks in a repository do not grow a database. Rows hold no secrets: the parameters
recorded are the pruned provider config without ``api_key``. The file stays small: each prompt and response
keeps at most ``$QUERYMT_JUPYTER_LOG_MAX_TEXT`` characters (default 65,536) beside its full length and
SHA-256, and only the newest ``$QUERYMT_JUPYTER_LOG_MAX_ROWS`` rows (default 100,000) are kept.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import queue
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CallRecord", "PromptLog"]

_COLUMNS = (
    "time",
    "source",
    "provider",
    "plugin_type",
    "model",
    "operation",
    "prompt",
    "response",
    "parameters",
    "input_tokens",
    "output_tokens",
    "latency_ms",
    "error",
    "execution_count",
    "conversation",
    "prompt_chars",
    "prompt_sha256",
    "response_chars",
    "response_sha256",
)
_SECRET_KEYS = ("api_key",)


@dataclass
class CallRecord:
    """What a provider call did, handed to every call hook (see ``provider.on_call``)."""

    provider: str
    plugin_type: str
    model: str | None
    operation: str  # chat, chat_stream, complete, embed
    prompt: str
    response: str | None
    parameters: dict[str, Any]
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float = 0.0
    error: str | None = None
    source: str = "api"  # api, magic, widget
    execution_count: int | None = None
    conversation: str | None = None


class PromptLog:
    """Rows are made and written by a background thread, so a call pays for a queue put, not for hashing
    its texts or a SQLite commit; reading (``frame``) first waits for the rows already recorded."""

    def __init__(self, path: Path | None, *, max_text: int | None = None, max_rows: int | None = None) -> None:
        self.path = path
        self.max_text = max_text if max_text is not None else int(os.environ.get("QUERYMT_JUPYTER_LOG_MAX_TEXT", 65536))
        self.max_rows = max_rows if max_rows is not None else int(os.environ.get("QUERYMT_JUPYTER_LOG_MAX_ROWS", 100_000))
        self._rows: queue.Queue[tuple[CallRecord, str] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> PromptLog:
        setting = os.environ.get("QUERYMT_JUPYTER_LOG")
        if setting == "off":
            return cls(None)
        if setting:
            return cls(Path(setting))
        data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return cls(data / "querymt-jupyter" / "prompts.sqlite")

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def record(self, call: CallRecord) -> None:
        if self.path is None:
            return
        self._start_writer()
        self._rows.put((call, time.strftime("%Y-%m-%dT%H:%M:%S")))

    def _row(self, call: CallRecord, when: str) -> tuple[Any, ...]:
        """The SQLite row of one call (on the writer thread: hashing a 16 MiB prompt takes tens of ms)."""
        parameters = {k: v for k, v in call.parameters.items() if k not in _SECRET_KEYS}
        row = {**vars(call), "parameters": json.dumps(parameters, default=str), "time": when}
        for field in ("prompt", "response"):
            row.update(self._kept(field, row[field]))
        return tuple(row[c] for c in _COLUMNS)

    def _kept(self, field: str, text: str | None) -> dict[str, Any]:
        """A prefix of ``text`` with its full length and hash, so a cut row still identifies its text."""
        if text is None:
            return {field: None, f"{field}_chars": None, f"{field}_sha256": None}
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return {field: text[: self.max_text], f"{field}_chars": len(text), f"{field}_sha256": digest}

    def clear(self) -> int:
        """Delete every row and give the space back; returns how many rows were removed."""
        self.flush()
        if self.path is None or not self.path.exists():
            return 0
        with closing(self._connect()) as db:
            removed = db.execute("DELETE FROM prompts").rowcount
            db.commit()
            db.execute("VACUUM")
        return removed

    def flush(self) -> None:
        """Wait until every recorded row is in the file."""
        if self._writer is not None:
            self._rows.join()

    def frame(self, last: int | None = None) -> pd.DataFrame:
        """The log as a DataFrame, newest last (``last`` rows at most)."""
        import pandas as pd

        self.flush()
        if self.path is None or not self.path.exists():
            return pd.DataFrame(columns=["id", *_COLUMNS])
        query = "SELECT * FROM prompts ORDER BY id DESC" + (f" LIMIT {int(last)}" if last else "")
        with closing(self._connect()) as db:
            frame = pd.read_sql_query(query, db)
        return frame.iloc[::-1].reset_index(drop=True)

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        if self._writer is not None:
            self._rows.put(None)
            self._writer.join()
            self._writer = None

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_rows, name="querymt-prompt-log", daemon=True)
                self._writer.start()
                atexit.register(self.close)  # the thread is a daemon: write the last rows at exit

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path)
        db.execute(f"CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, {', '.join(_COLUMNS)})")
        present = {row[1] for row in db.execute("PRAGMA table_info(prompts)")}
        for column in _COLUMNS:  # a log written by an older version: add the new columns, keep the rows
            if column not in present:
                db.execute(f"ALTER TABLE prompts ADD COLUMN {column}")
        return db

    def _write_rows(self) -> None:
        insert = f"INSERT INTO prompts ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
        with closing(self._connect()) as db:
            while True:
                row = self._rows.get()
                batch = [row]
                while not self._rows.empty():  # one commit for everything already waiting
                    batch.append(self._rows.get_nowait())
                db.executemany(insert, [self._row(*item) for item in batch if item is not None])
                # the newest max_rows stay: ids only grow, so the cut is one indexed range
                db.execute("DELETE FROM prompts WHERE id <= (SELECT MAX(id) FROM prompts) - ?", (self.max_rows,))
                db.commit()
                for _ in batch:
                    self._rows.task_done()
                if None in batch:
                    return
