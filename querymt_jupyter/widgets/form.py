"""``ProviderForm``: the form of one ``[[providers]]`` entry, generated from its plugin's JSON Schema."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..configedit import (
    ConfigDocument,
    ConfigEditError,
    FieldError,
    ProviderRecord,
    plain_message,
    secret_env_var,
    source_label,
)
from .fields import HOSTS, FieldRow, KeyValueEditor, field_specs, hosts_spec, html_error

__all__ = ["ProviderForm", "SchemaInfo"]


@dataclass
class SchemaInfo:
    """What loading a plugin said about its config: the schema, or why there is none."""

    schema: dict[str, Any] | None
    error: str | None = None


class ProviderForm(w.VBox):
    """The form of one ``[[providers]]`` entry. Edits stay in the widgets until ``apply``."""

    def __init__(self, record: ProviderRecord, info: SchemaInfo, base: Path) -> None:
        self.record = record
        self.info = info
        self.base = base
        config = record.config
        self.name = w.Text(value=record.name, description="name", layout=w.Layout(width="40%"))
        self.path = w.Text(value=record.path, description="path", layout=w.Layout(width="60%"))
        for box in (self.name, self.path):
            box.style.description_width = "12em"
        self.kind = w.HTML()
        self.name_error, self.path_error = w.HTML(), w.HTML()
        self.status = w.HTML()
        self.up_button = w.Button(icon="arrow-up", tooltip="move up", layout=w.Layout(width="3em"))
        self.down_button = w.Button(icon="arrow-down", tooltip="move down", layout=w.Layout(width="3em"))
        self.remove_button = w.Button(description="remove", icon="trash", button_style="danger")
        self.path.observe(lambda _: self._show_kind(), "value")
        self._show_kind()

        specs = field_specs(info.schema)
        self.rows: dict[str, FieldRow] = {
            spec.key: FieldRow(spec, config.get(spec.key), env_var=secret_env_var(record.name, spec.key, config.get(spec.key)))
            for spec in specs
        }
        self.rows[HOSTS] = FieldRow(hosts_spec(), config.get(HOSTS))
        known = set(self.rows)
        self.raw = KeyValueEditor(
            {k: v for k, v in config.items() if k not in known},
            "other config keys" if info.schema is not None else "config (raw: the plugin did not load)",
        )
        self.config_error = w.HTML()
        notice = w.HTML(html_error(f"schema unavailable: {info.error}") if info.error else "")
        super().__init__([
            w.HBox([self.name, self.name_error]),
            w.HBox([self.path, self.kind, self.path_error]),
            notice,
            *self.rows.values(),
            self.raw,
            self.config_error,
            w.HBox([self.up_button, self.down_button, self.remove_button, self.status]),
        ])

    @property
    def title(self) -> str:
        return f"{self.name.value or '(unnamed)'} — {self.kind_label()}"

    def kind_label(self) -> str:
        return source_label(self.path.value, self.base)[0]

    def _show_kind(self) -> None:
        self.kind.value = f"<code>{html.escape(self.kind_label())}</code>"

    def apply(self, doc: ConfigDocument) -> list[FieldError]:
        """Write the edited fields into ``doc``; return the fields whose text did not read as a value."""
        problems: list[FieldError] = []
        index = self.record.index

        def attempt(field_name: str, action: Callable[[], Any]) -> None:
            try:
                action()
            except ValueError as error:  # text that does not read as the field's type
                problems.append(FieldError(index, self.name.value, field_name, str(error)))
            except ConfigEditError as error:  # an edit the document cannot make in place
                problems.append(FieldError(index, self.name.value, field_name, plain_message(error)))

        if self.name.value != self.record.name:
            attempt("name", lambda: doc.rename(self.record, self.name.value.strip()))
        if self.path.value != self.record.path:
            attempt("path", lambda: doc.set_field(self.record, "path", self.path.value.strip()))
        for key, row in self.rows.items():
            if not row.edited:
                continue
            if row.spec.kind == "secret":
                attempt(f"config.{key}", lambda key=key, row=row: doc.set_secret(self.record, key, row.input.value))
            else:
                attempt(f"config.{key}", lambda key=key, row=row: doc.set_field(self.record, f"config.{key}", row.value()))
        for key, value in self.raw.changes().items():
            if key in self.raw.secrets and value is not None:
                attempt(f"config.{key}", lambda key=key, value=value: doc.set_secret(self.record, key, value))
            else:
                attempt(f"config.{key}", lambda key=key, value=value: doc.set_field(self.record, f"config.{key}", value))
        return problems

    def show_errors(self, errors: list[FieldError]) -> None:
        """Put each message next to its field (the raw editor's keys share one line)."""
        for row in self.rows.values():
            row.show_error("")
        self.name_error.value = self.path_error.value = self.config_error.value = ""
        self.raw.show_error("")
        raw_messages = []
        for error in errors:
            key = error.field.removeprefix("config.")
            if error.field == "name":
                self.name_error.value = html_error(error.message)
            elif error.field == "path":
                self.path_error.value = html_error(error.message)
            elif key in self.rows:
                self.rows[key].show_error(error.message)
            elif error.field == "config":
                self.config_error.value = html_error(error.message)
            else:
                raw_messages.append(f"{key}: {error.message}")
        self.raw.show_error("; ".join(raw_messages))

    def errors_shown(self) -> dict[str, str]:
        """The messages on screen by field, as plain text ('' where there is none)."""
        shown = {"name": self.name_error.value, "path": self.path_error.value, "raw": self.raw.error.value}
        shown.update({f"config.{key}": row.error.value for key, row in self.rows.items()})
        return {k: html.unescape(re.sub(r"<[^>]+>", "", v)) for k, v in shown.items()}
