"""YAML, by spans from PyYAML's composer; block collections line by line, flow ones like JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from .editor import DocPath, Node, Refused, SpanEditor, eol, line_start, reorder, split_blank

__all__ = ["YamlEditor"]


class YamlEditor(SpanEditor):
    """Spans from PyYAML's composer; block collections are edited line by line, flow ones like JSON."""

    def load(self, text: str) -> Any:
        import yaml

        return yaml.safe_load(text)

    def refusal(self, text: str) -> str | None:
        import yaml

        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                return ("this YAML file uses anchors/aliases (&name / *name); an edit through one would change "
                        "every place that refers to it, so it is not edited here; edit it by hand or use TOML")
        return None

    def tree(self, text: str) -> Node:
        import yaml

        def convert(node: yaml.Node) -> Node:
            if isinstance(node, yaml.ScalarNode):
                return Node("scalar", node.start_mark.index, node.end_mark.index, style=node.style)
            flow = bool(node.flow_style)
            kind = "map" if isinstance(node, yaml.MappingNode) else "seq"
            out = Node(kind, node.start_mark.index, node.end_mark.index, flow=flow)
            for entry in node.value:
                if kind == "map":
                    key, value = entry
                    if not isinstance(key, yaml.ScalarNode):
                        raise Refused("a YAML mapping with a non-scalar key")
                    out.keys.append(key.value)
                    out.key_spans.append((key.start_mark.index, key.end_mark.index))
                    entry = value
                out.children.append(convert(entry))
            if not flow and out.children:
                out.end = out.children[-1].end  # a block collection's own end mark lies past what follows it
            return out

        return convert(yaml.compose(text, Loader=yaml.SafeLoader))

    # -- rendering

    @staticmethod
    def _dump(value: Any, flow: bool) -> str:
        import yaml

        out = yaml.safe_dump(value, default_flow_style=flow, sort_keys=False, allow_unicode=True, width=math.inf)
        return out.removesuffix("\n...\n").rstrip("\n")

    def scalar(self, value: Any, style: str | None = None) -> str:
        if isinstance(value, str):
            if style == "'" and "\n" not in value:
                return "'" + value.replace("'", "''") + "'"
            if style == '"' or "\n" in value:
                return json.dumps(value, ensure_ascii=False)  # JSON's escapes are YAML double-quoted escapes
        return self._dump(value, flow=True)

    def _block(self, value: Any, column: int) -> str:
        """A non-empty list or mapping in block style, its first line to stand at ``column``."""
        return self._dump(value, flow=False).replace("\n", "\n" + " " * column)

    def render(self, text: str, value: Any, at: int, node: Node | None) -> str:
        if node is not None and node.kind == "scalar" and node.style in ("|", ">"):
            raise Refused("this value is a YAML block scalar (| or >)")
        if isinstance(value, (list, dict)) and value and node is not None and node.kind != "scalar" and not node.flow:
            return self._block(value, at - line_start(text, at))
        return self.scalar(value, node.style if node is not None else None)

    def _entry(self, key: str, value: Any, column: int) -> str:
        head = self.scalar(key) + ":"
        if isinstance(value, (list, dict)) and value:
            return head + "\n" + " " * (column + 2) + self._block(value, column + 2)
        return head + " " + self.scalar(value)

    def add_member(self, text: str, node: Node, key: str, value: Any) -> str:
        if node.flow:
            return self.flow_insert(text, node, len(node.children), lambda _: self.scalar(key) + ": " + self._dump(value, True), None)
        column = node.key_spans[0][0] - line_start(text, node.key_spans[0][0])
        text, at = ensure_newline_after(text, node.end)
        return text[:at] + " " * column + self._entry(key, value, column) + "\n" + text[at:]

    def drop_member(self, text: str, node: Node, index: int) -> str:
        if node.flow:
            return self.flow_drop(text, node, index)
        key_start = node.key_spans[index][0]
        if len(node.keys) == 1:  # an empty block mapping cannot be written: leave an empty flow one
            return text[:key_start] + "{}" + text[node.children[0].end :]
        line = line_start(text, key_start)
        if text[line:key_start].strip():  # the key follows "- " on its line: keep the dash for the next key
            return text[:key_start] + text[node.key_spans[index + 1][0] :]
        return text[:line] + text[eol(text, node.children[index].end) :]

    # -- sequences

    def _regions(self, text: str, path: DocPath) -> tuple[str, Node, list[int]]:
        """Boundaries of a block sequence's items: item i (with the comments above it) is [b[i], b[i+1])."""
        node = self._seq(text, path)
        parent, _ = self._walk(text, path[:-1])
        key_end = parent.key_spans[len(parent.keys) - 1 - parent.keys[::-1].index(str(path[-1]))][1]
        text, _ = ensure_newline_after(text, node.end)
        bounds = [eol(text, key_end)] + [eol(text, child.end) for child in node.children]
        return text, node, bounds

    def _rebuild(self, text: str, path: DocPath, change: Callable[[list[str]], None]) -> str:
        text, node, bounds = self._regions(text, path)
        separators, bodies = zip(*(split_blank(text[a:b]) for a, b in zip(bounds, bounds[1:])))
        items = list(bodies)
        change(items)
        return text[: bounds[0]] + reorder(list(separators), items, "") + text[bounds[-1] :]

    def insert(self, text: str, path: DocPath, index: int, value: Any) -> str:
        node = self._seq(text, path)
        if node.flow or not node.children:
            return self.flow_insert(text, node, index, lambda _: self._dump(value, True), None)
        first = node.children[0].start
        line = line_start(text, first)
        dash = text.rfind("-", line, first) - line
        column = first - line
        if dash < 0:
            raise Refused("an unusual YAML list layout")
        body = self._block(value, column) if isinstance(value, (list, dict)) and value else self.scalar(value)
        item = " " * dash + "-" + " " * (column - dash - 1) + body + "\n"
        return self._rebuild(text, path, lambda items: items.insert(index, item))

    def remove(self, text: str, path: DocPath, index: int) -> str:
        node = self._seq(text, path)
        if node.flow or len(node.children) == 1:
            # the last item of a block list leaves an empty flow list where the list was
            return self.flow_drop(text, node, index) if node.flow else text[: node.start] + "[]" + text[node.end :]
        return self._rebuild(text, path, lambda items: items.pop(index))

    def move(self, text: str, path: DocPath, src: int, dst: int) -> str:
        node = self._seq(text, path)
        if node.flow:
            item = text[node.children[src].start : node.children[src].end]
            text = self.flow_drop(text, node, src)
            return self.flow_insert(text, self._seq(text, path), dst, lambda _: item, None)
        return self._rebuild(text, path, lambda items: items.insert(dst, items.pop(src)))


def ensure_newline_after(text: str, pos: int) -> tuple[str, int]:
    """The start of the line after ``pos``; a file whose last line has no newline gets one."""
    at = eol(text, pos)
    if at == len(text) and not text.endswith("\n"):
        text += "\n"
        at = len(text)
    return text, at
