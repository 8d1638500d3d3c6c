"""``PluginRegistry``: the kernel-resident set of provider plugins named by one config file.

Loading follows QueryMT's sequence (wire spec 4), the same for both plugin types:
fetch the file -> open it (Wasm: a pre-flight instance without an allow-list; native: dlopen + qmt_init)
-> ``name`` (required) -> ``base_url`` (optional) -> compute ``allowed_hosts`` -> the final instance
-> ``init_logging`` (required). Providers load lazily on ``get``; ``load_all`` loads every one and
reports failures without letting one broken plugin stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .config import DEFAULT_CONFIG, ProviderSpec, RegistryConfig, discover_config, expand_env, load_config
from .errors import PluginLoadError, ProviderNotFoundError, QueryMTError
from .factory import PluginFactory, Spawn
from .host import AllowList, PluginHost, new_http_client
from .loaders.base import CallFailed, PluginInstance
from .provider import ProviderBuilder
from .reprs import registry_html
from .sources import local_file

__all__ = ["LoadReport", "PluginRegistry"]

_PLUGIN_LOGGER = logging.getLogger("querymt_jupyter.plugin")


@dataclass
class LoadReport:
    """What ``load_all`` did: the providers that loaded and, per failed provider, why."""

    loaded: list[str] = field(default_factory=list)
    failed: dict[str, QueryMTError] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        lines = [f"loaded: {', '.join(self.loaded) or '(none)'}"]
        lines += [f"failed: {name}: {error}" for name, error in self.failed.items()]
        return "\n".join(lines)


class PluginRegistry:
    """Provider plugins from one config; mirrors QueryMT's ``PluginRegistry``."""

    def __init__(self, config: RegistryConfig, *, pool_size: int = 1) -> None:
        self.config = config
        self.client = new_http_client()
        self._pool_size = pool_size
        self._factories: dict[str, PluginFactory] = {}
        self.errors: dict[str, QueryMTError] = {}

    # -- construction

    @classmethod
    def from_path(cls, path: str | Path, *, pool_size: int = 1) -> PluginRegistry:
        """A registry for a plugins.toml / .json / .yaml file (format by extension)."""
        return cls(load_config(path), pool_size=pool_size)

    @classmethod
    def default(cls, *, pool_size: int = 1) -> PluginRegistry:
        """The bundled default config: echo-native, echo-wasm and openai."""
        return cls(load_config(DEFAULT_CONFIG), pool_size=pool_size)

    @classmethod
    def discover(cls, folder: Path | None = None, *, pool_size: int = 1) -> PluginRegistry:
        """``plugins.toml`` in ``folder`` (default: the working directory) if present, else the default."""
        return cls(load_config(discover_config(folder)), pool_size=pool_size)

    # -- lookup

    def names(self) -> list[str]:
        """Every configured provider name, loaded or not."""
        return self.config.names()

    def list(self) -> list[PluginFactory]:
        """The loaded provider factories."""
        return list(self._factories.values())

    def __iter__(self) -> Iterator[PluginFactory]:
        return iter(self.list())

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> PluginFactory | None:
        """The factory for ``name``, loading it on first use; None if no such provider is configured."""
        if name in self._factories:
            return self._factories[name]
        spec = self.config.provider(name)
        return None if spec is None else self._load(spec)

    def load_fresh(self, name: str) -> PluginFactory:
        """Provider ``name`` loaded anew, as ``get`` loads it the first time, but not kept: the caller
        closes it (the load benchmark)."""
        spec = self.config.provider(name)
        if spec is None:
            raise ProviderNotFoundError(name, self.names())
        return _load_factory(spec, self.client, config=self.config)

    def loaded(self, name: str) -> PluginFactory | None:
        """The factory for ``name`` if it is loaded already (never loads)."""
        return self._factories.get(name)

    def __getitem__(self, name: str) -> PluginFactory:
        factory = self.get(name)
        if factory is None:
            raise ProviderNotFoundError(name, self.names())
        return factory

    def builder(self, name: str) -> ProviderBuilder:
        return ProviderBuilder(self[name])

    # -- loading

    def load_all(self) -> LoadReport:
        """Load every provider; failures are collected in the report (and ``errors``), not raised."""
        report = LoadReport()
        for spec in self.config.providers:
            try:
                self.get(spec.name)
                report.loaded.append(spec.name)
            except QueryMTError as error:
                report.failed[spec.name] = error
        return report

    @property
    def pool_size(self) -> int:
        """How many instances of each provider threads may call at once (see ``PluginFactory``)."""
        return self._pool_size

    def set_pool_size(self, size: int) -> None:
        """Let up to ``size`` threads call each provider at once (loaded ones and those loaded later)."""
        for factory in self._factories.values():
            factory.set_pool_size(size)
        self._pool_size = size

    def _load(self, spec: ProviderSpec) -> PluginFactory:
        try:
            factory = _load_factory(spec, self.client, self._pool_size, config=self.config)
        except QueryMTError as error:
            self.errors[spec.name] = error
            raise
        self.errors.pop(spec.name, None)
        self._factories[spec.name] = factory
        return factory

    def close(self) -> None:
        for factory in self._factories.values():
            factory.close()
        self._factories.clear()
        self.client.close()

    def __enter__(self) -> PluginRegistry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _repr_html_(self) -> str:
        return registry_html(self)

    def __repr__(self) -> str:
        source = self.config.path or "<in memory>"
        return f"<PluginRegistry {source}: {len(self._factories)}/{len(self.names())} loaded>"


def _load_factory(
    spec: ProviderSpec, client: httpx.Client, pool_size: int = 1, *, config: RegistryConfig | None = None
) -> PluginFactory:
    path, kind = _plugin_file(spec, client, config)
    host = PluginHost(spec.name, AllowList(), client)
    opener = _open_wasm if kind == "wasm" else _open_native
    instance, plugin_name, open_instance = opener(spec, path, host)
    spawn = _ready(spec, path, open_instance)
    factory = PluginFactory(spec, instance, host, plugin_name=plugin_name, spawn=spawn, pool_size=pool_size)
    try:
        factory.call("init_logging", str(_log_level()).encode())
    except QueryMTError as exc:
        factory.close()
        raise PluginLoadError(spec.name, f"init_logging failed: {exc}", path=str(path)) from None
    if plugin_name != spec.name:
        _PLUGIN_LOGGER.debug("plugin %r calls itself %r; the configured name wins", spec.name, plugin_name)
    return factory


def _plugin_file(spec: ProviderSpec, client: httpx.Client, config: RegistryConfig | None) -> tuple[Path, str]:
    """The local plugin file and its kind; for ``oci://`` the pull decides the kind (wire spec 11.3)."""
    if spec.source is None:
        from .oci import OciError, OciSettings, pull  # imported here: oras is paid for by OCI users only

        settings = OciSettings.from_config(config) if config is not None else OciSettings()
        try:
            pulled = pull(spec.path, settings)
        except OciError as exc:
            raise PluginLoadError(spec.name, exc.message, hint=exc.hint) from exc
        return pulled.path, pulled.kind
    try:
        return local_file(spec.source, client), spec.source.kind
    except FileNotFoundError as exc:
        raise PluginLoadError(spec.name, str(exc), hint="check 'path' in the config") from None
    except httpx.HTTPError as exc:
        raise PluginLoadError(spec.name, f"cannot download {spec.source.location}: {exc}") from None


def _open_wasm(spec: ProviderSpec, path: Path, host: PluginHost) -> tuple[PluginInstance, str, Spawn]:
    """The final instance, the plugin's name, and how to open more instances like it."""
    from .loaders.wasm import WasmPlugin

    module = path.read_bytes()
    missing = [host_dir for host_dir in spec.allowed_paths if not Path(host_dir).is_dir()]
    if missing:  # checked when the config was read; gone since (Extism would only say "os error 2")
        raise PluginLoadError(
            spec.name, f"allowed path {missing[0]} is no longer a directory", hint="check 'allowed_paths' in the config"
        )
    try:
        preflight = WasmPlugin(
            path,
            module,
            PluginHost("unknown", AllowList(), host.client),
            allowed_hosts=None,
            allowed_paths=spec.allowed_paths,
        )
    except Exception as exc:  # extism.Error, or ValueError for a file that is not Wasm at all
        raise PluginLoadError(spec.name, f"not a loadable Wasm plugin: {exc}", path=str(path)) from None
    try:
        plugin_name, base_url = _identify(spec, path, preflight)
    finally:
        preflight.close()
    host.allow = _allow_list(spec, base_url)

    def open_instance(instance_host: PluginHost) -> PluginInstance:
        return WasmPlugin(
            path,
            module,
            instance_host,
            allowed_hosts=list(instance_host.allow.hosts),
            allowed_paths=spec.allowed_paths,  # read-only mounts, the same for every instance
        )

    return open_instance(host), plugin_name, open_instance


def _open_native(spec: ProviderSpec, path: Path, host: PluginHost) -> tuple[PluginInstance, str, Spawn]:
    """The instance, the plugin's name, and how to open more instances (private copies, fresh globals).

    ``spec.allowed_paths`` does not apply: a native plugin is not sandboxed and reads any file.
    """
    from .loaders.native import load_native

    instance = load_native(path, host, plugin=spec.name)
    try:
        plugin_name, base_url = _identify(spec, path, instance)
    except PluginLoadError:
        instance.close()
        raise
    host.allow = _allow_list(spec, base_url)
    return instance, plugin_name, lambda instance_host: load_native(path, instance_host, plugin=spec.name)


def _ready(spec: ProviderSpec, path: Path, open_instance: Spawn) -> Spawn:
    """``open_instance``, then ``init_logging``: how each further instance of a pool starts."""

    def spawn(host: PluginHost) -> PluginInstance:
        instance = open_instance(host)
        try:
            instance.call("init_logging", str(_log_level()).encode())
        except CallFailed as exc:
            instance.close()
            raise PluginLoadError(spec.name, f"init_logging failed: {exc}", path=str(path)) from None
        return instance

    return spawn


def _allow_list(spec: ProviderSpec, plugin_base_url: str | None) -> AllowList:
    # Expand ${VAR} first, as the config the plugin gets is expanded: an unexpanded
    # "${OPENAI_BASE_URL:-https://...}" has no host, so the list came out empty, i.e. unrestricted.
    return AllowList.compute(expand_env(spec.config), plugin_base_url)


def _identify(spec: ProviderSpec, path: Path, instance: PluginInstance) -> tuple[str, str | None]:
    """Call ``name`` (required) and ``base_url`` (optional) on a freshly opened plugin."""
    try:
        plugin_name = instance.call("name", b"null").decode()
    except CallFailed as exc:
        raise PluginLoadError(
            spec.name, f"the 'name' export failed or is missing ({exc}); is this a QueryMT plugin?", path=str(path)
        ) from None
    try:
        base_url: str | None = instance.call("base_url", b"null").decode() or None
    except CallFailed:
        base_url = None
    return plugin_name, base_url


def _log_level() -> int:
    """The plugin logger's level as QueryMT's 0 (off) .. 5 (trace)."""
    level = _PLUGIN_LOGGER.getEffectiveLevel()
    if level < logging.DEBUG:  # Python has no TRACE; anything finer than DEBUG asks for trace records
        return 5
    for threshold, value in ((logging.DEBUG, 4), (logging.INFO, 3), (logging.WARNING, 2), (logging.ERROR, 1)):
        if level <= threshold:
            return value
    return 0
