"""The registry client (oras's, made fit for a kernel), the digest-keyed cache, and verified transfers:
every manifest and blob is checked against its digest and declared size while it streams."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

import requests
from oras.container import Container
from oras.provider import Registry

from ..sources import cache_dir
from ._base import (
    ACCEPT,
    MANIFEST,
    DigestMismatchError,
    OciError,
    OciSettings,
    Reference,
    RegistryUnreachableError,
    check_digest,
    digest_of,
    plain_http,
)

if TYPE_CHECKING:
    from ._pull import PulledPlugin

_MAX_DOCUMENT = 4 << 20  # a manifest larger than this is not a plugin's (containerd uses the same bound)
_TIMEOUT = (3.05, 60.0)  # connect, read: an unreachable registry fails in seconds, a slow blob may stream


class _TimeoutSession(requests.Session):
    """requests has no session-wide timeout; without one a silent registry hangs the kernel."""

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", _TIMEOUT)
        return super().request(method, url, *args, **kwargs)


class Client(Registry):
    """oras's registry client, made fit for a kernel.

    oras retries a failed request five times with sleeps growing to 83 s, which turns "registry down"
    into minutes; here each request is sent once, with timeouts. oras answers ``Bearer`` challenges but
    sends Basic credentials to a token endpoint, which a plain htpasswd registry does not have, so a
    ``Basic`` challenge is answered here with the docker-config credentials.
    """

    def __init__(self, reference: Reference, settings: OciSettings) -> None:
        super().__init__(hostname=reference.registry, insecure=plain_http(reference.registry, settings))
        self.session = self.auth.session = _TimeoutSession()
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self.reference = reference
        config = _docker_config(settings)
        # oras reads credentials for the container's registry only; the repository name is not used
        self.auth.load_configs(Container("any", registry=reference.registry), configs=[str(config)] if config else None)

    def do_request(  # type: ignore[override]
        self,
        url: str,
        method: str = "GET",
        data: dict[str, Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        headers = {**self.headers, **(headers or {})}
        try:
            response = self.session.request(method, url, data=data, json=json, headers=headers, stream=stream)
            if response.status_code != 401:
                return response
            if response.headers.get("Www-Authenticate", "").lower().startswith("basic"):
                basic = getattr(self.auth, "_basic_auth", None)
                if not basic:
                    return response  # no credentials: the caller reports the 401 with a hint
                self.headers["Authorization"] = f"Basic {basic}"  # every later request too
                headers["Authorization"] = self.headers["Authorization"]
            else:
                headers, changed = self.auth.authenticate_request(response, headers)
                if not changed:
                    return response
            response.close()
            return self.session.request(method, url, data=data, json=json, headers=headers, stream=stream)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RegistryUnreachableError(
                f"cannot reach registry {self.reference.registry} for {self.reference}: {_reason(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise OciError(f"{self.reference}: request to {url} failed: {exc}") from exc

    def url(self, kind: Literal["manifests", "blobs"], target: str) -> str:
        return f"{self.prefix}://{self.reference.registry}/v2/{self.reference.repository}/{kind}/{target}"

    def check(self, response: requests.Response, what: str) -> None:
        """Raise OciError with the registry's own error text for a failed request."""
        if response.status_code < 300:
            return
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.reason
        except ValueError:
            detail = response.reason
        hint = None
        if response.status_code in (401, 403):
            hint = (
                f"log in to {self.reference.registry} (docker login / oras login) so the docker config has credentials"
            )
        raise OciError(f"{self.reference}: {what} failed: HTTP {response.status_code} {detail}", hint=hint)


def _docker_config(settings: OciSettings) -> Path | None:
    if settings.docker_config:
        return settings.docker_config
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder, "config.json") if folder else None  # None: oras reads ~/.docker/config.json


def _reason(exc: requests.RequestException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "Name or service not known", "No route to host"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


# ---- the cache -----------------------------------------------------------------------------------


class Cache:
    """Content-addressed manifests and plugin files, plus each reference's last resolution."""

    def __init__(self) -> None:
        self.root = cache_dir("oci")

    @staticmethod
    def _key(digest: str) -> str:
        return digest.replace(":", "_")

    def metadata_path(self, reference: Reference) -> Path:
        return self.root / "manifests" / f"{reference.cache_name}.json"

    def last_digest(self, reference: Reference) -> str | None:
        try:
            return json.loads(self.metadata_path(reference).read_text())["manifest_digest"]
        except (OSError, ValueError, KeyError):
            return None

    def remember(self, reference: Reference, pulled: PulledPlugin) -> None:
        # QueryMT's CacheMetadata fields, in its order (golden: oci_cache_metadata)
        metadata = {
            "manifest_digest": pulled.digest,
            "filename": pulled.path.name,
            "plugin_type_str": "extism" if pulled.kind == "wasm" else "native",
            "retrieved_at_unix": int(time.time()),
        }
        self._write(self.metadata_path(reference), json.dumps(metadata).encode())

    def document(self, digest: str) -> bytes | None:
        try:
            return (self.root / "documents" / f"{self._key(digest)}.json").read_bytes()
        except OSError:
            return None

    def store_document(self, digest: str, data: bytes) -> None:
        self._write(self.root / "documents" / f"{self._key(digest)}.json", data)

    def blob(self, digest: str) -> Path | None:
        folder = self.root / "blobs" / self._key(digest)
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        return files[0] if files else None

    def verified(self, digest: str, key_id: str) -> bool:
        return (self.root / "signatures" / f"{self._key(digest)}.{key_id}").exists()

    def mark_verified(self, digest: str, key_id: str) -> None:
        self._write(self.root / "signatures" / f"{self._key(digest)}.{key_id}", b"")

    def scratch(self) -> Path:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.root / "tmp"))

    def adopt(self, digest: str, folder: Path) -> Path:
        """Move a verified scratch folder into place as the blob folder for ``digest``."""
        target = self.root / "blobs" / self._key(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.rename(target)
        except OSError:  # another process stored the same digest first: same bytes, keep theirs
            shutil.rmtree(folder, ignore_errors=True)
        found = self.blob(digest)
        assert found is not None
        return found

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)  # atomic: a reader never sees half a file


# ---- fetching, verified --------------------------------------------------------------------------


def _read_bounded(response: requests.Response, limit: int, what: str, reference: Reference) -> Iterator[bytes]:
    received = 0
    for chunk in response.iter_content(chunk_size=1 << 16):
        received += len(chunk)
        if received > limit:
            raise DigestMismatchError(f"{reference}: {what} is larger than the {limit} bytes it was declared as")
        yield chunk


def fetch_document(client: Client, cache: Cache, target: str) -> tuple[str, bytes]:
    """A manifest or index by tag or digest; by digest it may come from the cache, and is verified."""
    reference = client.reference
    if target.startswith("sha256:"):
        check_digest(target, reference)
        cached = cache.document(target)
        if cached is not None:
            return target, cached
    with client.do_request(client.url("manifests", target), headers={"Accept": ACCEPT}, stream=True) as response:
        client.check(response, f"fetching manifest {target}")
        data = b"".join(_read_bounded(response, _MAX_DOCUMENT, f"manifest {target}", reference))
    digest = digest_of(data)
    if target.startswith("sha256:") and digest != target:
        raise DigestMismatchError(f"{reference}: manifest {target} arrived with digest {digest}")
    cache.store_document(digest, data)
    return digest, data


def stream_blob(client: Client, descriptor: dict[str, Any], out: io.BufferedWriter, limit: int) -> None:
    """Write a blob to ``out``, checking its size and digest as it streams."""
    reference, digest = client.reference, descriptor["digest"]
    check_digest(digest, reference)
    hasher = hashlib.sha256()
    with client.do_request(client.url("blobs", digest), stream=True) as response:
        client.check(response, f"fetching blob {digest}")
        for chunk in _read_bounded(response, limit, f"blob {digest}", reference):
            hasher.update(chunk)
            out.write(chunk)
    actual = "sha256:" + hasher.hexdigest()
    if actual != digest:
        raise DigestMismatchError(
            f"{reference}: blob {digest} arrived with digest {actual}; the download was deleted",
            hint="the registry's copy is damaged or was tampered with: push the plugin again",
        )


def fetch_small_blob(client: Client, descriptor: dict[str, Any], limit: int) -> bytes:
    buffer = io.BytesIO()
    stream_blob(client, descriptor, buffer, limit)  # type: ignore[arg-type]
    return buffer.getvalue()


def upload(client: Client, data: bytes, media_type: str) -> dict[str, Any]:
    """Upload a blob unless the registry has it (monolithic POST + PUT); return its descriptor.

    Not oras's ``upload_blob``: it raises a bare ValueError for a refused upload, losing the status.
    """
    digest = digest_of(data)
    descriptor = {"mediaType": media_type, "digest": digest, "size": len(data)}
    if client.do_request(client.url("blobs", digest), "HEAD").status_code == 200:
        return descriptor
    started = client.do_request(client.url("blobs", "uploads/"), "POST")
    client.check(started, f"starting a {media_type} upload")
    location = urljoin(client.url("blobs", "uploads/"), started.headers["Location"])
    separator = "&" if "?" in location else "?"
    headers = {"Content-Type": "application/octet-stream"}
    finished = client.do_request(f"{location}{separator}digest={digest}", "PUT", data=data, headers=headers)
    client.check(finished, f"uploading a {media_type} blob")
    return descriptor


def image_manifest(
    client: Client, config: dict[str, Any], config_type: str, layers: list[dict[str, Any]], annotations: dict[str, str]
) -> dict[str, Any]:
    config_descriptor = upload(client, json.dumps(config, separators=(",", ":")).encode(), config_type)
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config_descriptor, "layers": layers}
    return {**manifest, "annotations": annotations} if annotations else manifest


def put_manifest(client: Client, document: dict[str, Any], tag: str | None) -> dict[str, Any]:
    """PUT exact bytes (so the digest is known without asking); by digest when ``tag`` is None."""
    data = json.dumps(document, separators=(",", ":")).encode()
    digest = digest_of(data)
    response = client.do_request(
        client.url("manifests", tag or digest), "PUT", data=data, headers={"Content-Type": document["mediaType"]}
    )
    client.check(response, f"pushing manifest {tag or digest}")
    return {"mediaType": document["mediaType"], "digest": digest, "size": len(data)}
