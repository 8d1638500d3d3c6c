"""The prompt log: one SQLite row per provider call, from magics, widgets or the Python API.

``$QUERYMT_JUPYTER_LOG`` names the file (``off`` disables logging); the default lives in the user's data
folder so notebooks in a repository do not grow a database. Rows hold no secrets: the parameters
recorded are the pruned provider config without ``api_key``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
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
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

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

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            assert self.path is not None
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, "
                + ", ".join(_COLUMNS)
                + ")"
            )
        return self._db

    def record(self, call: CallRecord) -> None:
        if self.path is None:
            return
        parameters = {k: v for k, v in call.parameters.items() if k not in _SECRET_KEYS}
        row = {**vars(call), "parameters": json.dumps(parameters), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with self._lock:
            db = self._connection()
            db.execute(
                f"INSERT INTO prompts ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                [row[c] for c in _COLUMNS],
            )
            db.commit()

    def frame(self, last: int | None = None) -> pd.DataFrame:
        """The log as a DataFrame, newest last (``last`` rows at most)."""
        import pandas as pd

        if self.path is None or not self.path.exists():
            return pd.DataFrame(columns=["id", *_COLUMNS])
        with self._lock:
            query = "SELECT * FROM prompts ORDER BY id DESC" + (f" LIMIT {int(last)}" if last else "")
            frame = pd.read_sql_query(query, self._connection())
        return frame.iloc[::-1].reset_index(drop=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
