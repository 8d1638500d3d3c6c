"""HTML views of the registry, its factories and providers, for notebooks (``_repr_html_``).

Kept apart from the classes so that the core stays free of presentation; nothing here shows a secret
(the provider's config is shown without ``api_key``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .factory import PluginFactory
    from .provider import Provider
    from .registry import PluginRegistry

_STYLE = "border-collapse:collapse;font-size:0.9em"
_CELL = "padding:2px 8px;border-bottom:1px solid #ddd;text-align:left"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th style='{_CELL}'>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td style='{_CELL}'>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table style='{_STYLE}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def registry_html(registry: PluginRegistry) -> str:
    rows = []
    for spec in registry.config.providers:
        factory = registry.loaded(spec.name)
        error = registry.errors.get(spec.name)
        status = "loaded" if factory else (f"error: {error}" if error else "not loaded yet")
        kind = factory.plugin_type if factory else (spec.source.kind if spec.source else "oci")
        hosts = ", ".join(factory.allowed_hosts) if factory else ""
        rows.append([spec.name, kind, spec.path, status, hosts or ("any" if factory else "")])
    source = html.escape(str(registry.config.path or "in memory"))
    return f"<b>PluginRegistry</b> <code>{source}</code>" + _table(
        ["provider", "type", "source", "status", "allowed hosts"], rows
    )


def factory_html(factory: PluginFactory) -> str:
    schema = factory.config_schema().get("properties", {})
    rows = [[key, prop.get("type", ""), prop.get("description", "")] for key, prop in schema.items()]
    hosts = ", ".join(factory.allowed_hosts) or "any"
    head = (
        f"<b>{html.escape(factory.name)}</b>: {factory.plugin_type} plugin, generation {factory.generation}, "
        f"from <code>{html.escape(factory.spec.path)}</code>; allowed hosts: {html.escape(hosts)}"
    )
    return head + _table(["config key", "type", "description"], rows)


def provider_html(provider: Provider) -> str:
    config = {k: v for k, v in provider.cfg.items() if k != "api_key"}
    rows = [[key, value] for key, value in config.items()]
    head = f"<b>Provider</b> {html.escape(provider.factory.name)} ({provider.factory.plugin_type})"
    return head + (_table(["config", "value"], rows) if rows else " with the plugin's defaults")
