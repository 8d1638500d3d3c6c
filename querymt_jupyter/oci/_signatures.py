"""Cosign's key-based signatures: the ``sha256-<hex>.sig`` tag (distribution 2.8 has no referrers API),
a simple-signing payload naming the signed digest, an ECDSA signature of it in a layer annotation: the
layout of ``cosign sign --key`` without a transparency log (written from cosign's format; the cosign binary
itself was not available to test against)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ._base import ACCEPT, IMAGE_CONFIG, SIMPLE_SIGNING, OciSettings, Reference, SignatureError
from ._client import Cache, Client, fetch_small_blob, image_manifest, put_manifest, upload

_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
_MAX_PAYLOAD = 64 << 10  # a cosign simple-signing payload is a few hundred bytes


def _load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"cannot read [oci] public_key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise SignatureError(f"[oci] public_key {path} is not an ECDSA key (cosign's key type)")
    return key


def _key_id(key: Any) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()[:16]


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"  # cosign's tag convention; distribution 2.8 has no referrers API


def verify(client: Client, cache: Cache, digest: str, settings: OciSettings, offline: bool) -> bool:
    """Check a cosign signature of ``digest`` with the configured key (once per digest and key)."""
    assert settings.public_key is not None
    key = _load_public_key(settings.public_key)
    key_id = _key_id(key)
    if cache.verified(digest, key_id):
        return True
    reference = client.reference
    if offline:
        raise SignatureError(
            f"{reference}: the registry is unreachable, and {digest} was never verified with "
            f"{settings.public_key.name}",
            hint="pull it once while the registry is reachable",
        )
    response = client.do_request(client.url("manifests", signature_tag(digest)), headers={"Accept": ACCEPT})
    if response.status_code == 404:
        raise SignatureError(
            f"{reference}: no signature for {digest} (tag {signature_tag(digest)} not found)",
            hint="sign it: querymt-jupyter push ... --sign-key KEY, or cosign sign --key",
        )
    client.check(response, "fetching the signature")
    layers = [l for l in response.json().get("layers") or [] if l.get("mediaType") == SIMPLE_SIGNING]
    if not any(_valid_signature(client, layer, key, digest) for layer in layers):
        raise SignatureError(f"{reference}: no signature of {digest} verifies with {settings.public_key}")
    cache.mark_verified(digest, key_id)
    return True


def _valid_signature(client: Client, layer: dict[str, Any], key: Any, digest: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signature = (layer.get("annotations") or {}).get(_SIGNATURE_ANNOTATION)
    if not signature:
        return False
    payload = fetch_small_blob(client, layer, min(int(layer.get("size", _MAX_PAYLOAD)), _MAX_PAYLOAD))
    try:
        key.verify(base64.b64decode(signature), payload, ec.ECDSA(hashes.SHA256()))
        claims = json.loads(payload)["critical"]
    except (InvalidSignature, ValueError, KeyError, TypeError):
        return False
    # As cosign's claim check: the signed payload must name this digest (the identity may differ: copies)
    return claims.get("image", {}).get("docker-manifest-digest") == digest and (
        claims.get("type") == "cosign container image signature"
    )


def sign(reference: str | Reference, digest: str, private_key: Path, settings: OciSettings | None = None) -> str:
    """Push a cosign signature of ``digest`` made with a PEM ECDSA key; returns the signature tag.

    An encrypted key is opened with ``$COSIGN_PASSWORD``. The signature replaces any earlier one.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    reference = reference if isinstance(reference, Reference) else Reference.parse(reference)
    password = os.environ.get("COSIGN_PASSWORD")
    try:
        key = load_pem_private_key(private_key.read_bytes(), password.encode() if password else None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read the signing key {private_key}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SignatureError(f"the signing key {private_key} is not an ECDSA key")
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{reference.registry}/{reference.repository}"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        },
        separators=(",", ":"),
    ).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    client = Client(reference, settings or OciSettings())
    layer = upload(client, payload, SIMPLE_SIGNING)
    layer["annotations"] = {_SIGNATURE_ANNOTATION: signature}
    config = {"architecture": "", "os": "", "config": {}, "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
    tag = signature_tag(digest)
    put_manifest(client, image_manifest(client, config, IMAGE_CONFIG, [layer], {}), tag)
    return tag
