"""Brace-safe prompt interpolation for ``%%querymt``.

Only a brace pair around a *resolvable* reference is replaced: ``{name}``, ``{name.attr}``,
``{name[key]}`` (and chains of them) whose root is in the user namespace. Everything else — a dict
literal, TypeScript, ``{not_defined}``, a lone brace — reaches the provider byte for byte. ``{{`` and
``}}`` are literal braces. ``{In[n]}``, ``{Out[n]}`` and ``{Err[n]}`` use the numbers of the cell
prompts; an earlier answer interpolates as its text and a DataFrame as a bounded Markdown table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REFERENCE", "interpolate", "to_prompt_text"]

REFERENCE = re.compile(
    r"\{\{|\}\}"  # literal braces
    r"|\{(?P<root>[A-Za-z_]\w*)(?P<path>(?:\.[A-Za-z_]\w*|\[[^\[\]{}\n]*\])*)\}"
)
_STEP = re.compile(r"\.(?P<attr>[A-Za-z_]\w*)|\[(?P<key>[^\[\]]*)\]")
_TABLE_ROWS = 20
_TABLE_COLUMNS = 12


class _Unresolved(Exception):
    pass


def interpolate(text: str, namespace: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """Substitute resolvable references in ``text``; ``extra`` names win over the namespace."""
    scopes = [extra or {}, namespace]

    def replace(match: re.Match[str]) -> str:
        token = match[0]
        if token in ("{{", "}}"):
            return token[0]
        try:
            value = _resolve(match["root"], match["path"], scopes)
        except _Unresolved:
            return token
        return to_prompt_text(value)

    return REFERENCE.sub(replace, text)


def _resolve(root: str, path: str, scopes: list[Mapping[str, Any]]) -> Any:
    for scope in scopes:
        if root in scope:
            value = scope[root]
            break
    else:
        raise _Unresolved
    for step in _STEP.finditer(path):
        try:
            value = getattr(value, step["attr"]) if step["attr"] else value[_key(step["key"])]
        except (AttributeError, KeyError, IndexError, TypeError):
            raise _Unresolved from None
    return value


def _key(text: str) -> Any:
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def to_prompt_text(value: Any) -> str:
    """How a value reads inside a prompt: text as is, tables as Markdown, others as ``str``."""
    if isinstance(value, str):
        return str.__str__(value)  # an Answer is its text, not its repr
    if type(value).__name__ == "DataFrame":
        return markdown_table(value)
    return str(value)


def markdown_table(frame: Any, rows: int = _TABLE_ROWS, columns: int = _TABLE_COLUMNS) -> str:
    """A DataFrame as a Markdown table, at most ``rows`` × ``columns`` (a note says what was cut)."""
    shown = frame.iloc[:rows, :columns]
    header = ["", *map(str, shown.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in shown.iterrows():
        cells = [str(index), *(str(v).replace("|", "\\|").replace("\n", " ") for v in row)]
        lines.append("| " + " | ".join(cells) + " |")
    total_rows, total_columns = frame.shape
    if total_rows > rows or total_columns > columns:
        lines.append(f"\n({total_rows} rows × {total_columns} columns; first {len(shown)} × {shown.shape[1]} shown)")
    return "\n".join(lines)
