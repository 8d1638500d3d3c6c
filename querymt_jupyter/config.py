"""``plugins.toml`` (or .json / .yaml): the list of providers and the ``[oci]`` table (wire spec 2).

This module reads a config file into ``RegistryConfig`` and validates the fields the host itself uses;
everything else under ``[providers.config]`` is the plugin's business and is kept untouched. Relative
plugin paths are resolved against the config file's folder, so a project folder can be moved whole.

Plugin sources (``path``): a local file, an ``http(s)://`` URL, an ``oci://`` reference, or
``bundled:<name>.wasm`` / ``bundled:<name>.native`` for the plugins shipped with this package (built with
zig on first use). The plugin type comes from the suffix: ``wasm``, or the platform's shared-library
extension (``.native`` means "whatever this platform uses"). A bare ``bundled:<name>`` picks the native
build where this platform has one (see ``native_builds_here``) and ``[oci] allow_native`` is not false,
else the Wasm build; the choice is recorded in the spec's ``source`` (``bundled:<name>.native``).

``allowed_paths`` (a ``[[providers]]`` key beside ``path``; our extension, QueryMT sets no Extism
``allowed_paths``): the host directories a Wasm plugin may read, mounted read-only into its WASI sandbox.
Either a list of directories, each mounted at the same absolute path inside the guest (so one file path
in ``[providers.config]`` works for the native and the Wasm build), or a table ``{host dir = guest
path}``. ``~``, ``${VAR}`` and paths relative to the config file's folder are resolved here, and every
directory must exist. Native plugins are not sandboxed: they read any file, and the key changes nothing::

    [[providers]]
    name = "tinyllm"
    path = "bundled:tinyllm"
    allowed_paths = ["${QUERYMT_JUPYTER_MODELS}"]       # or { "~/models" = "/models" }
    [providers.config]
    checkpoint = "${QUERYMT_JUPYTER_MODELS}/tinyllm-kjv.bin"
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .keys import ENTRY_KEYS, schema_of, unknown_keys
from .tinyllm import MODELS_DIR  # the bundled model files: ${QUERYMT_JUPYTER_MODELS} unless the environment sets it

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["DEFAULT_CONFIG", "MODELS_DIR", "PluginSource", "ProviderSpec", "RegistryConfig", "ENV_REF", "FORMATS", "discover_config", "expand_env", "load_config", "native_builds_here", "plugin_source"]

DEFAULT_CONFIG = Path(__file__).parent / "plugins" / "default.toml"
# Variables ${VAR} expands when the environment does not define them (the environment wins).
BUILTIN_VARS = {"QUERYMT_JUPYTER_MODELS": str(MODELS_DIR)}
# Where a bundled plugin's native build runs: the platforms the native loader supports and zig targets.
NATIVE_PLATFORMS = frozenset(
    (system, machine) for system in ("Linux", "Darwin", "Windows") for machine in ("x86_64", "aarch64")
)
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
    # Wasm only: absolute host directory -> guest path, each mounted read-only (loaders/wasm.py).
    allowed_paths: dict[str, str] = field(default_factory=dict)
    # Where the entry and each of its config keys are written, for errors found once the plugin loads.
    origin: str | None = None
    label: str = ""
    lines: dict[str, int] = field(default_factory=dict)


@dataclass
class RegistryConfig:
    providers: list[ProviderSpec]
    oci: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def names(self) -> list[str]:
        return [spec.name for spec in self.providers]

    def provider(self, name: str) -> ProviderSpec | None:
        """The ``[[providers]]`` entry called ``name``, if there is one."""
        return next((spec for spec in self.providers if spec.name == name), None)


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
    oci = document.get("oci") or {}
    if not isinstance(oci, dict):
        raise ConfigError("'oci' must be a table", path=where, field="oci")
    # Only false turns native builds off; OciSettings reports a value that is not a bool.
    allow_native = oci.get("allow_native", True) is not False
    base = path.parent if path else Path.cwd()
    specs = [_provider(entry, i, base, where, text, allow_native) for i, entry in enumerate(providers)]
    _check_unique(specs, where, text)
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
        # Python 3.11's TOMLDecodeError keeps the position only in its text: "... (at line 3, column 8)"
        match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", str(exc))
        message = str(exc)[: match.start()] if match else str(exc)
        line, column = (int(match[1]), int(match[2])) if match else (None, None)
        raise ConfigError(f"invalid TOML: {message}", path=where, line=line, column=column) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path=where, line=exc.lineno, column=exc.colno) from None
    except Exception as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", path=where, line=line, column=column) from None


def _provider(entry: Any, index: int, base: Path, where: str, text: str, allow_native: bool = True) -> ProviderSpec:
    label = f"providers[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError("each provider must be a table", path=where, field=label)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("'name' is required and must be a non-empty string", path=where, field=f"{label}.name")
    label = f"providers[{index}] ({name})"
    line = _line_of(text, name)
    _check_known(entry, ENTRY_KEYS, "a [[providers]] entry", where, text, line, label)
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
    if "allowed_paths" in config:  # a TOML key written under [providers.config] lands in the plugin's config
        raise ConfigError(
            "'allowed_paths' is a key of the provider entry, not of its config",
            path=where,
            line=_line_after(text, line, "allowed_paths"),
            field=f"{label}.config.allowed_paths",
            hint="move it next to 'path' (in TOML: above the [providers.config] table)",
        )
    hosts = config.get("allowed_hosts")
    if hosts is not None and not (isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)):
        raise ConfigError(
            "'allowed_hosts' must be a list of host names", path=where, line=line, field=f"{label}.config.allowed_hosts"
        )
    source = (
        None
        if path.startswith("oci://")
        else plugin_source(path, base, where, line, f"{label}.path", allow_native=allow_native)
    )
    grants = entry.get("allowed_paths")
    allowed = {}
    if grants is not None:
        allowed = _allowed_paths(grants, base, where, _line_after(text, line, "allowed_paths"), label)
    lines = {key: at for key in config if (at := _line_after(text, line, key)) is not None}
    origin = None if where.startswith("<") else where  # "<toml text>": parsed from a string
    return ProviderSpec(name, path, config, source, allowed, origin, label, lines)


def _check_known(
    table: dict[str, Any], valid: tuple[str, ...], owner: str, where: str, text: str, line: int | None, label: str
) -> None:
    """A key this package does not read is an error naming the closest one (keys.py)."""
    for unknown in unknown_keys(table, schema_of(valid), allowed=()):
        raise ConfigError(
            unknown.message(owner),
            path=where,
            line=_line_after(text, line, unknown.key),
            field=f"{label}.{unknown.key}",
            hint=unknown.hint,
        )


def native_builds_here() -> bool:
    """Whether this platform runs native builds of the bundled plugins (else only their Wasm builds).

    Only the platform decides (zig builds either kind, so a missing ``ziglang`` fails both the same way).
    """
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    return sys.platform != "emscripten" and (platform.system(), machine) in NATIVE_PLATFORMS


def plugin_source(
    path: str, base: Path, where: str, line: int | None, field_name: str, *, allow_native: bool = True
) -> PluginSource:
    """Where ``path`` points and which plugin kind it is; ConfigError naming ``where`` if unknown.

    A bare ``bundled:<name>`` becomes ``<name>.native`` where ``native_builds_here()`` and ``allow_native``,
    else ``<name>.wasm``.
    """
    if path.startswith("bundled:"):
        scheme, location = "bundled", path.removeprefix("bundled:")
        if location and "." not in location:
            location += ".native" if allow_native and native_builds_here() else ".wasm"
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


def _allowed_paths(grants: Any, base: Path, where: str, line: int | None, label: str) -> dict[str, str]:
    """``allowed_paths`` as {absolute host dir: guest path}; ConfigError naming the field otherwise."""
    field_name = f"{label}.allowed_paths"
    if isinstance(grants, list) and all(isinstance(g, str) for g in grants):
        pairs = [(g, None, f"{field_name}[{i}]") for i, g in enumerate(grants)]
    elif isinstance(grants, dict) and all(isinstance(g, str) for g in grants.values()):
        pairs = [(host, guest, f"{field_name}[{json.dumps(host)}]") for host, guest in grants.items()]
    else:
        raise ConfigError(
            "'allowed_paths' must be a list of directories or a table of host directory = guest path",
            path=where,
            line=line,
            field=field_name,
            hint='e.g. allowed_paths = ["~/models"] or allowed_paths = { "~/models" = "/models" }',
        )
    allowed: dict[str, str] = {}
    for written, guest, name in pairs:
        expanded = expand_env(written).strip()
        if not expanded:
            raise ConfigError(
                f"{written!r} is an empty path", path=where, line=line, field=name, hint="is the ${VAR} in it set?"
            )
        # abspath, not resolve: the guest sees the path as written, symlinks and all
        host = os.path.abspath(base / Path(expanded).expanduser())
        if not os.path.isdir(host):
            problem = "is not a directory" if os.path.exists(host) else "does not exist"
            raise ConfigError(
                f"allowed path {host} {problem}",
                path=where,
                line=line,
                field=name,
                hint="create the directory, or correct the path (a plugin can be granted directories only)",
            )
        if guest is None:
            guest = host
        elif not guest.startswith("/"):
            raise ConfigError(
                f"the guest path {guest!r} must be absolute (start with /)", path=where, line=line, field=name
            )
        if allowed.get(host) == guest:  # written twice: harmless
            continue
        if host in allowed:
            raise ConfigError(
                f"{host} is granted twice (at {allowed[host]!r} and {guest!r})", path=where, line=line, field=name
            )
        if guest in allowed.values():
            raise ConfigError(f"the guest path {guest!r} is granted twice", path=where, line=line, field=name)
        allowed[host] = guest
    return allowed


def _line_after(text: str, start: int | None, key: str) -> int | None:
    """The first line from ``start`` on that mentions ``key`` (best effort), else ``start``."""
    for number, line in enumerate(text.splitlines()[(start or 1) - 1 :], start or 1):
        if key in line:
            return number
    return start


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
    """``${VAR}`` / ``${VAR:-default}`` in config strings, so files can refer to secrets by name.

    A variable that is unset (or empty) in the environment takes its value from ``BUILTIN_VARS`` if it is
    one of those, else the ``:-default``, else "". Built in: ``${QUERYMT_JUPYTER_MODELS}``, the absolute
    path of the package's ``models`` folder (the bundled model files); setting it in the environment
    points configs elsewhere.
    """
    if isinstance(value, str):
        return ENV_REF.sub(lambda m: os.environ.get(m[1]) or BUILTIN_VARS.get(m[1]) or (m[2] or ""), value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v) for k, v in value.items()}
    return value
