"""``plugins.toml`` (or .json / .yaml): the list of providers and the ``[oci]`` table (wire spec 2).

This module reads a config file into ``RegistryConfig`` and validates the fields the host itself uses;
everything else under ``[providers.config]`` is the plugin's business and is kept untouched. Relative
plugin paths are resolved against the config file's folder, so a project folder can be moved whole.

Plugin sources (``path``): a local file, an ``http(s)://`` URL, an ``oci://`` reference, or
``bundled:<name>.wasm`` / ``bundled:<name>.native`` for the plugins shipped with this package (built with
zig on first use). The plugin type comes from the suffix: ``wasm``, or the platform's shared-library
extension (``.native`` means "whatever this platform uses").
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULT_CONFIG", "PluginSource", "ProviderSpec", "RegistryConfig", "ENV_REF", "FORMATS", "discover_config", "expand_env", "load_config", "plugin_source"]

DEFAULT_CONFIG = Path(__file__).parent / "plugins" / "default.toml"
CONFIG_NAMES = ("plugins.toml", "plugins.json", "plugins.yaml", "plugins.yml")
NATIVE_SUFFIX = {"linux": "so", "darwin": "dylib", "win32": "dll"}.get(sys.platform, "so")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
FORMATS = {".toml": "toml", ".json": "json", ".yaml": "yaml", ".yml": "yaml"}


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from: ``scheme`` is file, url, oci or bundled; ``kind`` wasm or native."""

    scheme: str
    location: str
    kind: str

    def __str__(self) -> str:
        return self.location if self.scheme == "file" else f"{self.scheme}:{self.location}"


@dataclass
class ProviderSpec:
    """One ``[[providers]]`` entry."""

    name: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    source: PluginSource | None = None  # None for oci:// until the OCI pull decides the kind


@dataclass
class RegistryConfig:
    providers: list[ProviderSpec]
    oci: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def names(self) -> list[str]:
        return [spec.name for spec in self.providers]


def discover_config(folder: Path | None = None) -> Path:
    """``plugins.toml`` (or .json/.yaml/.yml) in ``folder`` (default: cwd), else the bundled default."""
    folder = folder or Path.cwd()
    return next((folder / n for n in CONFIG_NAMES if (folder / n).is_file()), DEFAULT_CONFIG)


def load_config(path: str | Path) -> RegistryConfig:
    """Read and validate a config file; raise ConfigError naming the file, line and field."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"unsupported extension {path.suffix!r}", path=str(path), hint="use .toml, .json, .yaml or .yml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", path=str(path), hint="create it, or use PluginRegistry.default()") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(path)) from exc
    return parse_config(text, fmt, path)


def parse_config(text: str, fmt: str, path: Path | None = None) -> RegistryConfig:
    """Parse config ``text`` in ``fmt`` ("toml", "json" or "yaml")."""
    where = str(path) if path else f"<{fmt} text>"
    document = _parse(text, fmt, where)
    if not isinstance(document, dict):
        raise ConfigError("the top level must be a table/object", path=where)
    providers = document.get("providers")
    if providers is None:
        raise ConfigError(
            "missing the required 'providers' list",
            path=where,
            field="providers",
            hint="add at least '[[providers]]' entries (an empty list 'providers = []' is allowed)",
        )
    if not isinstance(providers, list):
        raise ConfigError("'providers' must be a list of tables", path=where, field="providers")
    base = path.parent if path else Path.cwd()
    specs = [_provider(entry, i, base, where, text) for i, entry in enumerate(providers)]
    _check_unique(specs, where, text)
    oci = document.get("oci") or {}
    if not isinstance(oci, dict):
        raise ConfigError("'oci' must be a table", path=where, field="oci")
    return RegistryConfig(specs, oci, path)


def _parse(text: str, fmt: str, where: str) -> Any:
    try:
        if fmt == "toml":
            return tomllib.loads(text)
        if fmt == "json":
            return json.loads(text)
        import yaml  # only YAML users pay for the import

        return yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+)", str(exc))
        raise ConfigError(f"invalid TOML: {exc}", path=where, line=int(match[1]) if match else None) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg} (column {exc.colno})", path=where, line=exc.lineno) from None
    except Exception as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=where, line=line) from None


def _provider(entry: Any, index: int, base: Path, where: str, text: str) -> ProviderSpec:
    label = f"providers[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError("each provider must be a table", path=where, field=label)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("'name' is required and must be a non-empty string", path=where, field=f"{label}.name")
    label = f"providers[{index}] ({name})"
    line = _line_of(text, name)
    path = entry.get("path")
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(
            "'path' is required: a .wasm or shared-library file, an http(s) URL or an oci:// reference",
            path=where,
            line=line,
            field=f"{label}.path",
        )
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError("'config' must be a table", path=where, line=line, field=f"{label}.config")
    hosts = config.get("allowed_hosts")
    if hosts is not None and not (isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)):
        raise ConfigError(
            "'allowed_hosts' must be a list of host names", path=where, line=line, field=f"{label}.config.allowed_hosts"
        )
    source = None if path.startswith("oci://") else plugin_source(path, base, where, line, f"{label}.path")
    return ProviderSpec(name, path, config, source)


def plugin_source(path: str, base: Path, where: str, line: int | None, field_name: str) -> PluginSource:
    """Where ``path`` points and which plugin kind it is; ConfigError naming ``where`` if unknown."""
    if path.startswith("bundled:"):
        scheme, location = "bundled", path.removeprefix("bundled:")
    elif path.startswith(("http://", "https://")):
        scheme, location = "url", path
    else:
        scheme, location = "file", str((base / Path(path).expanduser()).resolve())
    stem = location.split("?")[0]
    if stem.endswith("wasm"):  # QueryMT's plain suffix test (no dot), kept for compatibility
        kind = "wasm"
    elif stem.endswith(NATIVE_SUFFIX) or (scheme == "bundled" and stem.endswith(".native")):
        kind = "native"
    else:
        raise ConfigError(
            f"cannot tell the plugin type of {path!r}",
            path=where,
            line=line,
            field=field_name,
            hint=f"a plugin path ends in .wasm or .{NATIVE_SUFFIX} (or is an oci:// reference)",
        )
    return PluginSource(scheme, location, kind)


def _check_unique(specs: list[ProviderSpec], where: str, text: str) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise ConfigError(
                f"provider name {spec.name!r} is used twice", path=where, line=_line_of(text, spec.name, last=True)
            )
        seen.add(spec.name)


def _line_of(text: str, name: str, *, last: bool = False) -> int | None:
    """The line where a provider's name is written (best effort, for error messages)."""
    pattern = re.compile(r"""name["']?\s*[:=]\s*["']""" + re.escape(name) + r"""["']""")
    lines = [i for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    return (lines[-1] if last else lines[0]) if lines else None


def expand_env(value: Any) -> Any:
    """``${VAR}`` / ``${VAR:-default}`` in config strings, so files can refer to secrets by name."""
    if isinstance(value, str):
        return ENV_REF.sub(lambda m: os.environ.get(m[1]) or (m[2] or ""), value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value
