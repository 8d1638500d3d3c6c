"""Editing a plugins.toml / .json / .yaml in place, keeping every byte the edit does not touch.

The config widget is a thin face on this module; everything here works without ipywidgets.

``ConfigDocument`` holds the file's text. Each edit (``set_field``, ``rename``, ``move``, ``add``,
``remove``, ``set_oci``) rewrites only the span of text it concerns and is then **checked**: the new text
is parsed with the same parser ``config.py`` uses and must equal the old data with exactly that change.
An edit that cannot be made that way raises ``ConfigEditError`` and leaves the document as it was, so a
file is refused rather than corrupted. How each format is edited:

- TOML: tomlkit, which keeps comments, blank lines, key order and formatting. Comments written above a
  ``[[providers]]`` header are moved onto that table first, so they travel with it on move and remove.
- JSON: spans from a small position-recording parser; new members copy the file's indentation, key
  separator and comma style.
- YAML: spans from PyYAML's composer (node marks). Block and flow collections, comments and quoting styles
  are kept. Files with anchors or aliases are refused (an edit through an alias would change other
  places), as are edits of ``|``/``>`` block scalars.

A provider owns the comment lines directly above it: they move and go away with it, while blank lines
stay where they were (a comment block that opens the file is the file's). Secrets never enter the file:
``set_secret`` writes ``${VAR}`` and ``save`` exports the value to ``os.environ`` for this kernel.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import tomlkit
from tomlkit import items as tk

from .config import DEFAULT_CONFIG, ENV_REF, FORMATS, plugin_source
from .errors import ConfigError
from .keys import ENTRY_KEYS, UnknownKey, schema_of, unknown_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigDocument",
    "ConfigEditError",
    "FieldError",
    "ProviderRecord",
    "is_secret",
    "plain_message",
    "secret_env_var",
    "source_label",
]

Key = Union[str, int]
DocPath = tuple[Key, ...]


class ConfigEditError(ConfigError):
    """An edit that cannot be made without changing more of the file than asked (nothing was changed)."""


class _Refused(Exception):
    """An editor's reason for not making an edit; ``ConfigDocument`` reports it as a ConfigEditError."""


# ---- public records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldError:
    """A validation problem: ``field`` is "name", "path", "config.<key>", "oci", "oci.<key>" or an unknown entry key."""

    index: int | None  # the provider's position; None for the [oci] table
    provider: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.provider or f'providers[{self.index}]'}: " if self.index is not None else ""
        return f"{where}{self.field}: {self.message}"


class ProviderRecord:
    """One ``[[providers]]`` entry. Read it here; change it through its ``ConfigDocument``.

    A record keeps its identity across edits (renames, moves), so a form can hold on to it.
    """

    def __init__(self, doc: ConfigDocument) -> None:
        self._doc = doc

    @property
    def index(self) -> int:
        return self._doc.providers.index(self)

    @property
    def entry(self) -> dict[str, Any]:
        """The whole entry as plain data (a copy), unknown keys included."""
        return copy.deepcopy(self._doc._data["providers"][self.index])

    @property
    def name(self) -> str:
        return _as_str(self.entry.get("name"))

    @property
    def path(self) -> str:
        return _as_str(self.entry.get("path"))

    @property
    def config(self) -> dict[str, Any]:
        config = self.entry.get("config")
        return config if isinstance(config, dict) else {}

    def __repr__(self) -> str:
        return f"<ProviderRecord {self.index}: {self.name!r} {self.path!r}>"


def _as_str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


# ---- secrets and labels ----------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"(^|_)(api_?key|token|access_key|private_key)$|secret|password|passwd", re.IGNORECASE)
_WHOLE_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def is_secret(key: str, schema: Mapping[str, Any] | None = None) -> bool:
    """A config field that holds a secret: named like one (``max_tokens`` is not) or marked so by its schema."""
    if schema and (schema.get("writeOnly") is True or schema.get("format") == "password"):
        return True
    return bool(_SECRET_NAME.search(key))


def secret_env_var(provider: str, key: str, current: Any = None) -> str:
    """The variable a secret is stored in: the one ``current`` already refers to, else ``PROVIDER_KEY``."""
    if isinstance(current, str) and (match := _WHOLE_REF.fullmatch(current.strip())):
        return match[1]
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{provider}_{key}").strip("_").upper()
    return name if name and not name[0].isdigit() else f"_{name}"


def plain_message(error: ConfigError) -> str:
    """A ConfigError's message without its "file [field]: " prefix (shown next to the field), with its hint."""
    message = str(error.args[0]).split(": ", 1)[-1]
    return f"{message} ({error.hint})" if error.hint else message


def source_label(path: str, base: Path | None = None) -> tuple[str, str | None]:
    """What a plugin path is ("bundled wasm", "url native", "oci", "wasm"...), and the problem if it is invalid."""
    if not path.strip():
        return "?", "required: a .wasm or shared-library file, an http(s) URL, bundled:<name> or oci://"
    if path.startswith("oci://"):
        return "oci", None
    try:
        source = plugin_source(path, base or Path.cwd(), "<config>", None, "path")
    except ConfigError as error:
        return "?", plain_message(error)
    return (source.kind if source.scheme == "file" else f"{source.scheme} {source.kind}"), None


# ---- the document ----------------------------------------------------------------------------------


class ConfigDocument:
    """A config file's text, edited in place; see the module docstring for what is kept and how."""

    def __init__(self, text: str, fmt: str, path: Path | None = None, *, on_disk: str | None = None) -> None:
        self.format = fmt
        self.path = path
        self._crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
        self._text = text.replace("\r\n", "\n") if self._crlf else text
        self._editor: _Editor = {"toml": _TomlEditor, "json": _JsonEditor, "yaml": _YamlEditor}[fmt]()
        self._data = self._checked_data(self._editor.load(self._text))
        self.read_only_reason = self._editor.refusal(self._text)
        self._on_disk = on_disk  # what the file held when loaded: save refuses to overwrite other changes
        self._pending_env: dict[str, str] = {}
        self.providers = [ProviderRecord(self) for _ in self._data["providers"]]

    # -- construction

    @classmethod
    def load(cls, path: str | Path) -> ConfigDocument:
        path = Path(path)
        fmt = _format_of(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise ConfigError("file not found", path=str(path), hint="use ConfigDocument.create(path)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", path=str(path)) from exc
        return cls(text, fmt, path, on_disk=text)

    @classmethod
    def create(cls, path: str | Path, template: str | Path = DEFAULT_CONFIG) -> ConfigDocument:
        """A new file at ``path`` (written by ``save``) starting from ``template``'s text."""
        path, template = Path(path), Path(template)
        if _format_of(path) != _format_of(template):
            raise ConfigError(f"the template {template.name} is not {_format_of(path).upper()}", path=str(path))
        return cls(template.read_text(encoding="utf-8"), _format_of(path), path)

    @classmethod
    def from_text(cls, text: str, fmt: str, path: Path | None = None) -> ConfigDocument:
        return cls(text, fmt, path)

    def _checked_data(self, data: Any) -> dict[str, Any]:
        where = str(self.path or f"<{self.format} text>")
        if not isinstance(data, dict):
            raise ConfigError("the top level must be a table/object", path=where)
        data.setdefault("providers", [])
        if not isinstance(data["providers"], list) or not all(isinstance(p, dict) for p in data["providers"]):
            raise ConfigError("'providers' must be a list of tables", path=where, field="providers")
        return data

    # -- reading

    @property
    def text(self) -> str:
        """The file's text as it would be saved."""
        return self._text.replace("\n", "\r\n") if self._crlf else self._text

    @property
    def oci(self) -> dict[str, Any]:
        oci = self._data.get("oci")
        return copy.deepcopy(oci) if isinstance(oci, dict) else {}

    @property
    def base(self) -> Path:
        """The folder relative plugin paths are resolved against."""
        return self.path.parent if self.path else Path.cwd()

    def provider(self, ref: ProviderRef) -> ProviderRecord:
        """A record by record, position or name."""
        if isinstance(ref, ProviderRecord):
            if ref not in self.providers:
                raise KeyError(f"{ref!r} is not in this document")
            return ref
        if isinstance(ref, int):
            return self.providers[ref]
        for record in self.providers:
            if record.name == ref:
                return record
        raise KeyError(f"no provider named {ref!r}; known: {', '.join(r.name for r in self.providers) or '(none)'}")

    def get(self, ref: ProviderRef, field_name: str) -> Any:
        """A provider field by dotted name ("name", "config.model"); None when absent."""
        node: Any = self.provider(ref).entry
        for part in field_name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    # -- editing (each edit is applied whole or not at all)

    def set_field(self, ref: ProviderRef, field_name: str, value: Any) -> None:
        """Set a provider field by dotted name ("path", "config.temperature"); None removes the key."""
        parts = tuple(field_name.split("."))
        if not all(parts):
            raise ValueError(f"bad field name {field_name!r}")
        path: DocPath = ("providers", self.provider(ref).index, *parts)
        self._set(path, value)

    def rename(self, ref: ProviderRef, new_name: str) -> None:
        self.set_field(ref, "name", new_name)

    def set_oci(self, key: str, value: Any) -> None:
        """Set (or, with None, remove) a key of the ``[oci]`` table."""
        self._set(("oci", key), value)

    def set_secret(self, ref: ProviderRef, key: str, secret: str, env_var: str | None = None) -> str:
        """Write ``${VAR}`` for a secret config field; ``save`` puts the secret in ``os.environ[VAR]``.

        A ``secret`` that is itself a ``${VAR}`` reference is written as it is. Returns VAR.
        """
        record = self.provider(ref)
        env_var, reference = self._secret(record.name, secret, env_var, record.config.get(key), key)
        self.set_field(record, f"config.{key}", reference)
        return env_var

    def set_oci_secret(self, key: str, secret: str, env_var: str | None = None) -> str:
        """``set_secret`` for a key of the ``[oci]`` table (a registry password, say)."""
        env_var, reference = self._secret("oci", secret, env_var, self.oci.get(key), key)
        self.set_oci(key, reference)
        return env_var

    def _secret(self, owner: str, secret: str, env_var: str | None, current: Any, key: str) -> tuple[str, str]:
        if _WHOLE_REF.fullmatch(secret.strip()):
            return secret_env_var(owner, key, secret), secret.strip()
        env_var = env_var or secret_env_var(owner, key, current)
        self._pending_env[env_var] = secret
        return env_var, "${" + env_var + "}"

    def add(self, name: str, path: str, config: Mapping[str, Any] | None = None, index: int | None = None) -> ProviderRecord:
        entry: dict[str, Any] = {"name": name, "path": path}
        if config:
            entry["config"] = dict(config)
        index = len(self.providers) if index is None else max(0, min(index, len(self.providers)))
        if "providers" not in self._parsed():
            self._edit(("providers",), lambda d: d.__setitem__("providers", [entry]), lambda e, t: e.set(t, ("providers",), [entry]))
        else:
            self._edit(
                ("providers",),
                lambda d: d["providers"].insert(index, copy.deepcopy(entry)),
                lambda e, t: e.insert(t, ("providers",), index, entry),
            )
        record = ProviderRecord(self)
        self.providers.insert(index, record)
        return record

    def remove(self, ref: ProviderRef) -> None:
        record = self.provider(ref)
        index = record.index
        self._edit(("providers",), lambda d: d["providers"].pop(index), lambda e, t: e.remove(t, ("providers",), index))
        self.providers.remove(record)

    def move(self, ref: ProviderRef, index: int) -> None:
        """Move a provider to position ``index`` (clamped to the list)."""
        record = self.provider(ref)
        src, dst = record.index, max(0, min(index, len(self.providers) - 1))
        if src == dst:
            return

        def data_move(d: dict[str, Any]) -> None:
            d["providers"].insert(dst, d["providers"].pop(src))

        self._edit(("providers",), data_move, lambda e, t: e.move(t, ("providers",), src, dst))
        self.providers.insert(dst, self.providers.pop(src))

    def _set(self, path: DocPath, value: Any) -> None:
        if value is None:
            if _lookup(self._data, path) is _MISSING:
                return
            self._edit(path, lambda d: _data_delete(d, path), lambda e, t: e.delete(t, path))
        elif _lookup(self._data, path) != value or type(_lookup(self._data, path)) is not type(value):
            self._edit(path, lambda d: _data_set(d, path, value), lambda e, t: e.set(t, path, value))

    def _parsed(self) -> Any:
        """The data as parsed, before ``_checked_data`` filled in a missing ``providers``."""
        return self._editor.load(self._text)

    def _edit(self, path: DocPath, change: Callable[[dict[str, Any]], Any], rewrite: Callable[[_Editor, str], str]) -> None:
        if self.read_only_reason:
            raise ConfigEditError(self.read_only_reason, path=str(self.path or "<config>"))
        expected = copy.deepcopy(self._parsed())
        change(expected)
        where = ".".join(str(p) for p in path)
        try:
            text = rewrite(self._editor, self._text)
            ok = _same(self._editor.load(text), expected)
        except _Refused as exc:
            raise ConfigEditError(
                f"cannot change {where} in place: {exc}", path=str(self.path or "<config>"), hint="edit it by hand"
            ) from None
        except Exception as exc:  # a parse error of the rewritten text, or a shape the editor does not handle
            raise ConfigEditError(
                f"cannot change {where} in place ({type(exc).__name__}: {exc})",
                path=str(self.path or "<config>"),
                hint="edit this part of the file by hand",
            ) from exc
        if not ok:
            raise ConfigEditError(
                f"cannot change {where} in place without changing other values",
                path=str(self.path or "<config>"),
                hint="edit this part of the file by hand",
            )
        self._text = text
        self._data = self._checked_data(self._editor.load(text))

    # -- validation

    def validate(self, schema_by_provider: Mapping[str, Mapping[str, Any] | None] | None = None) -> list[FieldError]:
        """Every problem that would stop the file loading, or a plugin accepting its config.

        ``schema_by_provider`` maps a provider name to its plugin's JSON Schema (None or absent: not
        known, so its config keys are not checked).
        """
        schemas = schema_by_provider or {}
        errors: list[FieldError] = []
        seen: dict[str, int] = {}
        for index, record in enumerate(self.providers):
            entry = record.entry
            name = entry.get("name")

            def problem(field_name: str, message: str) -> None:
                errors.append(FieldError(index, name if isinstance(name, str) else None, field_name, message))

            for unknown in unknown_keys(entry, schema_of(ENTRY_KEYS), allowed=()):
                problem(unknown.key, _unknown_message(unknown))
            if not isinstance(name, str) or not name.strip():
                problem("name", "required: a non-empty name")
            elif name in seen:
                problem("name", f"{name!r} is already the name of providers[{seen[name]}]")
            else:
                seen[name] = index
            path = entry.get("path")
            if not isinstance(path, str):
                problem("path", "required: a .wasm or shared-library file, an http(s) URL, bundled:<name> or oci://")
            elif (message := source_label(path, self.base)[1]) is not None:
                problem("path", message)
            config = entry.get("config", {})
            if not isinstance(config, dict):
                problem("config", "must be a table")
                continue
            if (message := check_hosts(config.get("allowed_hosts"))) is not None:
                problem("config.allowed_hosts", message)
            schema = schemas.get(name) if isinstance(name, str) else None
            for key, message in _schema_problems(config, schema):
                problem(f"config.{key}", message)
        oci = self._data.get("oci")
        if oci is not None and not isinstance(oci, dict):
            errors.append(FieldError(None, None, "oci", "must be a table"))
        return errors

    # -- saving

    def save(self, path: str | Path | None = None, *, force: bool = False) -> Path:
        """Write atomically (temp file + ``os.replace``), keeping the previous file as ``<name>.bak``.

        Refuses (ConfigEditError) when the file changed on disk since it was loaded, unless ``force``;
        then exports pending secrets to ``os.environ``.
        """
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save to")
        text = self.text
        for secret in self._pending_env.values():
            if _contains_value(self._data, secret):
                raise ConfigEditError("a secret would be written into the file", path=str(target),
                                      hint="set secrets through their password fields only")
        current = target.read_bytes().decode("utf-8", "replace") if target.exists() else None
        if not force and target == self.path and current != self._on_disk:
            raise ConfigEditError(
                "the file was created by someone else since this editor opened" if self._on_disk is None
                else "the file changed on disk since it was loaded",
                path=str(target),
                hint="reload it, or save with force=True to overwrite",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        if current is not None:
            shutil.copy2(target, target.with_name(target.name + ".bak"))
        descriptor, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(text.encode("utf-8"))
                out.flush()
                os.fsync(out.fileno())
            if current is not None:
                shutil.copymode(target, temp)
            else:  # mkstemp makes 0600 files; a new config gets the usual mode
                os.chmod(temp, 0o666 & ~_umask())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        self.path, self._on_disk = target, text
        os.environ.update(self._pending_env)
        self._pending_env.clear()
        return target


ProviderRef = Union[ProviderRecord, int, str]


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"unsupported extension {path.suffix!r}", path=str(path), hint="use .toml, .json, .yaml or .yml")
    return fmt


# ---- validation helpers -------------------------------------------------------------------------------

_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
_IPV6 = re.compile(r"^\[?[0-9a-fA-F:.]+\]?$")


def check_hosts(hosts: Any) -> str | None:
    """``allowed_hosts`` must be a list of bare host names, as ``AllowList`` compares them."""
    if hosts is None:
        return None
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        return "must be a list of host names"
    for host in hosts:
        if "://" in host or "/" in host:
            return f"{host!r}: a host name only, without scheme or path (e.g. api.example.com)"
        if host != host.lower():
            return f"{host!r}: host names are compared in lower case; write {host.lower()!r}"
        if ":" in host and not _IPV6.match(host):
            return f"{host!r}: no port; the allow-list ignores ports"
        if not (_HOST.match(host) or _IPV6.match(host)):
            return f"{host!r} is not a host name"
    return None


def _unknown_message(unknown: UnknownKey) -> str:
    guess = f" (did you mean {unknown.suggestion!r}?)" if unknown.suggestion else ""
    return f"unknown key{guess}; {unknown.hint}"


def _schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any] | None) -> Iterator[tuple[str, str]]:
    if not schema:
        return
    for unknown in unknown_keys(config, schema):
        yield unknown.key, _unknown_message(unknown)
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for key in schema.get("required") or ():
        if config.get(key) is None and not (isinstance(properties.get(key), Mapping) and "default" in properties[key]):
            yield key, "required"
    for key, value in config.items():
        sub = properties.get(key)
        if isinstance(sub, Mapping) and (message := value_problem(value, sub)):
            yield key, message


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def value_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under a JSON Schema (the subset plugin schemas use), or None."""
    if isinstance(value, str) and ENV_REF.search(value):
        return None  # ${VAR} is expanded when the registry loads; its value is not known here
    for combinator in ("anyOf", "oneOf"):
        if isinstance(alternatives := schema.get(combinator), list):
            if not any(value_problem(value, alt) is None for alt in alternatives if isinstance(alt, Mapping)):
                return f"does not match any allowed form ({_describe(schema)})"
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    if types and not any(_JSON_TYPES.get(t, lambda v: True)(value) for t in types):
        return f"must be {' or '.join(t for t in types if t != 'null')}"
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(json.dumps(v) for v in schema['enum'] if v is not None)}"
    if "const" in schema and value != schema["const"]:
        return f"must be {json.dumps(schema['const'])}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        for bound, test, words in (
            ("minimum", lambda v, b: v >= b, "at least"),
            ("maximum", lambda v, b: v <= b, "at most"),
            ("exclusiveMinimum", lambda v, b: v > b, "more than"),
            ("exclusiveMaximum", lambda v, b: v < b, "less than"),
        ):
            limit = schema.get(bound)
            if isinstance(limit, (int, float)) and not isinstance(limit, bool) and not test(value, limit):
                return f"must be {words} {limit}"
    if isinstance(value, str):
        if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
            return f"must be at least {schema['minLength']} characters"
        if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
            return f"must be at most {schema['maxLength']} characters"
        if isinstance(schema.get("pattern"), str) and not re.search(schema["pattern"], value):
            return f"must match {schema['pattern']}"
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            if message := value_problem(item, schema["items"]):
                return f"item {i + 1}: {message}"
    if isinstance(value, dict):
        properties = schema.get("properties")
        for key in schema.get("required") or ():
            if key not in value:
                return f"needs {key!r}"
        if isinstance(properties, Mapping):
            for key, item in value.items():
                if isinstance(properties.get(key), Mapping) and (message := value_problem(item, properties[key])):
                    return f"{key}: {message}"
    return None


def _describe(schema: Mapping[str, Any]) -> str:
    parts = []
    for alt in schema.get("anyOf") or schema.get("oneOf") or ():
        if isinstance(alt, Mapping):
            parts.append(" | ".join(json.dumps(v) for v in alt["enum"]) if "enum" in alt else str(alt.get("type", "?")))
    return "; ".join(parts)


def _contains_value(node: Any, needle: str) -> bool:
    if isinstance(node, dict):
        return any(_contains_value(v, needle) for v in node.values())
    if isinstance(node, list):
        return any(_contains_value(v, needle) for v in node)
    return node == needle


# ---- plain-data edits (what each text edit must amount to) --------------------------------------------

_MISSING = object()


def _lookup(data: Any, path: DocPath) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(data, list) or not -len(data) <= part < len(data):
                return _MISSING
        elif not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def _data_set(data: Any, path: DocPath, value: Any) -> None:
    for part in path[:-1]:
        if isinstance(part, str) and part not in data:
            data[part] = {}
        data = data[part]
    data[path[-1]] = copy.deepcopy(value)


def _data_delete(data: Any, path: DocPath) -> None:
    for part in path[:-1]:
        data = data[part]
    del data[path[-1]]


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types (1 == 1.0 == True in Python, not in a config file). The order of keys
    is not compared: where a new key lands (above a TOML sub-table, say) is the format's business."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _nest(path: DocPath, value: Any) -> Any:
    for part in reversed(path):
        value = {part: value}
    return value


# ---- shared text helpers ---------------------------------------------------------------------------------


def _eol(text: str, pos: int) -> int:
    """The start of the line after the one ``pos`` is on (``pos`` itself when it already starts a line)."""
    if pos > 0 and text[pos - 1] == "\n":
        return pos
    newline = text.find("\n", pos)
    return len(text) if newline < 0 else newline + 1


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _split_blank(region: str) -> tuple[str, str]:
    """A region's leading blank lines (which stay in place on a move) and the rest (which moves)."""
    match = re.match(r"(?:[ \t]*\n)*", region)
    end = match.end() if match else 0
    return region[:end], region[end:]


def _reorder(separators: list[str], bodies: list[str], default: str) -> str:
    """Bodies joined, each after the separator of the position it now holds."""
    seps = [separators[i] if i < len(separators) else (separators[-1] if len(separators) > 1 else default)
            for i in range(len(bodies))]
    return "".join(s + b for s, b in zip(seps, bodies))


# ---- editors: text in, text out ---------------------------------------------------------------------------


class _Editor(ABC):
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


class _TomlEditor(_Editor):
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
            blank, rest = _split_blank(table.trivia.indent)
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


# -- JSON and YAML: a tree of spans ------------------------------------------------------------------------


@dataclass
class _Node:
    """A value's place in the text. For block (YAML) collections ``end`` is the end of the last child."""

    kind: str  # "map", "seq" or "scalar"
    start: int
    end: int
    flow: bool = True
    keys: list[str] = field(default_factory=list)
    key_spans: list[tuple[int, int]] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)
    style: str | None = None  # YAML scalar style: None (plain), '"', "'", '|' or '>'

    def child(self, key: Key) -> _Node | None:
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


class _SpanEditor(_Editor):
    """Edits by splicing spans; subclasses parse and render."""

    @abstractmethod
    def tree(self, text: str) -> _Node: ...

    @abstractmethod
    def render(self, text: str, value: Any, at: int, node: _Node | None) -> str:
        """``value`` as text to stand at ``at`` (replacing ``node`` when given)."""

    @abstractmethod
    def add_member(self, text: str, node: _Node, key: str, value: Any) -> str: ...

    @abstractmethod
    def drop_member(self, text: str, node: _Node, index: int) -> str: ...

    def _walk(self, text: str, path: DocPath) -> tuple[_Node, int]:
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
            raise _Refused(f"{'.'.join(map(str, path[:depth]))} is not a table")
        return self.add_member(text, node, str(path[depth]), _nest(path[depth + 1 :], value))

    def delete(self, text: str, path: DocPath) -> str:
        node, depth = self._walk(text, path[:-1])
        assert depth == len(path) - 1 and node.kind == "map"
        index = len(node.keys) - 1 - node.keys[::-1].index(str(path[-1]))
        return self.drop_member(text, node, index)

    def _seq(self, text: str, path: DocPath) -> _Node:
        node, depth = self._walk(text, path)
        if depth != len(path) or node.kind != "seq":
            raise _Refused(f"{'.'.join(map(str, path))} is not a list")
        return node

    # Flow collections ([..] / {..}, all of JSON): members separated by commas.

    def flow_insert(
        self, text: str, node: _Node, index: int, member: Callable[[str | None], str], empty_indent: str | None
    ) -> str:
        """Insert ``member(indent)`` at ``index``, copying the separator the collection uses. ``indent`` is
        the new member's line indentation, or None when it shares a line with others (write it compact);
        ``empty_indent`` is the indentation unit an empty collection opens up with (None: stays one line)."""
        members = node.members()
        close = node.end - 1
        if not members:
            if empty_indent is None:
                return text[: node.start + 1] + member(None) + text[close:]
            outer = re.match(r"[ \t]*", text[_line_start(text, node.start) :])[0]  # type: ignore[index]
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

    def flow_drop(self, text: str, node: _Node, index: int) -> str:
        members = node.members()
        if len(members) == 1:
            return text[: node.start + 1] + text[node.end - 1 :]
        if index > 0:
            return text[: members[index - 1][1]] + text[members[index][1] :]
        return text[: members[0][0]] + text[members[1][0] :]


class _JsonEditor(_SpanEditor):
    def load(self, text: str) -> Any:
        return json.loads(text)

    def tree(self, text: str) -> _Node:
        return _JsonTree(text).value(_JsonTree.skip(text, 0))

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

    def render(self, text: str, value: Any, at: int, node: _Node | None) -> str:
        line = _line_start(text, at)
        indent = re.match(r"[ \t]*", text[line:])[0]  # type: ignore[index]
        # Pretty only where the value has its line to itself ("key": value,) or already spans lines.
        alone = re.fullmatch(r'\s*("(?:[^"\\]|\\.)*"\s*:\s*)?', text[line:at]) is not None and (
            node is None or re.match(r"[ \t]*,?[ \t]*(\n|$)", text[node.end :]) is not None
        )
        spans_lines = node is not None and "\n" in text[node.start : node.end]
        return self._dumps(text, value, indent if alone or spans_lines else None)

    def add_member(self, text: str, node: _Node, key: str, value: Any) -> str:
        unit, colon = self._style(text)
        return self.flow_insert(
            text, node, len(node.children), lambda indent: json.dumps(key) + colon + self._dumps(text, value, indent), unit
        )

    def drop_member(self, text: str, node: _Node, index: int) -> str:
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


class _JsonTree:
    """A JSON value's spans (the text is known to be valid JSON: ``json.loads`` read it first)."""

    _WS = re.compile(r"[ \t\n\r]*")
    _ATOM = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null")

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def skip(cls, text: str, pos: int) -> int:
        return cls._WS.match(text, pos).end()  # type: ignore[union-attr]

    def value(self, pos: int) -> _Node:
        text = self.text
        if text[pos] == '"':
            return _Node("scalar", pos, json.decoder.scanstring(text, pos + 1)[1])
        if text[pos] in "{[":
            node = _Node("map" if text[pos] == "{" else "seq", pos, pos)
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
        return _Node("scalar", pos, self._ATOM.match(text, pos).end())  # type: ignore[union-attr]


class _YamlEditor(_SpanEditor):
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

    def tree(self, text: str) -> _Node:
        import yaml

        def convert(node: yaml.Node) -> _Node:
            if isinstance(node, yaml.ScalarNode):
                return _Node("scalar", node.start_mark.index, node.end_mark.index, style=node.style)
            flow = bool(node.flow_style)
            kind = "map" if isinstance(node, yaml.MappingNode) else "seq"
            out = _Node(kind, node.start_mark.index, node.end_mark.index, flow=flow)
            for entry in node.value:
                if kind == "map":
                    key, value = entry
                    if not isinstance(key, yaml.ScalarNode):
                        raise _Refused("a YAML mapping with a non-scalar key")
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

    def render(self, text: str, value: Any, at: int, node: _Node | None) -> str:
        if node is not None and node.kind == "scalar" and node.style in ("|", ">"):
            raise _Refused("this value is a YAML block scalar (| or >)")
        if isinstance(value, (list, dict)) and value and node is not None and node.kind != "scalar" and not node.flow:
            return self._block(value, at - _line_start(text, at))
        return self.scalar(value, node.style if node is not None else None)

    def _entry(self, key: str, value: Any, column: int) -> str:
        head = self.scalar(key) + ":"
        if isinstance(value, (list, dict)) and value:
            return head + "\n" + " " * (column + 2) + self._block(value, column + 2)
        return head + " " + self.scalar(value)

    def add_member(self, text: str, node: _Node, key: str, value: Any) -> str:
        if node.flow:
            return self.flow_insert(text, node, len(node.children), lambda _: self.scalar(key) + ": " + self._dump(value, True), None)
        column = node.key_spans[0][0] - _line_start(text, node.key_spans[0][0])
        text, at = _ensure_newline_after(text, node.end)
        return text[:at] + " " * column + self._entry(key, value, column) + "\n" + text[at:]

    def drop_member(self, text: str, node: _Node, index: int) -> str:
        if node.flow:
            return self.flow_drop(text, node, index)
        key_start = node.key_spans[index][0]
        if len(node.keys) == 1:  # an empty block mapping cannot be written: leave an empty flow one
            return text[:key_start] + "{}" + text[node.children[0].end :]
        line = _line_start(text, key_start)
        if text[line:key_start].strip():  # the key follows "- " on its line: keep the dash for the next key
            return text[:key_start] + text[node.key_spans[index + 1][0] :]
        return text[:line] + text[_eol(text, node.children[index].end) :]

    # -- sequences

    def _regions(self, text: str, path: DocPath) -> tuple[str, _Node, list[int]]:
        """Boundaries of a block sequence's items: item i (with the comments above it) is [b[i], b[i+1])."""
        node = self._seq(text, path)
        parent, _ = self._walk(text, path[:-1])
        key_end = parent.key_spans[len(parent.keys) - 1 - parent.keys[::-1].index(str(path[-1]))][1]
        text, _ = _ensure_newline_after(text, node.end)
        bounds = [_eol(text, key_end)] + [_eol(text, child.end) for child in node.children]
        return text, node, bounds

    def _rebuild(self, text: str, path: DocPath, change: Callable[[list[str]], None]) -> str:
        text, node, bounds = self._regions(text, path)
        separators, bodies = zip(*(_split_blank(text[a:b]) for a, b in zip(bounds, bounds[1:])))
        items = list(bodies)
        change(items)
        return text[: bounds[0]] + _reorder(list(separators), items, "") + text[bounds[-1] :]

    def insert(self, text: str, path: DocPath, index: int, value: Any) -> str:
        node = self._seq(text, path)
        if node.flow or not node.children:
            return self.flow_insert(text, node, index, lambda _: self._dump(value, True), None)
        first = node.children[0].start
        line = _line_start(text, first)
        dash = text.rfind("-", line, first) - line
        column = first - line
        if dash < 0:
            raise _Refused("an unusual YAML list layout")
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


def _ensure_newline_after(text: str, pos: int) -> tuple[str, int]:
    """The start of the line after ``pos``; a file whose last line has no newline gets one."""
    at = _eol(text, pos)
    if at == len(text) and not text.endswith("\n"):
        text += "\n"
        at = len(text)
    return text, at
