"""JSON, by spans from a small position-recording parser; new members copy the file's style."""

from __future__ import annotations

import json
import re
from typing import Any

from .editor import DocPath, Node, SpanEditor, line_start

__all__ = ["JsonEditor"]


class JsonEditor(SpanEditor):
    def load(self, text: str) -> Any:
        return json.loads(text)

    def tree(self, text: str) -> Node:
        return JsonTree(text).value(JsonTree.skip(text, 0))

    @staticmethod
    def _style(text: str) -> tuple[str | None, str]:
        """(indent unit or None for one-line JSON, key separator) as the file writes them."""
        colon = re.search(r'"\s*(:\s*)', text)
        sep = colon[1] if colon else ": "
        if "\n" not in text.strip():
            return None, sep
        indents = [m[1] for m in re.finditer(r"\n([ \t]+)\S", text)]
        return (min(indents, key=len) if indents else "  "), sep

    def _dumps(self, text: str, value: Any, indent: str | None) -> str:
        """``value`` pretty-printed as the file is, its lines indented by ``indent``; None: on one line."""
        unit, colon = self._style(text)
        if unit is None or indent is None:
            return json.dumps(value, ensure_ascii=False, separators=(", ", colon))
        return json.dumps(value, ensure_ascii=False, indent=unit, separators=(",", colon)).replace("\n", "\n" + indent)

    def render(self, text: str, value: Any, at: int, node: Node | None) -> str:
        line = line_start(text, at)
        indent = re.match(r"[ \t]*", text[line:])[0]  # type: ignore[index]
        # Pretty only where the value has its line to itself ("key": value,) or already spans lines.
        alone = re.fullmatch(r'\s*("(?:[^"\\]|\\.)*"\s*:\s*)?', text[line:at]) is not None and (
            node is None or re.match(r"[ \t]*,?[ \t]*(\n|$)", text[node.end :]) is not None
        )
        spans_lines = node is not None and "\n" in text[node.start : node.end]
        return self._dumps(text, value, indent if alone or spans_lines else None)

    def add_member(self, text: str, node: Node, key: str, value: Any) -> str:
        unit, colon = self._style(text)
        return self.flow_insert(
            text, node, len(node.children), lambda indent: json.dumps(key) + colon + self._dumps(text, value, indent), unit
        )

    def drop_member(self, text: str, node: Node, index: int) -> str:
        return self.flow_drop(text, node, index)

    def insert(self, text: str, path: DocPath, index: int, value: Any) -> str:
        unit = self._style(text)[0]
        return self.flow_insert(text, self._seq(text, path), index, lambda indent: self._dumps(text, value, indent), unit)

    def remove(self, text: str, path: DocPath, index: int) -> str:
        return self.flow_drop(text, self._seq(text, path), index)

    def move(self, text: str, path: DocPath, src: int, dst: int) -> str:
        node = self._seq(text, path)
        item = text[node.children[src].start : node.children[src].end]  # same depth, so its indentation fits
        text = self.flow_drop(text, node, src)
        return self.flow_insert(text, self._seq(text, path), dst, lambda _: item, self._style(text)[0])


class JsonTree:
    """A JSON value's spans (the text is known to be valid JSON: ``json.loads`` read it first)."""

    _WS = re.compile(r"[ \t\n\r]*")
    _ATOM = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def skip(cls, text: str, pos: int) -> int:
        return cls._WS.match(text, pos).end()  # type: ignore[union-attr]

    def value(self, pos: int) -> Node:
        text = self.text
        if text[pos] == '"':
            return Node("scalar", pos, json.decoder.scanstring(text, pos + 1)[1])
        if text[pos] in "{[":
            node = Node("map" if text[pos] == "{" else "seq", pos, pos)
            close = "}" if node.kind == "map" else "]"
            pos = self.skip(text, pos + 1)
            while text[pos] != close:
                if node.kind == "map":
                    key, key_end = json.decoder.scanstring(text, pos + 1)
                    node.keys.append(key)
                    node.key_spans.append((pos, key_end))
                    pos = self.skip(text, self.skip(text, key_end) + 1)  # past the ':'
                child = self.value(pos)
                node.children.append(child)
                pos = self.skip(text, child.end)
                if text[pos] == ",":
                    pos = self.skip(text, pos + 1)
            node.end = pos + 1
            return node
        return Node("scalar", pos, self._ATOM.match(text, pos).end())  # type: ignore[union-attr]
