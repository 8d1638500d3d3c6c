"""OCI plugins: pull, push, inspect, cache and verify plugins in an OCI registry (wire spec 11).

``pull`` resolves an ``oci://`` reference to a local plugin file and its kind, choosing the build as QueryMT
does (11.3): in an image index the entry for this machine's ``os/arch`` (native) else ``wasi/wasm``; in a
single manifest a Wasm layer, else the ``mt.query.plugin.type`` annotation, else a tar+gzip layer. ``push``
writes what QueryMT reads: one manifest per build (Wasm layer ``application/vnd.wasm.v1.layer+wasm``; native
builds as a one-file ``tar+gzip`` layer) under one image index. ``inspect`` lists what a reference holds.

The cache differs from QueryMT's (11.2) in one respect: it is keyed by **digest**, not by reference.
QueryMT trusts ``<cache>/manifests/<ref>.json`` while it exists, so a tag pushed again is never noticed. Here
a tag is resolved on every load (one small manifest request); manifests are cached by their digest and
plugin files by their layer's digest, so a moved tag fetches the new build, an unchanged one downloads
nothing, and a ``@sha256:`` reference that is cached needs no network at all. When the registry cannot be
reached, the digest the reference resolved to last time is used (offline work). Layout, under
``$QUERYMT_JUPYTER_CACHE`` or ``~/.cache/querymt-jupyter``:

    oci/manifests/<ref with / and : as _>.json   QueryMT's metadata fields: the last resolution
    oci/documents/sha256_<hex>.json              manifests and indexes, exactly as the registry sent them
    oci/blobs/sha256_<hex>/<file>                the plugin file taken from the layer with that digest
    oci/signatures/sha256_<hex>.<key id>         the digest was verified with that public key

Every manifest and blob is checked against its digest (and declared size) while it streams; a mismatch
deletes the partial file and raises ``DigestMismatchError``. Registries on loopback use plain HTTP, as
docker does; credentials come from the docker config file. Signatures are cosign's key-based ones (the
``sha256-<hex>.sig`` tag, simple-signing payload, ECDSA); see ``signature_policy`` for when they are
demanded.
"""

from ._base import (
    DigestMismatchError,
    Kind,
    OciError,
    OciSettings,
    Reference,
    RegistryUnreachableError,
    SignatureError,
    host_platform,
    is_loopback,
    signature_policy,
)
from ._pull import Inspection, PulledPlugin, inspect, pull
from ._push import Build, PushedPlugin, builds_for, push
from ._signatures import sign

__all__ = [
    "Build",
    "DigestMismatchError",
    "Inspection",
    "Kind",
    "OciError",
    "OciSettings",
    "PulledPlugin",
    "PushedPlugin",
    "Reference",
    "RegistryUnreachableError",
    "SignatureError",
    "builds_for",
    "host_platform",
    "inspect",
    "is_loopback",
    "pull",
    "push",
    "sign",
    "signature_policy",
]
