"""``ConfigDocument``: a config file's text and data, each edit made by a format's editor and then checked."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from ..config import DEFAULT_CONFIG, FORMATS, plugin_source
from ..errors import ConfigError
from ..keys import ENTRY_KEYS, schema_of, unknown_keys
from .checks import WHOLE_REF, check_hosts, contains_value, schema_problems, secret_env_var, unknown_message
from .editor import DocPath, Editor, Refused
from .json_editor import JsonEditor
from .toml_editor import TomlEditor
from .yaml_editor import YamlEditor

__all__ = ["ConfigDocument", "ConfigEditError", "FieldError", "ProviderRecord", "plain_message", "source_label"]


class ConfigEditError(ConfigError):
    """An edit that cannot be made without changing more of the file than asked (nothing was changed)."""


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


class ConfigDocument:
    """A config file's text, edited in place; see the module docstring for what is kept and how."""

    def __init__(self, text: str, fmt: str, path: Path | None = None, *, on_disk: str | None = None) -> None:
        self.format = fmt
        self.path = path
        self._crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
        self._text = text.replace("\r\n", "\n") if self._crlf else text
        self._editor: Editor = {"toml": TomlEditor, "json": JsonEditor, "yaml": YamlEditor}[fmt]()
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
        if WHOLE_REF.fullmatch(secret.strip()):
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

    def _edit(self, path: DocPath, change: Callable[[dict[str, Any]], Any], rewrite: Callable[[Editor, str], str]) -> None:
        if self.read_only_reason:
            raise ConfigEditError(self.read_only_reason, path=str(self.path or "<config>"))
        expected = copy.deepcopy(self._parsed())
        change(expected)
        where = ".".join(str(p) for p in path)
        try:
            text = rewrite(self._editor, self._text)
            ok = _same(self._editor.load(text), expected)
        except Refused as exc:
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
                problem(unknown.key, unknown_message(unknown))
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
            for key, message in schema_problems(config, schema):
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
            if contains_value(self._data, secret):
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


