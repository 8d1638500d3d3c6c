"""Pushing what QueryMT reads: one manifest per build (a Wasm layer, or a one-file tar+gzip of a native
library) under one image index, each carrying ``mt.query.plugin.type``; byte-for-byte reproducible."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..build import build_plugin, bundled_plugin
from ..config import NATIVE_SUFFIX
from ._base import (
    IMAGE_CONFIG,
    INDEX,
    NATIVE_LAYER,
    TYPE_ANNOTATION,
    WASM_CONFIG,
    WASM_LAYER,
    WASM_PLATFORM,
    Kind,
    OciError,
    OciSettings,
    Reference,
    digest_of,
    host_platform,
)
from ._client import Client, image_manifest, put_manifest, upload
from ._signatures import sign

if TYPE_CHECKING:
    import pandas as pd

_TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Build:
    """One build of a plugin to push: a Wasm module, or a native library for ``os/arch``."""

    kind: Kind
    path: Path
    platform: tuple[str, str] = WASM_PLATFORM

    @classmethod
    def native(cls, path: Path) -> Build:
        return cls("native", path, host_platform())


@dataclass(frozen=True)
class PushedPlugin:
    """What ``push`` wrote: a row for the index, each build (its layer) and the signature, with sizes."""

    reference: Reference
    digest: str  # the image index
    rows: list[dict[str, Any]]
    signature_tag: str | None = None

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows).assign(reference=str(self.reference)).convert_dtypes()


def push(
    reference: str | Reference,
    builds: list[Build],
    settings: OciSettings | None = None,
    *,
    sign_key: Path | None = None,
) -> PushedPlugin:
    """Push ``builds`` as one image index under the reference's tag (QueryMT's layout), optionally signed."""
    reference = reference if isinstance(reference, Reference) else Reference.parse(reference)
    if reference.digest or not builds:
        raise OciError(f"{reference}: push needs a tag (not a digest) and at least one build")
    client = Client(reference, settings or OciSettings())
    rows, descriptors = [], []
    for build in builds:
        descriptor, layer = _push_build(client, build)
        descriptors.append(descriptor)
        platform = "/".join(build.platform)
        rows.append(
            {
                "platform": platform,
                "kind": build.kind,
                "digest": descriptor["digest"],
                "layer": layer["digest"],
                "size": layer["size"],
            }
        )
    index = put_manifest(client, {"schemaVersion": 2, "mediaType": INDEX, "manifests": descriptors}, reference.tag)
    rows.insert(0, {"platform": "index", "kind": "", "digest": index["digest"], "layer": "", "size": index["size"]})
    tag = sign(reference, index["digest"], sign_key, settings) if sign_key else None
    if tag:
        rows.append({"platform": "signature", "kind": "cosign", "digest": tag, "layer": "", "size": None})
    return PushedPlugin(reference, index["digest"], rows, tag)


def _push_build(client: Client, build: Build) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upload one build's blobs and manifest (by digest); return its index descriptor and its layer."""
    os_, arch = build.platform
    if build.kind == "wasm":
        layer = upload(client, build.path.read_bytes(), WASM_LAYER)
        config = {"architecture": "wasm", "os": "wasip1", "layerDigests": [layer["digest"]]}
        config_type, plugin_type = WASM_CONFIG, "extism"
    else:
        tarball = _tarball(build.path)
        layer = upload(client, tarball, NATIVE_LAYER)
        diff_id = digest_of(gzip.decompress(tarball))
        config = {"architecture": arch, "os": os_, "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
        config_type, plugin_type = IMAGE_CONFIG, "native"
    layer["annotations"] = {_TITLE: "plugin.wasm" if build.kind == "wasm" else f"{build.path.name}.tar.gz"}
    annotations = {
        TYPE_ANNOTATION: plugin_type,
        "org.opencontainers.image.os": os_,
        "org.opencontainers.image.architecture": arch,
    }
    descriptor = put_manifest(client, image_manifest(client, config, config_type, [layer], annotations), None)
    descriptor["platform"] = {"architecture": arch, "os": os_}
    return descriptor, layer


def _tarball(library: Path) -> bytes:
    """A one-file tar.gz with fixed times and owners, so the same library always gives the same digest."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(library.name)
        info.size, info.mode, info.mtime = library.stat().st_size, 0o755, 0
        with library.open("rb") as data:
            archive.addfile(info, data)
    return gzip.compress(raw.getvalue(), mtime=0)


def builds_for(source: str, lookup: Callable[[str], str | None] | None = None, only: Kind | None = None) -> list[Build]:
    """The builds that ``push`` sends for ``source``.

    ``source`` is a file (``.c``: built both ways with zig; ``.wasm``; a shared library), a provider name
    that ``lookup`` maps to its configured path, or a bundled plugin name (``echo``, ``openai``).
    """
    path = Path(source).expanduser()
    configured = lookup(source) if lookup and not path.is_file() else None
    if configured:
        if configured.startswith("bundled:"):
            source = configured.removeprefix("bundled:").rpartition(".")[0]
        elif configured.startswith(("oci://", "http://", "https://")):
            raise OciError(f"provider {source!r} comes from {configured}; push a local file or a bundled plugin")
        else:
            path = Path(configured)
    kinds: list[Kind] = [only] if only else ["native", "wasm"]
    if path.is_file():
        if path.suffix == ".c":
            return [_build(kind, build_plugin(path, kind)) for kind in kinds]
        kind: Kind = "wasm" if path.name.endswith("wasm") else "native"
        if not (kind == "wasm" or path.name.endswith(NATIVE_SUFFIX)):
            raise OciError(f"{path}: not a plugin (.wasm, .{NATIVE_SUFFIX} or a .c source)")
        if only and only != kind:
            raise OciError(f"{path} is a {kind} build; --only {only} leaves nothing to push")
        return [_build(kind, path.resolve())]
    try:
        return [_build(kind, bundled_plugin(source, kind)) for kind in kinds]
    except ValueError as exc:
        raise OciError(f"{source!r} is neither a file, a configured provider, nor a bundled plugin ({exc})") from None


def _build(kind: Kind, path: Path) -> Build:
    return Build.native(path) if kind == "native" else Build("wasm", path)
