"""``Answer``: what ``%%querymt`` returns and ``-o VAR`` binds — the reply text, with its metadata.

An ``Answer`` is a ``str`` (so ``answer.upper()``, f-strings and ``{Out[3]}`` use the text) that also
carries ``.text``, ``.model``, ``.usage``, ``.latency_ms``, ``.provider`` and ``.raw``. The magic has
already shown the reply while it streamed, so the cell's own result display is skipped once.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .wire import Usage

__all__ = ["Answer", "FORMATS", "parse_json_reply", "render"]

FORMATS = ("markdown", "text", "code", "json", "html")
_FENCE = re.compile(r"^\s*```[\w+-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class Answer(str):
    text: str
    provider: str
    model: str | None
    usage: Usage | None
    latency_ms: float
    raw: Any
    format: str
    data: Any  # the parsed reply, for -f json

    def __new__(
        cls,
        text: str,
        *,
        provider: str,
        model: str | None = None,
        usage: Usage | None = None,
        latency_ms: float = 0.0,
        raw: Any = None,
        format: str = "markdown",
    ) -> Answer:
        answer = super().__new__(cls, text)
        answer.text, answer.provider, answer.model, answer.usage = text, provider, model, usage
        answer.latency_ms, answer.raw, answer.format = latency_ms, raw, format
        answer.data = None
        answer._shown = False
        return answer

    def mark_shown(self) -> None:
        """The magic displayed this answer already: skip the next (cell result) display once."""
        self._shown = True

    def _ipython_display_(self) -> None:
        if self._shown:
            self._shown = False
            return
        from IPython.display import display

        display(render(self.text, self.format))

    def __repr__(self) -> str:
        tokens = f", {self.usage.total_tokens} tokens" if self.usage else ""
        return f"Answer({str.__repr__(self)}, provider={self.provider!r}, model={self.model!r}{tokens}, {self.latency_ms:.0f} ms)"


def strip_fences(text: str) -> str:
    match = _FENCE.match(text)
    return match[1] if match else text


def parse_json_reply(text: str) -> Any:
    """The reply as JSON (code fences stripped); ValueError showing the reply when it is not JSON."""
    body = strip_fences(text)
    try:
        return json.loads(body)
    except ValueError as error:
        raise ValueError(f"the reply is not JSON ({error}); it was:\n{text}") from None


def render(text: str, fmt: str) -> Any:
    """A displayable object for ``text`` in output format ``fmt``."""
    from IPython.display import HTML, JSON, Code, Markdown, Pretty

    if fmt == "markdown":
        return Markdown(text)
    if fmt == "html":
        return HTML(text)
    if fmt == "code":
        return Code(strip_fences(text))
    if fmt == "json":
        return JSON(parse_json_reply(text))
    return Pretty(text)
