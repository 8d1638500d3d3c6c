"""The result table: the input rows, then for each target its answer column(s) and the call's figures.

One target adds ``answer`` (the ``output`` name), ``latency_ms``, ``input_tokens``, ``output_tokens``,
``attempts`` and ``error``; several add the same columns suffixed with the target, ``answer[openai]``,
so two providers read side by side. With ``fmt="json"`` each key of a reply object is a column of its
own (``answer.key`` where the key is already an input column); a reply that is not an object stays in
the answer column, and one that does not parse says so in ``error``. The store keeps the reply text,
so a reply that fails to parse is never asked again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from ..answer import parse_json_reply
from .store import RowResult

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["result_frame"]

Columns = dict[str, list[Any]]


def result_frame(
    frame: pd.DataFrame, labels: Sequence[str], results: Sequence[Sequence[RowResult]], output: str, fmt: str
) -> pd.DataFrame:
    """``frame`` with one column set per target; ``results[t][i]`` is row ``i``'s result for target ``t``."""
    import pandas as pd  # here, not at the top: ``import querymt_jupyter`` stays quick (pandas takes 0.3 s)

    table = frame.copy()
    for label, rows in zip(labels, results):
        suffix = f"[{label}]" if len(labels) > 1 else ""
        columns = _json_columns(rows, output, frame.columns) if fmt == "json" else _text_columns(rows, output)
        columns["latency_ms"] = [r.latency_ms for r in rows]
        for name in ("input_tokens", "output_tokens", "attempts"):
            columns[name] = pd.array([getattr(r, name) for r in rows], dtype="Int64")  # None stays <NA>
        columns["error"] = columns.pop("error")  # last, where a reader looks for it
        for name, values in columns.items():
            table[name + suffix] = values
    return table


def _text_columns(rows: Sequence[RowResult], output: str) -> Columns:
    return {output: [r.text for r in rows], "error": [r.error for r in rows]}


def _json_columns(rows: Sequence[RowResult], output: str, taken: Collection[Any]) -> Columns:
    answers: list[Any] = []
    errors: list[str | None] = []
    keyed: Columns = {}
    for position, row in enumerate(rows):
        value, error = _parsed(row)
        if isinstance(value, dict):
            for key, item in value.items():
                name = f"{output}.{key}" if key in taken else str(key)
                keyed.setdefault(name, [None] * len(rows))[position] = item
            value = None
        answers.append(value)
        errors.append(error)
    if output in keyed:  # {"label": ...} with output="label": one column, the object's value first
        keyed[output] = [k if k is not None else a for k, a in zip(keyed[output], answers)]
    elif any(a is not None for a in answers):
        keyed = {output: answers, **keyed}
    return {**keyed, "error": errors}


def _parsed(row: RowResult) -> tuple[Any, str | None]:
    if not row.ok:
        return None, row.error
    try:
        return parse_json_reply(row.text or ""), None
    except ValueError as error:
        return row.text, f"ResponseFormatError: {str(error).partition(chr(10))[0]}"
