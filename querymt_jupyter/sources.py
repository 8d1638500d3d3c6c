"""Turning a plugin source into a local file: bundled builds, local paths, HTTP(S) downloads.

OCI references (``oci://``) are resolved by the OCI module, which also decides the plugin kind.
Downloads are cached by URL under the cache folder, so a notebook that loaded a plugin once keeps
working offline; ``refresh=True`` fetches again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from .build import bundled_plugin
from .config import PluginSource

__all__ = ["cache_dir", "local_file"]


def cache_dir(*parts: str) -> Path:
    """``$QUERYMT_JUPYTER_CACHE`` or ``~/.cache/querymt-jupyter``, plus ``parts``."""
    root = os.environ.get("QUERYMT_JUPYTER_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "querymt-jupyter"
    )
    return Path(root, *parts)


def local_file(source: PluginSource, client: httpx.Client, *, refresh: bool = False) -> Path:
    """The local path of a plugin; raises FileNotFoundError or httpx.HTTPError with the location."""
    if source.scheme == "bundled":
        name, _, _ = source.location.rpartition(".")
        return bundled_plugin(name, source.kind)
    if source.scheme == "url":
        return _download(source.location, client, refresh)
    path = Path(source.location)
    if not path.is_file():
        raise FileNotFoundError(f"plugin file not found: {path}")
    return path


def _download(url: str, client: httpx.Client, refresh: bool) -> Path:
    name = Path(urlsplit(url).path).name or "plugin"
    target = cache_dir("http", hashlib.sha256(url.encode()).hexdigest()[:24], name)
    if target.is_file() and not refresh:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    response = client.get(url)
    response.raise_for_status()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(response.content)
    os.replace(tmp.name, target)  # atomic: a half-written plugin is never seen
    return target
