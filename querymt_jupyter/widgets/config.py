"""``ConfigWidget``: an editor of plugins.toml / .json / .yaml (``%querymt config``).

One form per provider, generated from the plugin's JSON Schema, plus its host field ``allowed_hosts``, a
raw key/value editor for keys the schema does not name (the only editor when the plugin does not load),
and the ``[oci]`` table. Saving validates first (messages next to the fields), writes through
``configedit.ConfigDocument`` (which keeps every byte it is not asked to change), then reloads the
session's registry and shows each provider's load status.

Widget construction is kept apart from the logic: the pure pieces (``FieldSpec``, ``parse_input``,
``format_value``) take no widget, and every widget class exposes its parts so tests can drive them.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..config import ENV_REF, DEFAULT_CONFIG, ProviderSpec, RegistryConfig, load_config, parse_config
from ..configedit import (
    ConfigDocument,
    ConfigEditError,
    FieldError,
    ProviderRecord,
    is_secret,
    plain_message,
    secret_env_var,
    source_label,
)
from ..errors import ConfigError, QueryMTError
from ..registry import PluginRegistry
from ..session import current

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["ConfigWidget", "FieldSpec", "ProviderForm", "field_specs", "format_value", "parse_input"]

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


def _hosts_spec() -> FieldSpec:
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


def _html_error(message: str) -> str:
    return f'<span style="color:#c62828">{html.escape(message)}</span>' if message else ""


def _small(text: str) -> str:
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
        super().__init__([w.HBox([self.input, self.error]), w.HTML(_small(spec.description))])

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
        self.error.value = _html_error(message)


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
            self.error.value = _html_error("a new, non-empty key" if not key else f"{key!r} is already there")
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
        self.error.value = _html_error(message)


# ---- one provider ----------------------------------------------------------------------------------------------


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
        self.rows[HOSTS] = FieldRow(_hosts_spec(), config.get(HOSTS))
        known = set(self.rows)
        self.raw = KeyValueEditor(
            {k: v for k, v in config.items() if k not in known},
            "other config keys" if info.schema is not None else "config (raw: the plugin did not load)",
        )
        self.config_error = w.HTML()
        notice = w.HTML(_html_error(f"schema unavailable: {info.error}") if info.error else "")
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
                self.name_error.value = _html_error(error.message)
            elif error.field == "path":
                self.path_error.value = _html_error(error.message)
            elif key in self.rows:
                self.rows[key].show_error(error.message)
            elif error.field == "config":
                self.config_error.value = _html_error(error.message)
            else:
                raw_messages.append(f"{key}: {error.message}")
        self.raw.show_error("; ".join(raw_messages))

    def errors_shown(self) -> dict[str, str]:
        """The messages on screen by field, as plain text ('' where there is none)."""
        shown = {"name": self.name_error.value, "path": self.path_error.value, "raw": self.raw.error.value}
        shown.update({f"config.{key}": row.error.value for key, row in self.rows.items()})
        return {k: html.unescape(re.sub(r"<[^>]+>", "", v)) for k, v in shown.items()}


# ---- the editor ---------------------------------------------------------------------------------------------------


class ConfigWidget(w.VBox):
    """The plugins.toml editor. ``save()`` (the Save button) validates, writes, reloads the registry.

    ``path`` defaults to the session registry's config file; when that is the bundled default, a new
    ``plugins.toml`` in the working directory, started from the default and written on the first save.
    Parts: ``doc`` (the ConfigDocument), ``forms`` (one ProviderForm per provider, in file order),
    ``new_name``/``new_path``/``add_button``, ``oci``, ``save_button``, ``revert_button``, ``status``, and
    after a save ``load_status`` (provider -> "loaded" or its load error).
    """

    def __init__(self, path: str | Path | None = None, session: Session | None = None) -> None:
        if session is None:
            session = current()
        self.session = session
        self.doc = _open(path, session)
        self.forms: list[ProviderForm] = []
        self.load_status: dict[str, str] = {}  # after a save: provider -> "loaded" or the load error
        self._schemas: dict[ProviderRecord, SchemaInfo] = {}  # by record: survives renames and moves

        self.header = w.HTML()
        self.notice = w.HTML(_html_error(f"read only: {self.doc.read_only_reason}") if self.doc.read_only_reason else "")
        self.accordion = w.Accordion()
        self.new_name = w.Text(placeholder="name", layout=w.Layout(width="14em"))
        self.new_path = w.Text(placeholder="path: x.wasm, x.so, https://…, bundled:echo.wasm, oci://…",
                               layout=w.Layout(width="40%"))
        self.add_button = w.Button(description="add provider", icon="plus")
        self.add_error = w.HTML()
        self.oci = _oci_editor(self.doc)
        self.save_button = w.Button(description="Save", icon="save", button_style="primary")
        self.revert_button = w.Button(description="Reload from disk", icon="refresh")
        self.status = w.HTML()
        self.add_button.on_click(lambda _: self.add())
        self.save_button.on_click(lambda _: self.save())
        self.revert_button.on_click(lambda _: self.revert())
        self.save_button.disabled = self.add_button.disabled = bool(self.doc.read_only_reason)
        super().__init__([
            self.header, self.notice, self.accordion,
            w.HBox([self.new_name, self.new_path, self.add_button, self.add_error]),
            self.oci,
            w.HBox([self.save_button, self.revert_button]),
            self.status,
        ])
        self._build()

    # -- building

    def _build(self) -> None:
        self.forms = [self._form(record) for record in self.doc.providers]
        self._show_forms()
        self._show_header()

    def _show_header(self) -> None:
        doc = self.doc
        new = "" if doc.path and doc.path.exists() else " (new file, from the bundled default; written on save)"
        self.header.value = f"<b>{html.escape(str(doc.path))}</b> · {doc.format.upper()}{html.escape(new)}"

    def _form(self, record: ProviderRecord) -> ProviderForm:
        info = self._schemas.get(record)
        if info is None:
            info = self._schemas[record] = self._load_schema(record)
        form = ProviderForm(record, info, self.doc.base)
        form.up_button.on_click(lambda _: self.move(form, -1))
        form.down_button.on_click(lambda _: self.move(form, +1))
        form.remove_button.on_click(lambda _: self.remove(form))
        for button in (form.up_button, form.down_button, form.remove_button):
            button.disabled = bool(self.doc.read_only_reason)
        form.name.observe(lambda _: self._retitle(), "value")
        form.path.observe(lambda _: self._retitle(), "value")
        form.status.value = self._load_status(record)
        return form

    def _load_status(self, record: ProviderRecord) -> str:
        """Whether the session's registry loaded this provider (as configured on disk), as HTML."""
        registry = self.session.registry
        if not self._same_spec(record):
            return _small("not loaded: saving loads it")
        factory = next((f for f in registry.list() if f.name == record.name), None)
        if factory is not None:
            return _small(f"loaded · {factory.plugin_type} · generation {factory.generation}")
        if record.name in registry.errors:
            return _html_error(f"error: {registry.errors[record.name]}")
        return _small("not loaded yet")

    def _show_forms(self) -> None:
        selected = self.accordion.selected_index
        self.accordion.children = self.forms
        self.accordion.titles = tuple(form.title for form in self.forms)
        self.accordion.selected_index = selected if selected is not None and selected < len(self.forms) else None

    def _retitle(self) -> None:
        self.accordion.titles = tuple(form.title for form in self.forms)

    def _same_spec(self, record: ProviderRecord) -> bool:
        """Whether the session registry's provider of this name is this very plugin (its schema is reusable)."""
        spec = next((s for s in self.session.registry.config.providers if s.name == record.name), None)
        if spec is None or spec.path != record.path:
            return False
        try:
            return spec.source is None or self._spec(record).source == spec.source
        except QueryMTError:
            return False

    def _spec(self, record: ProviderRecord) -> ProviderSpec:
        """The record as the registry would read it (name and path only: a schema does not depend on config)."""
        entry = {"name": record.name or "unnamed", "path": record.path}
        return parse_config(json.dumps({"providers": [entry]}), "json", self.doc.path).providers[0]

    def _load_schema(self, record: ProviderRecord) -> SchemaInfo:
        """The plugin's config schema: from the session's registry when it holds this plugin, else by loading it."""
        try:
            if self._same_spec(record):
                return SchemaInfo(self.session.registry[record.name].config_schema())
            with PluginRegistry(RegistryConfig([self._spec(record)], {}, self.doc.path)) as registry:
                return SchemaInfo(registry[record.name or "unnamed"].config_schema())
        except QueryMTError as error:
            return SchemaInfo(None, str(error))
        except Exception as error:  # a plugin whose config_schema is not JSON, a loader bug: show it, keep editing
            return SchemaInfo(None, f"{type(error).__name__}: {error}")

    # -- structural edits (applied to the document at once; field edits wait for save)

    def add(self) -> ProviderRecord | None:
        name, path = self.new_name.value.strip(), self.new_path.value.strip()
        problem = "a name" if not name else f"{name!r} is taken" if name in self._names() else source_label(path, self.doc.base)[1]
        if problem:
            self.add_error.value = _html_error(problem)
            return None
        try:
            record = self.doc.add(name, path)
        except ConfigEditError as error:
            self.add_error.value = _html_error(plain_message(error))
            return None
        self.add_error.value = ""
        self.new_name.value = self.new_path.value = ""
        self.forms.append(self._form(record))
        self._show_forms()
        self.accordion.selected_index = len(self.forms) - 1
        self._set_status("added; not saved yet")
        return record

    def _names(self) -> list[str]:
        return [form.name.value for form in self.forms]

    def remove(self, form: ProviderForm) -> None:
        try:
            self.doc.remove(form.record)
        except ConfigEditError as error:
            self._set_status(plain_message(error), error=True)
            return
        self.forms.remove(form)
        self._show_forms()
        self._set_status(f"removed {form.name.value!r}; not saved yet")

    def move(self, form: ProviderForm, step: int) -> None:
        index = self.forms.index(form) + step
        if not 0 <= index < len(self.forms):
            return
        try:
            self.doc.move(form.record, index)
        except ConfigEditError as error:
            self._set_status(plain_message(error), error=True)
            return
        self.forms.remove(form)
        self.forms.insert(index, form)
        self._show_forms()
        self.accordion.selected_index = index

    # -- save

    def schemas(self) -> dict[str, dict[str, Any] | None]:
        return {form.name.value: self._schemas[form.record].schema for form in self.forms}

    def save(self) -> bool:
        """Validate, write (atomically, with a .bak), reload the registry. False when nothing was written."""
        problems: list[FieldError] = []
        for form in self.forms:
            problems += form.apply(self.doc)
        for key, value in self.oci.changes().items():
            try:
                if key in self.oci.secrets and value is not None:
                    self.doc.set_oci_secret(key, value)
                else:
                    self.doc.set_oci(key, value)
            except ConfigEditError as error:
                problems.append(FieldError(None, None, f"oci.{key}", plain_message(error)))
        problems += self.doc.validate(self.schemas()) + self._oci_problems()
        for index, form in enumerate(self.forms):
            form.show_errors([p for p in problems if p.index == index])
        self.oci.show_error("; ".join(f"{p.field}: {p.message}" for p in problems if p.index is None))
        if problems:
            self._set_status(f"not saved: {len(problems)} problem{'s' * (len(problems) != 1)} (see the fields)", error=True)
            return False
        existed = bool(self.doc.path and self.doc.path.exists())
        try:
            path = self.doc.save()
        except ConfigEditError as error:
            self._set_status(f"not saved: {plain_message(error)}", error=True)
            return False
        except OSError as error:
            self._set_status(f"not saved: {error}", error=True)
            return False
        self._reload(path, backup=existed)
        return True

    def _oci_problems(self) -> list[FieldError]:
        """The ``[oci]`` table read as the OCI puller reads it (known keys, types): a typo shows before saving."""
        if not self.doc.oci:
            return []
        from ..oci import OciSettings  # only here: it brings the OCI client along

        try:
            OciSettings.from_table(self.doc.oci, self.doc.base)
        except ConfigError as error:
            return [FieldError(None, None, error.field or "oci", plain_message(error))]
        return []

    def _reload(self, path: Path, *, backup: bool) -> None:
        """Swap in a registry for the saved file and load every provider, showing each one's status."""
        try:
            registry = PluginRegistry(load_config(path))
        except QueryMTError as error:
            self._set_status(f"saved to {path}, but it does not load: {error}", error=True)
            return
        self.session.use_registry(registry)
        report = registry.load_all()
        self._schemas.clear()
        self.oci = self._replace(self.oci, _oci_editor(self.doc))
        self._build()
        lines = [f"saved {html.escape(str(path))}" + (f" (previous version: {html.escape(path.name)}.bak)" if backup else "")]
        lines += [f"✓ {html.escape(name)}: loaded" for name in report.loaded]
        lines += [_html_error(f"✗ {name}: {error}") for name, error in report.failed.items()]
        self.status.value = "<br>".join(lines)
        self.load_status = {name: "loaded" for name in report.loaded} | {n: str(e) for n, e in report.failed.items()}

    def _replace(self, old: KeyValueEditor, new: KeyValueEditor) -> KeyValueEditor:
        self.children = tuple(new if child is old else child for child in self.children)
        return new

    def revert(self) -> None:
        """Forget unsaved edits: read the file again."""
        self.doc = _open(self.doc.path, self.session)
        self._schemas.clear()
        self.oci = self._replace(self.oci, _oci_editor(self.doc))
        self._build()
        self._set_status("reloaded from disk")

    def _set_status(self, message: str, *, error: bool = False) -> None:
        self.status.value = _html_error(message) if error else html.escape(message)


def _oci_editor(doc: ConfigDocument) -> KeyValueEditor:
    editor = KeyValueEditor(doc.oci, "[oci] — settings for oci:// plugins")
    editor.new_key.placeholder = "allow_native, insecure_registries, public_key, docker_config…"
    return editor


def _open(path: str | Path | None, session: Session) -> ConfigDocument:
    if path is None:
        configured = session.registry.config.path
        if configured is not None and Path(configured).resolve() != DEFAULT_CONFIG.resolve():
            return ConfigDocument.load(configured)
        path = Path.cwd() / "plugins.toml"
    path = Path(path)
    return ConfigDocument.load(path) if path.exists() else ConfigDocument.create(path)
