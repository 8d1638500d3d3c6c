"""A prompt template over the rows of a table: checked against the columns once, rendered per row.

The fields are the brace references of ``%%querymt`` (``{title}``, ``{meta[key]}``, ``{{`` for a literal
brace; interpolate.py), resolved against each row's columns. Where a cell leaves an unknown ``{name}`` as
written, a batch refuses it before the first request: a typo in a field would otherwise send every row
with the field's braces in place of its value, and pay for all of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import TemplateFieldError
from ..interpolate import REFERENCE, interpolate
from ..keys import closest

__all__ = ["Template"]


class Template:
    """``text`` whose every ``{field}`` root is one of ``columns`` (or a name of ``namespace``)."""

    def __init__(self, text: str, columns: Iterable[Any], namespace: Mapping[str, Any] | None = None) -> None:
        self.text = text
        self.columns = tuple(str(c) for c in columns)
        self.namespace = namespace or {}
        self.fields = fields_of(text)
        self._check()

    def _check(self) -> None:
        known = set(self.columns) | set(self.namespace)
        for field in self.fields:
            if field not in known:
                raise _unknown_field(field, self.columns)

    def render(self, row: Mapping[str, Any]) -> str:
        """The prompt for one row; a row's columns win over namespace names."""
        return interpolate(self.text, self.namespace, row)


def fields_of(text: str) -> tuple[str, ...]:
    """The root names the template refers to, in order of first use (``{{``/``}}`` are not fields)."""
    roots = (m["root"] for m in REFERENCE.finditer(text) if m["root"])
    return tuple(dict.fromkeys(roots))


def _unknown_field(field: str, columns: tuple[str, ...]) -> TemplateFieldError:
    guess = closest(field, columns)
    message = f"the template's field {{{field}}} is not a column of the table"
    if guess:
        message += f"; did you mean {{{guess}}}?"
    usable = [c for c in columns if re.fullmatch(r"[A-Za-z_]\w*", c)]
    hint = f"columns: {', '.join(usable) or '(none usable as a field)'}; write {{{{{field}}}}} for literal braces"
    return TemplateFieldError(message, field=field, columns=columns, hint=hint)
