"""What every part of the OCI code shares: media types, errors, references, the ``[oci]`` settings and
the policies they imply (plain HTTP on loopback, when a signature is demanded)."""

from __future__ import annotations

import hashlib
import ipaddress
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import RegistryConfig
from ..errors import ConfigError, QueryMTError

Kind = Literal["wasm", "native"]

WASM_LAYER = "application/vnd.wasm.v1.layer+wasm"
NATIVE_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"  # the CNCF Wasm artifact config
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = f"{MANIFEST}, {INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"
TYPE_ANNOTATION = "mt.query.plugin.type"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
WASM_PLATFORM = ("wasi", "wasm")

_KEYLESS_KEYS = (
    "rekor_pub_keys",
    "fulcio_certs",
    "cert_email",
    "cert_url",
    "cert_issuer",
    "github_workflow_repository",
)
_KNOWN_KEYS = {
    "allow_native",
    "insecure_registries",
    "public_key",
    "docker_config",
    "insecure_skip_signature",
    "use_sigstore_tuf_data",  # accepted for QueryMT configs; it only chooses keyless trust roots
    *_KEYLESS_KEYS,
}


class OciError(QueryMTError):
    """Pulling, pushing, inspecting or verifying an OCI plugin failed; the message names the reference."""

    @property
    def message(self) -> str:
        return str(self.args[0])


class DigestMismatchError(OciError):
    """A manifest or blob did not match its digest or declared size; nothing of it was kept."""


class RegistryUnreachableError(OciError):
    """The registry did not answer, and the cache cannot stand in for it."""


class SignatureError(OciError):
    """A signature the config demands is missing, does not verify, or cannot be checked here."""


# ---- references and settings ---------------------------------------------------------------------

_REFERENCE = re.compile(
    r"^(?P<registry>[^/]+)/(?P<repository>[a-z0-9]+(?:[._-]+[a-z0-9]+)*(?:/[a-z0-9]+(?:[._-]+[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


@dataclass(frozen=True)
class Reference:
    """``oci://REGISTRY/REPOSITORY[:TAG][@sha256:HEX]``; the registry must be named (no docker.io default)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        bare = text.removeprefix("oci://")
        match = _REFERENCE.match(bare)
        registry = match["registry"] if match else ""
        if not match or not ("." in registry or ":" in registry or registry == "localhost"):
            raise OciError(
                f"not an OCI reference: {text!r}",
                hint="write oci://HOST[:PORT]/REPOSITORY:TAG or oci://HOST[:PORT]/REPOSITORY@sha256:HEX",
            )
        tag = match["tag"] or (None if match["digest"] else "latest")
        return cls(registry, match["repository"], tag, match["digest"])

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"oci://{self.registry}/{self.repository}{tag}{digest}"

    @property
    def target(self) -> str:
        """What the registry resolves: the digest when pinned, else the tag."""
        return self.digest or str(self.tag)

    @property
    def cache_name(self) -> str:
        """QueryMT's metadata file name: the reference with every ``/`` and ``:`` as ``_``."""
        return re.sub(r"[/:]", "_", str(self).removeprefix("oci://"))


@dataclass(frozen=True)
class OciSettings:
    """The ``[oci]`` table.

    - ``allow_native`` (default true): false never selects a native build, so an index yields its Wasm one.
    - ``insecure_registries``: ``host[:port]`` entries reached over plain HTTP (loopback always is).
    - ``public_key``: a cosign public key (PEM); every pull must then carry a valid signature.
    - ``docker_config``: the docker ``config.json`` with credentials (default ``$DOCKER_CONFIG`` or ~/.docker).
    - ``insecure_skip_signature``: QueryMT's switch; see ``signature_policy``.
    - QueryMT's keyless options (``cert_email``, ``fulcio_certs``, ...) demand Sigstore checks this host
      cannot do, so setting one makes pulls refuse instead of skipping the check.
    """

    allow_native: bool = True
    insecure_registries: tuple[str, ...] = ()
    public_key: Path | None = None
    docker_config: Path | None = None
    skip_signature: bool | None = None  # None: not written in the config
    keyless: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config: RegistryConfig) -> OciSettings:
        base = config.path.parent if config.path else Path.cwd()
        return cls.from_table(config.oci, base, where=str(config.path or "<config>"))

    @classmethod
    def from_table(cls, table: dict[str, Any], base: Path, where: str = "<config>") -> OciSettings:
        unknown = sorted(set(table) - _KNOWN_KEYS)
        if unknown:  # a misspelt public_key must not quietly turn verification off
            raise ConfigError(
                f"unknown [oci] keys: {', '.join(unknown)}",
                path=where,
                field="oci",
                hint=f"known keys: {', '.join(sorted(_KNOWN_KEYS))}",
            )
        return cls(
            allow_native=_typed(table, "allow_native", bool, True, where),
            insecure_registries=tuple(map(str, _typed(table, "insecure_registries", list, [], where))),
            public_key=_path(table, "public_key", base, where),
            docker_config=_path(table, "docker_config", base, where),
            skip_signature=_typed(table, "insecure_skip_signature", bool, None, where),
            keyless=tuple(key for key in _KEYLESS_KEYS if table.get(key) is not None),
        )


def _typed(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, default)
    if value is not None and not isinstance(value, kind):
        raise ConfigError(f"[oci] {key} must be a {kind.__name__}", path=where, field=f"oci.{key}")
    return value


def _path(table: dict[str, Any], key: str, base: Path, where: str) -> Path | None:
    value = _typed(table, key, str, None, where)
    return None if value is None else (base / Path(value).expanduser()).resolve()


def _host(registry: str) -> str:
    """The host part of ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if registry.startswith("["):
        return registry[1:].partition("]")[0]
    return registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry


def is_loopback(registry: str) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1, with or without a port."""
    host = _host(registry)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http(registry: str, settings: OciSettings) -> bool:
    listed = settings.insecure_registries
    return is_loopback(registry) or registry in listed or _host(registry) in listed


def signature_policy(reference: Reference, settings: OciSettings) -> bool:
    """Whether this pull must verify a signature; raises SignatureError when it must but cannot.

    QueryMT demands a keyless signature from the querymt/querymt workflow unless told otherwise, which no
    image pushed from a notebook has. Here the default follows the plain-HTTP rule: an image on a loopback
    registry (your own machine) needs no signature; any other registry needs one, checked against
    ``[oci] public_key``. ``insecure_skip_signature = true`` never checks; ``= false`` always checks.
    """
    if settings.skip_signature:
        return False
    if settings.keyless:
        raise SignatureError(
            f"{reference}: [oci] {', '.join(settings.keyless)} ask for keyless (Fulcio/Rekor) verification, "
            "which querymt-jupyter cannot do",
            hint='verify with a cosign key instead ([oci] public_key = "cosign.pub"), or set '
            "[oci] insecure_skip_signature = true to load it unverified (digests are still checked)",
        )
    if settings.public_key is not None:
        return True
    if settings.skip_signature is None and is_loopback(reference.registry):
        return False
    why = (
        "insecure_skip_signature = false demands"
        if settings.skip_signature is False
        else (f"{reference.registry} is not on this machine, so loading it needs")
    )
    raise SignatureError(
        f"{reference}: {why} a signature check, and no [oci] public_key is configured",
        hint='set [oci] public_key = "cosign.pub" (the key the image was signed with), or '
        "[oci] insecure_skip_signature = true to load it unverified (digests are still checked)",
    )


def host_platform() -> tuple[str, str]:
    """This machine as an OCI platform (os, architecture), with QueryMT's renamings."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "amd64": "amd64", "arm64": "arm64"}.get(machine, machine)
    return {"macos": "darwin"}.get(system, system), arch


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str, reference: Reference) -> None:
    if not re.fullmatch(r"sha256:[a-f0-9]{64}", digest):
        raise OciError(f"{reference}: unsupported digest {digest!r} (only sha256 is)")
