"""TOML, through tomlkit: comments, blank lines, key order and formatting kept."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import tomlkit
from tomlkit import items as tk

from .editor import DocPath, Editor, split_blank

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["TomlEditor"]


class TomlEditor(Editor):
    """tomlkit round trips byte for byte; comments above ``[[providers]]`` are put on the table first."""

    def load(self, text: str) -> Any:
        return tomllib.loads(text)

    def refusal(self, text: str) -> str | None:
        try:
            if self._dump(*self._parse(text)) != text:
                return "tomlkit cannot rewrite this file byte for byte, so it is not edited here; edit it by hand"
        except Exception as exc:  # tomlkit rejects something tomllib accepted
            return f"tomlkit cannot read this file ({exc}); edit it by hand"
        return None

    def _parse(self, text: str) -> tuple[tomlkit.TOMLDocument, str]:
        """The document with the comments above each ``[[providers]]`` header moved onto that table (in
        its header's leading text), and the file's tail: what follows the last provider when nothing does."""
        doc = tomlkit.parse(text)
        body = doc.body
        tail = ""
        for position, (key, value) in enumerate(body):
            if key is None or key.key != "providers" or not isinstance(value, tk.AoT) or not value.body:
                continue
            tables = value.body
            tables[0].trivia.indent = _comments_above(body, position) + tables[0].trivia.indent
            for previous, table in zip(tables, tables[1:]):
                table.trivia.indent = _pop_trailing(previous) + table.trivia.indent
            rest = _pop_trailing(tables[-1])
            following = body[position + 1][1] if position + 1 < len(body) else None
            if isinstance(following, tk.Table):
                following.trivia.indent = rest + following.trivia.indent
            elif isinstance(following, tk.AoT) and following.body:
                following.body[0].trivia.indent = rest + following.body[0].trivia.indent
            else:
                tail = rest
        return doc, tail

    @staticmethod
    def _dump(doc: tomlkit.TOMLDocument, tail: str) -> str:
        return doc.as_string() + tail

    def _container(self, doc: Any, path: DocPath) -> Any:
        """The table holding ``path[-1]``, creating missing tables on the way."""
        node = doc
        for part in path[:-1]:
            if isinstance(part, str) and part not in node:
                node[part] = tomlkit.table()
                if node is not doc:  # [providers.config] right below its provider's keys, as usually written
                    node[part].trivia.indent = ""
            node = node[part]
        return node

    def set(self, text: str, path: DocPath, value: Any) -> str:
        doc, tail = self._parse(text)
        with _header_indents(doc):
            self._container(doc, path)[path[-1]] = value
        return self._dump(doc, tail)

    def delete(self, text: str, path: DocPath) -> str:
        doc, tail = self._parse(text)
        with _header_indents(doc):
            del self._container(doc, path)[path[-1]]
        return self._dump(doc, tail)

    def _sequence(self, text: str, path: DocPath) -> tuple[tomlkit.TOMLDocument, str, Any]:
        doc, tail = self._parse(text)
        node: Any = doc
        for part in path:
            node = node[part]
        return doc, tail, node

    def _new_table(self, value: Mapping[str, Any]) -> tk.Table:
        table = tomlkit.table()
        for key, item in value.items():
            table[key] = item
            if isinstance(table[key], tk.Table):
                table[key].trivia.indent = ""
        return table

    def _permute(self, aot: tk.AoT, change: Callable[[list[tk.Table]], None]) -> None:
        """Reorder the tables of an AoT; leading blank lines stay with the position, comments with the table."""
        separators = []
        for table in aot.body:
            blank, rest = split_blank(table.trivia.indent)
            separators.append(blank)
            table.trivia.indent = rest
        tables = list(aot.body)
        change(tables)
        del aot[:]
        for position, table in enumerate(tables):
            default = separators[-1] if len(separators) > 1 else "\n"
            blank = separators[position] if position < len(separators) else default
            table.trivia.indent = blank + table.trivia.indent
            aot.append(table)

    def insert(self, text: str, path: DocPath, index: int, value: Any) -> str:
        doc, tail, node = self._sequence(text, path)
        if isinstance(node, tk.AoT):
            table = self._new_table(value)
            self._permute(node, lambda tables: tables.insert(index, table))
        else:
            node.insert(index, value)
        return self._dump(doc, tail)

    def remove(self, text: str, path: DocPath, index: int) -> str:
        doc, tail, node = self._sequence(text, path)
        if isinstance(node, tk.AoT):
            self._permute(node, lambda tables: tables.pop(index))
        else:
            del node[index]
        return self._dump(doc, tail)

    def move(self, text: str, path: DocPath, src: int, dst: int) -> str:
        doc, tail, node = self._sequence(text, path)
        if isinstance(node, tk.AoT):
            self._permute(node, lambda tables: tables.insert(dst, tables.pop(src)))
        else:
            moved = node[src].unwrap() if hasattr(node[src], "unwrap") else node[src]
            del node[src]
            node.insert(dst, moved)
        return self._dump(doc, tail)


def _last_body(table: tk.Table) -> list[tuple[Any, Any]]:
    """The body the text at the end of ``table`` belongs to: that of its last sub-table, if it ends with one."""
    body = table.value.body
    while body and isinstance(last := body[-1][1], (tk.Table, tk.AoT)):
        if isinstance(last, tk.AoT):
            if not last.body:
                break
            last = last.body[-1]
        body = last.value.body
    return body


def _pop_trailing(table: tk.Table, kinds: tuple[type, ...] = (tk.Whitespace, tk.Comment)) -> str:
    """Take the blank lines and comments that end a table (they stand above the next header)."""
    body = _last_body(table)
    text = ""
    while body and body[-1][0] is None and isinstance(body[-1][1], kinds):
        text = body.pop()[1].as_string() + text
    return text


def _comments_above(body: list[tuple[Any, Any]], position: int) -> str:
    """Take the comment lines written directly above the item at ``position`` of the document. Not those
    before a blank line, nor a block that starts the file: they describe the file or the table above."""
    previous = body[position - 1][1] if position else None
    if isinstance(previous, tk.AoT) and previous.body:
        previous = previous.body[-1]
    if isinstance(previous, tk.Table):
        return _pop_trailing(previous, (tk.Comment,))
    first = position
    while first > 0 and body[first - 1][0] is None and isinstance(body[first - 1][1], tk.Comment):
        first -= 1
    if first == 0:
        return ""
    text = ""
    for _, comment in body[first:position]:
        text += comment.as_string()
        trivia = comment.trivia  # the document's body is indexed: blank the item rather than remove it
        trivia.indent = trivia.comment_ws = trivia.comment = trivia.trail = ""
    return text


def _tables(items: list[tuple[Any, Any]]) -> Iterator[tk.Table]:
    for _, item in items:
        for table in item.body if isinstance(item, tk.AoT) else [item] if isinstance(item, tk.Table) else []:
            yield table
            yield from _tables(table.value.body)


@contextmanager
def _header_indents(doc: tomlkit.TOMLDocument) -> Iterator[None]:
    """While tomlkit edits: each table's leading text cut to its header line's own indentation.

    tomlkit indents a new key like the first run of spaces in its table's leading text, which now holds
    the comments above the header; and it puts blank lines before tables it moves a key above. Both are
    undone by restoring every table's leading text afterwards.
    """
    saved = [(table, table.trivia.indent) for table in _tables(doc.body)]
    for table, indent in saved:
        table.trivia.indent = indent.rsplit("\n", 1)[-1]
    try:
        yield
    finally:
        for table, indent in saved:
            table.trivia.indent = indent
