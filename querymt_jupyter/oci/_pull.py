"""Pulling (wire spec 11.3): resolve the reference, verify, choose the build, fetch it into the cache; and
``inspect``, which shows what a reference holds without downloading any plugin."""

from __future__ import annotations

import json
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._base import (
    ACCEPT,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX,
    MANIFEST,
    NATIVE_LAYER,
    SIMPLE_SIGNING,
    TYPE_ANNOTATION,
    WASM_LAYER,
    WASM_PLATFORM,
    Kind,
    OciError,
    OciSettings,
    Reference,
    RegistryUnreachableError,
    host_platform,
    signature_policy,
)
from ._client import Cache, Client, fetch_document, stream_blob
from ._signatures import signature_tag, verify

if TYPE_CHECKING:
    import pandas as pd


def _fetch_plugin(client: Client, cache: Cache, layer: dict[str, Any], kind: Kind) -> Path:
    """Download a layer into the cache: a Wasm module as ``plugin.wasm``, a tarball's first regular file."""
    scratch = cache.scratch()
    try:
        download = scratch / ("plugin.wasm" if kind == "wasm" else "layer.tar.gz")
        with download.open("wb") as out:
            stream_blob(client, layer, out, int(layer["size"]))
        if kind == "native":
            _extract_first_file(download, scratch, client.reference)
            download.unlink()
        return cache.adopt(layer["digest"], scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # a failed or mismatched download leaves nothing behind


def _extract_first_file(tarball: Path, folder: Path, reference: Reference) -> None:
    """The first regular file of a tar.gz, kept under its base name (never a path from the archive)."""
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                if member.isreg():
                    source = archive.extractfile(member)
                    assert source is not None
                    target = folder / Path(member.name).name
                    with source, target.open("wb") as out:
                        shutil.copyfileobj(source, out)
                    return
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise OciError(f"{reference}: the native layer is not a readable tar.gz: {exc}") from None
    raise OciError(f"{reference}: the native layer's tarball holds no regular file")


# ---- selection (wire spec 11.3) ------------------------------------------------------------------


@dataclass(frozen=True)
class _Choice:
    kind: Kind
    platform: str
    manifest_digest: str
    manifest: dict[str, Any]


def _media_type(document: dict[str, Any]) -> str:
    if document.get("mediaType"):
        return str(document["mediaType"])
    return INDEX if "manifests" in document else MANIFEST  # OCI allows it absent


def _platform_name(entry: dict[str, Any]) -> str:
    platform_ = entry.get("platform") or {}
    return f"{platform_.get('os', '?')}/{platform_.get('architecture', '?')}"


def _matches(entry: dict[str, Any], os_: str, arch: str) -> bool:
    """QueryMT's exact platform match: os and architecture, and no variant, os.version or os.features."""
    want = {"os": os_, "architecture": arch}
    return {k: v for k, v in (entry.get("platform") or {}).items() if v not in (None, "", [])} == want


def _select_entry(index: dict[str, Any], reference: Reference, allow_native: bool) -> tuple[Kind, dict[str, Any]]:
    entries = index.get("manifests") or []
    if allow_native:
        native = next((e for e in entries if _matches(e, *host_platform())), None)
        if native is not None:
            return "native", native
    wasm = next((e for e in entries if _matches(e, *WASM_PLATFORM)), None)
    if wasm is not None:
        return "wasm", wasm
    offered = ", ".join(_platform_name(e) for e in entries) or "none"
    wanted = ("/".join(host_platform()) + " or ") if allow_native else ""
    raise OciError(
        f"{reference}: the index has no build for {wanted}wasi/wasm (it has: {offered})",
        hint="push a Wasm build (it runs everywhere)" + ("" if allow_native else ", or allow native builds"),
    )


def _manifest_kind(manifest: dict[str, Any], reference: Reference) -> Kind:
    """A single manifest's kind: a Wasm layer, else the annotation, else a tar+gzip layer."""
    media_types = [layer.get("mediaType") for layer in manifest.get("layers") or []]
    if WASM_LAYER in media_types:
        return "wasm"
    declared = (manifest.get("annotations") or {}).get(TYPE_ANNOTATION)
    if declared is not None:
        if declared not in ("extism", "native"):
            raise OciError(f"{reference}: {TYPE_ANNOTATION} is {declared!r}; QueryMT knows 'extism' and 'native'")
        return "wasm" if declared == "extism" else "native"
    if NATIVE_LAYER in media_types:
        return "native"
    raise OciError(
        f"{reference}: no plugin layer: layer media types are {', '.join(map(str, media_types)) or 'none'}",
        hint=f"a plugin has a {WASM_LAYER} layer, or a {NATIVE_LAYER} layer holding the library",
    )


def _choose(client: Client, cache: Cache, digest: str, data: bytes, allow_native: bool) -> _Choice:
    reference = client.reference
    document = _parse_document(data, reference)
    if _media_type(document) in (INDEX, DOCKER_LIST):
        kind, entry = _select_entry(document, reference, allow_native)
        manifest_digest, manifest_data = fetch_document(client, cache, entry["digest"])
        return _Choice(kind, _platform_name(entry), manifest_digest, _parse_document(manifest_data, reference))
    kind = _manifest_kind(document, reference)
    if kind == "native" and not allow_native:
        raise OciError(
            f"{reference}: the image holds only a native build, and native builds are disabled",
            hint="remove [oci] allow_native = false, or push a Wasm build",
        )
    return _Choice(kind, "", digest, document)


def _parse_document(data: bytes, reference: Reference) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise OciError(f"{reference}: the registry sent a manifest that is not a JSON object")
    if _media_type(document) not in (MANIFEST, INDEX, DOCKER_MANIFEST, DOCKER_LIST):
        raise OciError(f"{reference}: unsupported manifest media type {document.get('mediaType')!r}")
    return document


def _plugin_layer(choice: _Choice, reference: Reference) -> dict[str, Any]:
    wanted = WASM_LAYER if choice.kind == "wasm" else NATIVE_LAYER
    layer = next((l for l in choice.manifest.get("layers") or [] if l.get("mediaType") == wanted), None)
    if layer is None:
        raise OciError(f"{reference}: a {choice.kind} build was selected, but its manifest has no {wanted} layer")
    if not isinstance(layer.get("size"), int) or not isinstance(layer.get("digest"), str):
        raise OciError(f"{reference}: the {wanted} layer descriptor lacks its size or digest")
    return layer


# ---- pull ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PulledPlugin:
    """Where a pulled plugin is, what it is, and how it got there."""

    reference: Reference
    digest: str  # what the reference resolved to (an index or a manifest)
    kind: Kind
    platform: str  # the index entry chosen ("linux/amd64", "wasi/wasm"); "" for a single manifest
    manifest_digest: str
    layer_digest: str
    size: int
    path: Path
    downloaded: bool  # False: the plugin file came from the cache
    offline: bool  # the registry was unreachable; the last resolution was used
    verified: bool  # a signature was checked (now or on an earlier pull of this digest)
    seconds: float

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "reference": str(self.reference),
                    "kind": self.kind,
                    "platform": self.platform or "-",
                    "digest": self.digest,
                    "layer": self.layer_digest,
                    "size": self.size,
                    "path": str(self.path),
                    "downloaded": self.downloaded,
                    "offline": self.offline,
                    "verified": self.verified,
                    "seconds": round(self.seconds, 4),
                }
            ]
        )


def pull(reference: str | Reference, settings: OciSettings | None = None) -> PulledPlugin:
    """Resolve, verify and cache a plugin; return its local file and kind.

    Raises ``OciError`` (``DigestMismatchError``, ``RegistryUnreachableError``, ``SignatureError``), whose
    message names the reference.
    """
    started = time.perf_counter()
    reference = reference if isinstance(reference, Reference) else Reference.parse(reference)
    settings = settings or OciSettings()
    must_verify = signature_policy(reference, settings)  # refuse before any network traffic
    cache = Cache()
    client = Client(reference, settings)
    offline = False
    try:
        digest, data = fetch_document(client, cache, reference.target)
    except RegistryUnreachableError as exc:
        digest, data = _offline(cache, reference, exc)
        offline = True
    verified = must_verify and verify(client, cache, digest, settings, offline)
    choice = _choose(client, cache, digest, data, settings.allow_native)
    layer = _plugin_layer(choice, reference)
    path = cache.blob(layer["digest"])
    downloaded = path is None
    if path is None:
        path = _fetch_plugin(client, cache, layer, choice.kind)  # offline, this raises unreachable
    pulled = PulledPlugin(
        reference,
        digest,
        choice.kind,
        choice.platform,
        choice.manifest_digest,
        layer["digest"],
        path.stat().st_size,
        path,
        downloaded,
        offline,
        verified,
        time.perf_counter() - started,
    )
    if not offline:  # offline nothing was retrieved: the last resolution stands as it was
        cache.remember(reference, pulled)
    return pulled


def _offline(cache: Cache, reference: Reference, exc: RegistryUnreachableError) -> tuple[str, bytes]:
    """The last resolution of ``reference`` (or its pinned digest) from the cache, or the original error."""
    digest = reference.digest or cache.last_digest(reference)
    data = cache.document(digest) if digest else None
    if digest is None or data is None:
        raise RegistryUnreachableError(
            f"{exc.message}; nothing is cached for it",
            hint="start the registry or check the address; once pulled, it works offline",
        )
    return digest, data


# ---- inspect -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inspection:
    reference: Reference
    digest: str
    rows: list[dict[str, Any]]

    def frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows).fillna("").convert_dtypes()


def inspect(reference: str | Reference, settings: OciSettings | None = None) -> Inspection:
    """The index (or manifest) a reference resolves to, one row per platform, and its signature if any.

    ``selected`` marks the build ``pull`` would choose with these settings. Nothing is downloaded but
    manifests.
    """
    reference = reference if isinstance(reference, Reference) else Reference.parse(reference)
    settings = settings or OciSettings()
    cache, client = Cache(), Client(reference, settings)
    digest, data = fetch_document(client, cache, reference.target)
    document = _parse_document(data, reference)
    is_index = _media_type(document) in (INDEX, DOCKER_LIST)
    rows = [
        {
            "platform": "index" if is_index else "manifest",
            "kind": "",
            "media_type": _media_type(document),
            "digest": digest,
            "size": len(data),
            "selected": "",
        }
    ]
    try:
        chosen = _choose(client, cache, digest, data, settings.allow_native).manifest_digest
    except OciError:
        chosen = None  # inspect shows what is there even when nothing would load
    for entry in (document.get("manifests") or []) if is_index else [{"digest": digest}]:
        rows += _inspect_entry(client, cache, entry, chosen)
    signature = client.do_request(client.url("manifests", signature_tag(digest)), "HEAD", headers={"Accept": ACCEPT})
    if signature.status_code == 200:
        rows.append(
            {
                "platform": "signature",
                "kind": "cosign",
                "media_type": SIMPLE_SIGNING,
                "digest": signature.headers.get("Docker-Content-Digest", signature_tag(digest)),
                "size": int(signature.headers.get("Content-Length", 0)),
                "selected": "",
            }
        )
    return Inspection(reference, digest, rows)


def _inspect_entry(client: Client, cache: Cache, entry: dict[str, Any], chosen: str | None) -> list[dict[str, Any]]:
    digest, data = fetch_document(client, cache, entry["digest"])
    manifest = _parse_document(data, client.reference)
    try:
        kind = _manifest_kind(manifest, client.reference)
    except OciError:
        kind = "?"
    rows = []
    for layer in manifest.get("layers") or []:
        rows.append(
            {
                "platform": _platform_name(entry) if "platform" in entry else "-",
                "kind": kind,
                "media_type": layer.get("mediaType"),
                "digest": layer.get("digest"),
                "size": layer.get("size"),
                "selected": "✓" if digest == chosen and layer.get("mediaType") in (WASM_LAYER, NATIVE_LAYER) else "",
                "manifest": digest,
            }
        )
    return rows
