"""The parts of the config editor's forms: what a schema property becomes, one field, a raw key/value table.

The pure pieces (``FieldSpec``, ``parse_input``, ``format_value``) take no widget; ``FieldRow`` and
``KeyValueEditor`` expose their parts so tests can drive them.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as w

from ..config import ENV_REF
from ..configedit import is_secret

__all__ = ["HOSTS", "FieldRow", "FieldSpec", "KeyValueEditor", "field_specs", "format_value", "hosts_spec",
           "html_error", "parse_input", "small"]

HOSTS = "allowed_hosts"


# ---- pure: what a schema property becomes, and how its text reads back ----------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One config field of the form. ``kind``: string, secret, number, integer, boolean, enum, strings
    (a list of strings, one per line), hosts (``allowed_hosts``, comma separated) or json (anything else)."""

    key: str
    kind: str
    description: str = ""
    required: bool = False
    default: Any = None
    options: tuple[Any, ...] = ()


def _simple_types(schema: Mapping[str, Any]) -> tuple[list[str], Mapping[str, Any]]:
    """The non-null types of a property and the (sub)schema that names them; ``anyOf: [X, null]`` is X."""
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(alternatives, list):
        real = [a for a in alternatives if isinstance(a, Mapping) and a.get("type") != "null"]
        if len(real) != 1:
            return ["json"], schema
        schema = {**schema, **real[0]}
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types) if isinstance(types, list) else []
    return [t for t in types if t != "null"], schema


def field_spec(key: str, schema: Mapping[str, Any], required: bool = False) -> FieldSpec:
    types, schema = _simple_types(schema)
    enum = [v for v in schema.get("enum") or () if v is not None]
    if types == ["json"] or len(types) > 1:
        kind = "json"
    elif enum and all(isinstance(v, (str, int, float, bool)) for v in enum):
        kind = "enum"
    elif types == ["boolean"]:
        kind = "boolean"
    elif types in (["integer"], ["number"]):
        kind = types[0]
    elif types == ["string"]:
        kind = "secret" if is_secret(key, schema) else "string"
    elif types == ["array"] and (schema.get("items") or {}).get("type", "string") == "string":
        kind = "strings"
    else:
        kind = "json"
    return FieldSpec(
        key,
        kind,
        description=str(schema.get("description") or ""),
        required=required,
        default=schema.get("default"),
        options=tuple(enum),
    )


def field_specs(schema: Mapping[str, Any] | None) -> list[FieldSpec]:
    """The form fields of a plugin's config schema, in the schema's order (``stream``, set by the host, left out)."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping):
        return []
    required = set((schema or {}).get("required") or ())
    return [
        field_spec(key, sub, key in required)
        for key, sub in properties.items()
        if isinstance(sub, Mapping) and key != "stream" and key != HOSTS
    ]


def hosts_spec() -> FieldSpec:
    return FieldSpec(
        HOSTS,
        "hosts",
        description="Hosts this plugin may reach, comma separated (the base_url's host is always allowed); "
        "empty: unrestricted.",
    )


def format_value(spec: FieldSpec, value: Any) -> str:
    """The text a field shows for ``value`` (None: not set)."""
    if value is None or spec.kind == "secret":
        return ""
    if isinstance(value, str) and spec.kind not in ("json",):
        return value
    if spec.kind == "strings" and isinstance(value, list) and all(isinstance(v, str) and "\n" not in v for v in value):
        return "\n".join(value)
    if spec.kind == "hosts" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    if spec.kind in ("number", "integer") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def parse_input(spec: FieldSpec, text: str) -> Any:
    """A field's text as a config value (None: remove the key); ValueError says what is wrong."""
    raw = text.strip()
    if not raw:
        return None
    if ENV_REF.fullmatch(raw):
        return raw  # ${VAR} is read from the environment when the registry loads
    if spec.kind in ("string", "secret"):
        return text
    if spec.kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError("must be a whole number") from None
    if spec.kind == "number":
        try:
            number = float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        return int(number) if re.fullmatch(r"[-+]?\d+", raw) else number
    if spec.kind == "strings":
        return [line for line in text.splitlines() if line.strip()]
    if spec.kind == "hosts":
        return [h for h in re.split(r"[,\s]+", raw) if h]
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None


def parse_loose(text: str) -> Any:
    """A raw editor value: JSON when it parses as JSON (numbers, true, [..], "quoted"), else the text."""
    raw = text.strip()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return text


def format_loose(value: Any) -> str:
    """The inverse of ``parse_loose``: strings that would read back as something else are quoted."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if parse_loose(value) != value else value
    return json.dumps(value, ensure_ascii=False)


def html_error(message: str) -> str:
    return f'<span style="color:#c62828">{html.escape(message)}</span>' if message else ""


def small(text: str) -> str:
    return f'<span style="color:#666;font-size:0.85em">{html.escape(text)}</span>' if text else ""


# ---- one field ----------------------------------------------------------------------------------------------


class FieldRow(w.VBox):
    """A config field: its input (by kind), help text and error message; it knows whether it was edited."""

    def __init__(self, spec: FieldSpec, value: Any, *, env_var: str | None = None) -> None:
        self.spec = spec
        self.error = w.HTML()
        label = spec.key + (" *" if spec.required else "")
        layout = w.Layout(width="60%")
        self._choices: list[Any] = []
        if spec.kind in ("enum", "boolean"):
            self._choices = [None, *(spec.options if spec.kind == "enum" else (True, False))]
            if value is not None and value not in self._choices:
                self._choices.append(value)  # an env reference or an invalid value: show it, do not lose it
            labels = ["(not set)" + (f" — default {spec.default}" if spec.default is not None else "")]
            labels += [v if isinstance(v, str) else json.dumps(v) for v in self._choices[1:]]
            self.input: w.ValueWidget = w.Dropdown(
                options=list(zip(labels, range(len(labels)))), value=self._choices.index(value), description=label,
                layout=layout,
            )
        elif spec.kind in ("strings", "json"):
            self.input = w.Textarea(value=format_value(spec, value), description=label, layout=layout,
                                    placeholder=self._placeholder())
        elif spec.kind == "secret":
            self.input = w.Password(value="", description=label, layout=layout, placeholder=self.secret_hint(value, env_var))
        else:
            self.input = w.Text(value=format_value(spec, value), description=label, layout=layout,
                                placeholder=self._placeholder())
        self.input.style.description_width = "12em"
        self.initial = self.input.value
        super().__init__([w.HBox([self.input, self.error]), w.HTML(small(spec.description))])

    def _placeholder(self) -> str:
        if self.spec.default is not None:
            return f"default: {format_value(self.spec, self.spec.default) or json.dumps(self.spec.default)}"
        return {"strings": "one per line", "json": "JSON", "hosts": "api.example.com, 127.0.0.1"}.get(self.spec.kind, "")

    @staticmethod
    def secret_hint(value: Any, env_var: str | None) -> str:
        if isinstance(value, str) and ENV_REF.search(value):
            return f"from {value.strip()} — type to replace"
        if value:
            return "a literal secret is in the file — type it again to move it to an environment variable"
        return f"not set — stored as ${{{env_var}}}" if env_var else "not set"

    @property
    def edited(self) -> bool:
        return self.input.value != self.initial

    def value(self) -> Any:
        """The entered value (None: not set); ValueError when the text does not read as the field's type."""
        if self._choices:
            return self._choices[self.input.value]
        return parse_input(self.spec, self.input.value)

    def show_error(self, message: str) -> None:
        self.error.value = html_error(message)


# ---- raw key/value editor -------------------------------------------------------------------------------------


class KeyValueEditor(w.VBox):
    """Keys without a form field, as text: a value reads as JSON when it parses, else as a string.

    Used for config keys the plugin's schema does not name (or all of them when the plugin failed to
    load) and for the ``[oci]`` table.
    """

    def __init__(self, values: Mapping[str, Any], title: str) -> None:
        self.rows: dict[str, tuple[w.Text, w.Button]] = {}
        self.initial: dict[str, str] = {}
        self.secrets: set[str] = set()  # keys shown as password fields, whose text is never parsed
        self.removed: set[str] = set()
        self.error = w.HTML()
        self.new_key = w.Text(placeholder="new key", layout=w.Layout(width="14em"))
        self.new_value = w.Text(placeholder='value (JSON or text; "quote" to keep text)', layout=w.Layout(width="40%"))
        self.add_button = w.Button(description="add key", icon="plus")
        self.add_button.on_click(lambda _: self.add_key())
        self._lines = w.VBox()
        for key, value in values.items():
            self._row(key, format_loose(value))
        super().__init__([w.HTML(f"<b>{html.escape(title)}</b>"), self._lines,
                          w.HBox([self.new_key, self.new_value, self.add_button]), self.error])

    def _row(self, key: str, text: str, *, new: bool = False) -> None:
        if is_secret(key):  # shown masked, and saved as an environment variable (also when just added)
            self.secrets.add(key)
            box: w.Text = w.Password(value=text if new else "", description=key, layout=w.Layout(width="60%"),
                                     placeholder=FieldRow.secret_hint(parse_loose(text), None))
            text = ""
        else:
            box = w.Text(value=text, description=key, layout=w.Layout(width="60%"))
        box.style.description_width = "12em"
        remove = w.Button(icon="trash", tooltip=f"remove {key}", layout=w.Layout(width="3em"))
        remove.on_click(lambda _, key=key: self.remove_key(key))
        self.rows[key] = (box, remove)
        if not new:
            self.initial[key] = text
        self._lines.children = [*self._lines.children, w.HBox([box, remove])]

    def add_key(self) -> None:
        key = self.new_key.value.strip()
        if not key or key in self.rows:
            self.error.value = html_error("a new, non-empty key" if not key else f"{key!r} is already there")
            return
        self.removed.discard(key)
        self._row(key, self.new_value.value, new=True)
        self.new_key.value = self.new_value.value = ""
        self.error.value = ""

    def remove_key(self, key: str) -> None:
        box, remove = self.rows.pop(key)
        self.removed.add(key)
        self._lines.children = [c for c in self._lines.children if box not in c.children]

    def changes(self) -> dict[str, Any]:
        """Edited keys and their new values (None: remove)."""
        out: dict[str, Any] = {key: None for key in self.removed if key in self.initial}
        for key, (box, _) in self.rows.items():
            if self.initial.get(key) != box.value:
                out[key] = box.value if key in self.secrets else parse_loose(box.value)
        return out

    def show_error(self, message: str) -> None:
        self.error.value = html_error(message)
