"""``ConfigWidget``: an editor of plugins.toml / .json / .yaml (``%querymt config``).

One form per provider, generated from the plugin's JSON Schema, plus its host field ``allowed_hosts``, a
raw key/value editor for keys the schema does not name (the only editor when the plugin does not load),
and the ``[oci]`` table. Saving validates first (messages next to the fields), writes through
``configedit.ConfigDocument`` (which keeps every byte it is not asked to change), then reloads the
session's registry and shows each provider's load status.

The parts: fields.py (what a schema property becomes, one field, the raw key/value table), form.py (one
provider's form); here the list of forms and saving.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..config import DEFAULT_CONFIG, ProviderSpec, RegistryConfig, load_config, parse_config
from ..configedit import ConfigDocument, ConfigEditError, FieldError, ProviderRecord, plain_message, source_label
from ..errors import ConfigError, QueryMTError
from ..registry import PluginRegistry
from ..session import current
from .fields import KeyValueEditor, html_error, small
from .form import ProviderForm, SchemaInfo

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["ConfigWidget"]


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
        self.notice = w.HTML(html_error(f"read only: {self.doc.read_only_reason}") if self.doc.read_only_reason else "")
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
            return small("not loaded: saving loads it")
        factory = next((f for f in registry.list() if f.name == record.name), None)
        if factory is not None:
            return small(f"loaded · {factory.plugin_type} · generation {factory.generation}")
        if record.name in registry.errors:
            return html_error(f"error: {registry.errors[record.name]}")
        return small("not loaded yet")

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
            self.add_error.value = html_error(problem)
            return None
        try:
            record = self.doc.add(name, path)
        except ConfigEditError as error:
            self.add_error.value = html_error(plain_message(error))
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
        lines += [html_error(f"✗ {name}: {error}") for name, error in report.failed.items()]
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
        self.status.value = html_error(message) if error else html.escape(message)


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
