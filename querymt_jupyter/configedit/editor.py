"""The editor interface every format implements, and the span editing JSON and YAML share."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = ["DocPath", "Editor", "Key", "Node", "Refused", "SpanEditor", "eol", "line_start", "nest", "reorder", "split_blank"]


Key = Union[str, int]
DocPath = tuple[Key, ...]


class Refused(Exception):
    """An editor's reason for not making an edit; ``ConfigDocument`` reports it as a ConfigEditError."""


def eol(text: str, pos: int) -> int:
    """The start of the line after the one ``pos`` is on (``pos`` itself when it already starts a line)."""
    if pos > 0 and text[pos - 1] == "\n":
        return pos
    newline = text.find("\n", pos)
    return len(text) if newline < 0 else newline + 1


def line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def split_blank(region: str) -> tuple[str, str]:
    """A region's leading blank lines (which stay in place on a move) and the rest (which moves)."""
    match = re.match(r"(?:[ \t]*\n)*", region)
    end = match.end() if match else 0
    return region[:end], region[end:]


def reorder(separators: list[str], bodies: list[str], default: str) -> str:
    """Bodies joined, each after the separator of the position it now holds."""
    seps = [separators[i] if i < len(separators) else (separators[-1] if len(separators) > 1 else default)
            for i in range(len(bodies))]
    return "".join(s + b for s, b in zip(seps, bodies))


class Editor(ABC):
    """The text edits of one format. ``ConfigDocument`` checks every result, so an editor may be simple."""

    @abstractmethod
    def load(self, text: str) -> Any: ...

    def refusal(self, text: str) -> str | None:
        """Why this file cannot be edited at all (None: it can)."""
        return None

    @abstractmethod
    def set(self, text: str, path: DocPath, value: Any) -> str: ...

    @abstractmethod
    def delete(self, text: str, path: DocPath) -> str: ...

    @abstractmethod
    def insert(self, text: str, path: DocPath, index: int, value: Any) -> str: ...

    @abstractmethod
    def remove(self, text: str, path: DocPath, index: int) -> str: ...

    @abstractmethod
    def move(self, text: str, path: DocPath, src: int, dst: int) -> str: ...


@dataclass
class Node:
    """A value's place in the text. For block (YAML) collections ``end`` is the end of the last child."""

    kind: str  # "map", "seq" or "scalar"
    start: int
    end: int
    flow: bool = True
    keys: list[str] = field(default_factory=list)
    key_spans: list[tuple[int, int]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    style: str | None = None  # YAML scalar style: None (plain), '"', "'", '|' or '>'

    def child(self, key: Key) -> Node | None:
        if self.kind == "map" and isinstance(key, str) and key in self.keys:
            return self.children[len(self.keys) - 1 - self.keys[::-1].index(key)]  # the last one wins
        if self.kind == "seq" and isinstance(key, int) and 0 <= key < len(self.children):
            return self.children[key]
        return None

    def members(self) -> list[tuple[int, int]]:
        """(start, end) of each member: key to value end for maps, the item for sequences."""
        if self.kind == "map":
            return [(k[0], c.end) for k, c in zip(self.key_spans, self.children)]
        return [(c.start, c.end) for c in self.children]


class SpanEditor(Editor):
    """Edits by splicing spans; subclasses parse and render."""

    @abstractmethod
    def tree(self, text: str) -> Node: ...

    @abstractmethod
    def render(self, text: str, value: Any, at: int, node: Node | None) -> str:
        """``value`` as text to stand at ``at`` (replacing ``node`` when given)."""

    @abstractmethod
    def add_member(self, text: str, node: Node, key: str, value: Any) -> str: ...

    @abstractmethod
    def drop_member(self, text: str, node: Node, index: int) -> str: ...

    def _walk(self, text: str, path: DocPath) -> tuple[Node, int]:
        """The deepest existing node along ``path`` and how many parts of the path it covers."""
        node = self.tree(text)
        for depth, part in enumerate(path):
            child = node.child(part)
            if child is None:
                return node, depth
            node = child
        return node, len(path)

    def set(self, text: str, path: DocPath, value: Any) -> str:
        node, depth = self._walk(text, path)
        if depth == len(path):
            return text[: node.start] + self.render(text, value, node.start, node) + text[node.end :]
        if node.kind != "map":
            raise Refused(f"{'.'.join(map(str, path[:depth]))} is not a table")
        return self.add_member(text, node, str(path[depth]), nest(path[depth + 1 :], value))

    def delete(self, text: str, path: DocPath) -> str:
        node, depth = self._walk(text, path[:-1])
        assert depth == len(path) - 1 and node.kind == "map"
        index = len(node.keys) - 1 - node.keys[::-1].index(str(path[-1]))
        return self.drop_member(text, node, index)

    def _seq(self, text: str, path: DocPath) -> Node:
        node, depth = self._walk(text, path)
        if depth != len(path) or node.kind != "seq":
            raise Refused(f"{'.'.join(map(str, path))} is not a list")
        return node

    # Flow collections ([..] / {..}, all of JSON): members separated by commas.

    def flow_insert(
        self, text: str, node: Node, index: int, member: Callable[[str | None], str], empty_indent: str | None
    ) -> str:
        """Insert ``member(indent)`` at ``index``, copying the separator the collection uses. ``indent`` is
        the new member's line indentation, or None when it shares a line with others (write it compact);
        ``empty_indent`` is the indentation unit an empty collection opens up with (None: stays one line)."""
        members = node.members()
        close = node.end - 1
        if not members:
            if empty_indent is None:
                return text[: node.start + 1] + member(None) + text[close:]
            outer = re.match(r"[ \t]*", text[line_start(text, node.start) :])[0]  # type: ignore[index]
            inner = outer + empty_indent
            return text[: node.start + 1] + "\n" + inner + member(inner) + "\n" + outer + text[close:]
        if len(members) > 1:
            comma = re.compile(r"\s*,").match(text, members[0][1])
            separator = text[comma.end() : members[1][0]] if comma else " "
        else:
            separator = text[node.start + 1 : members[0][0]] or " "
        indent = separator.rsplit("\n", 1)[1] if "\n" in separator else None
        if index >= len(members):
            at = members[-1][1]
            return text[:at] + "," + separator + member(indent) + text[at:]
        at = members[index][0]
        return text[:at] + member(indent) + "," + separator + text[at:]

    def flow_drop(self, text: str, node: Node, index: int) -> str:
        members = node.members()
        if len(members) == 1:
            return text[: node.start + 1] + text[node.end - 1 :]
        if index > 0:
            return text[: members[index - 1][1]] + text[members[index][1] :]
        return text[: members[0][0]] + text[members[1][0] :]

def nest(path: DocPath, value: Any) -> Any:
    for part in reversed(path):
        value = {part: value}
    return value
