"""OCI plugins against a real registry process (distribution 2.8 on 127.0.0.1): push, pull, select, cache,
verify. Manifests are read back with plain HTTP or pushed with stock oras, so the checks do not lean on the
code under test to describe itself."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import oras.client
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from registry_server import RegistryServer

from querymt_jupyter import ConfigError, PluginLoadError, PluginRegistry, cli, oci
from querymt_jupyter.oci import (
    DigestMismatchError,
    OciError,
    OciSettings,
    Reference,
    RegistryUnreachableError,
    SignatureError,
)

HOST_PLATFORM = "/".join(oci.host_platform())


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path_factory.mktemp("registry")).start()
    yield server
    server.stop()


@pytest.fixture
def own_registry(tmp_path) -> Iterator[RegistryServer]:
    """A registry this test may stop and start."""
    folder = tmp_path / "own"
    folder.mkdir()
    server = RegistryServer(folder).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo_builds() -> list[oci.Build]:
    """Both builds of the bundled echo plugin, from the normal build cache (built once per session)."""
    return oci.builds_for("echo")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh plugin cache per test (the OCI cache is under it)."""
    monkeypatch.setenv("QUERYMT_JUPYTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return tmp_path / "cache" / "oci"


def _ref(server: RegistryServer, repository: str, tag: str = "1.0") -> str:
    return f"oci://{server.host}/{repository}:{tag}"


def _config(tmp_path: Path, path: str, oci_table: str = "") -> Path:
    config = tmp_path / "plugins.toml"
    config.write_text(
        f'[[providers]]\nname = "remote"\npath = "{path}"\n' + (f"[oci]\n{oci_table}\n" if oci_table else "")
    )
    return config


def _get(server: RegistryServer, repository: str, kind: str, target: str) -> httpx.Response:
    accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
    response = httpx.get(f"http://{server.host}/v2/{repository}/{kind}/{target}", headers={"Accept": accept})
    response.raise_for_status()
    return response


def _oras_push(
    server: RegistryServer,
    tmp_path: Path,
    repository: str,
    media_type: str,
    data: bytes,
    annotations: dict[str, str] | None = None,
) -> str:
    """A single-manifest artifact pushed with stock oras (not our push code)."""
    blob = tmp_path / "artifact.bin"
    blob.write_bytes(data)
    client = oras.client.OrasClient(hostname=server.host, insecure=True)
    target = f"{server.host}/{repository}:1.0"
    client.push(
        target=target,
        files=[f"{blob}:{media_type}"],
        disable_path_validation=True,
        manifest_annotations=annotations,
        quiet=True,
    )
    return f"oci://{target}"


# ---- push: the layout QueryMT reads --------------------------------------------------------------


def test_push_writes_one_index_with_both_builds_as_querymt_expects(registry, echo_builds):
    pushed = oci.push(_ref(registry, "plugins/echo"), echo_builds)
    index = _get(registry, "plugins/echo", "manifests", "1.0")
    assert index.headers["Docker-Content-Digest"] == pushed.digest
    body = index.json()
    assert body["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}": m for m in body["manifests"]}
    assert set(platforms) == {HOST_PLATFORM, "wasi/wasm"}

    wasm = _get(registry, "plugins/echo", "manifests", platforms["wasi/wasm"]["digest"]).json()
    assert [layer["mediaType"] for layer in wasm["layers"]] == ["application/vnd.wasm.v1.layer+wasm"]
    assert wasm["annotations"]["mt.query.plugin.type"] == "extism"
    module = _get(registry, "plugins/echo", "blobs", wasm["layers"][0]["digest"]).content
    assert module == echo_builds[1].path.read_bytes()

    native = _get(registry, "plugins/echo", "manifests", platforms[HOST_PLATFORM]["digest"]).json()
    assert [layer["mediaType"] for layer in native["layers"]] == ["application/vnd.oci.image.layer.v1.tar+gzip"]
    assert native["annotations"]["mt.query.plugin.type"] == "native"
    tarball = _get(registry, "plugins/echo", "blobs", native["layers"][0]["digest"]).content
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == [echo_builds[0].path.name]
        assert archive.extractfile(members[0]).read() == echo_builds[0].path.read_bytes()


def test_pushing_the_same_builds_again_gives_the_same_digest(registry, echo_builds):
    first = oci.push(_ref(registry, "plugins/same"), echo_builds)
    assert oci.push(_ref(registry, "plugins/same"), echo_builds).digest == first.digest


# ---- pull: selection, loading, the cache ---------------------------------------------------------


def test_the_native_build_is_selected_on_this_machine_and_loads(registry, echo_builds, tmp_path, cache, golden):
    reference = _ref(registry, "plugins/echo-sel")
    pushed = oci.push(reference, echo_builds)
    with PluginRegistry.from_path(_config(tmp_path, reference)) as plugins:
        assert plugins["remote"].plugin_type == "native"
        assert plugins.builder("remote").model("echo-1").build().chat("over oci").text == "echo: over oci"
    metadata = json.loads((cache / "manifests" / f"{Reference.parse(reference).cache_name}.json").read_text())
    assert list(metadata) == list(golden["oci_cache_metadata"]["json"])  # QueryMT's fields, in its order
    assert metadata["manifest_digest"] == pushed.digest and metadata["plugin_type_str"] == "native"
    assert metadata["filename"] == echo_builds[0].path.name


def test_with_native_disabled_the_wasm_build_is_selected(registry, echo_builds, tmp_path):
    reference = _ref(registry, "plugins/echo-wasm-only")
    oci.push(reference, echo_builds)
    with PluginRegistry.from_path(_config(tmp_path, reference, "allow_native = false")) as plugins:
        assert plugins["remote"].plugin_type == "wasm"
        assert plugins.builder("remote").model("echo-1").build().chat("sandboxed").text == "echo: sandboxed"


def test_a_second_pull_downloads_nothing(registry, echo_builds):
    reference = _ref(registry, "plugins/echo-twice")
    oci.push(reference, echo_builds)
    first, second = oci.pull(reference), oci.pull(reference)
    assert first.downloaded and not second.downloaded
    assert second.path == first.path and not second.offline


def test_a_moved_tag_is_noticed(registry, echo_builds, tmp_path):
    reference = _ref(registry, "plugins/moving")
    first = oci.push(reference, echo_builds)
    assert oci.pull(reference).digest == first.digest
    openai = oci.builds_for("openai", only="wasm")
    moved = oci.push(reference, openai)  # QueryMT's reference-keyed cache would keep loading echo
    pulled = oci.pull(reference)
    assert (pulled.digest, pulled.kind, pulled.downloaded) == (moved.digest, "wasm", True)
    assert pulled.path.read_bytes() == openai[0].path.read_bytes()


def test_a_pinned_digest_needs_no_registry_once_cached(own_registry, echo_builds):
    pushed = oci.push(_ref(own_registry, "plugins/pinned"), echo_builds)
    pinned = f"oci://{own_registry.host}/plugins/pinned@{pushed.digest}"
    first = oci.pull(pinned)
    own_registry.stop()
    again = oci.pull(pinned)
    assert (again.path, again.downloaded, again.offline) == (first.path, False, False)


def test_registry_down_with_a_cache_loads_the_last_resolution(own_registry, echo_builds, tmp_path):
    reference = _ref(own_registry, "plugins/offline")
    oci.push(reference, echo_builds)
    config = _config(tmp_path, reference)
    with PluginRegistry.from_path(config) as plugins:
        plugins["remote"]
    own_registry.stop()
    assert oci.pull(reference).offline
    with PluginRegistry.from_path(config) as plugins:
        assert plugins.builder("remote").model("echo-1").build().chat("offline").text == "echo: offline"


def test_registry_down_without_a_cache_is_a_quick_clear_error(own_registry, tmp_path):
    own_registry.stop()
    reference = _ref(own_registry, "plugins/never-pulled")
    started = time.perf_counter()
    with PluginRegistry.from_path(_config(tmp_path, reference)) as plugins, pytest.raises(PluginLoadError) as info:
        plugins.get("remote")
    assert time.perf_counter() - started < 5  # no retry loop with sleeps
    assert isinstance(info.value.__cause__, RegistryUnreachableError)
    message = str(info.value)
    assert reference in message and "connection refused" in message and "nothing is cached" in message


def test_a_corrupted_blob_is_refused_and_nothing_is_kept(own_registry, echo_builds, cache):
    # its own registry: blobs are shared by every repository of a registry, and this one gets damaged
    reference = _ref(own_registry, "plugins/corrupt")
    oci.push(reference, echo_builds)
    wasm_layer = oci.inspect(reference).rows[2]
    assert wasm_layer["platform"] == "wasi/wasm"
    stored = own_registry.blob_file(wasm_layer["digest"])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different bytes: only the digest can tell
    stored.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError, match="arrived with digest") as info:
        oci.pull(reference, OciSettings(allow_native=False))
    assert wasm_layer["digest"] in str(info.value)
    assert not (cache / "blobs" / wasm_layer["digest"].replace(":", "_")).exists()
    assert list((cache / "tmp").iterdir()) == []  # the partial download was deleted


@pytest.mark.parametrize(
    ("media_type", "annotations", "expected"),
    [
        ("application/vnd.wasm.v1.layer+wasm", None, "wasm"),  # rule 1: a Wasm layer
        ("application/vnd.oci.image.layer.v1.tar+gzip", None, "native"),  # rule 3: a tar+gzip layer
        ("application/vnd.oci.image.layer.v1.tar+gzip", {"mt.query.plugin.type": "native"}, "native"),  # rule 2
        ("application/octet-stream", None, "no plugin layer: layer media types are application/octet-stream"),
        ("application/octet-stream", {"mt.query.plugin.type": "wasm"}, "QueryMT knows 'extism' and 'native'"),
        ("application/octet-stream", {"mt.query.plugin.type": "extism"}, "has no application/vnd.wasm.v1.layer+wasm"),
    ],
)
def test_a_single_manifest_is_typed_by_layer_then_annotation(
    registry, echo_builds, tmp_path, media_type, annotations, expected
):
    wasm, native = echo_builds[1].path, echo_builds[0].path
    data = wasm.read_bytes() if "wasm" in media_type else _one_file_tarball(native)
    reference = _oras_push(
        registry, tmp_path, f"single/{abs(hash((media_type, str(annotations))))}", media_type, data, annotations
    )
    if expected in ("wasm", "native"):
        pulled = oci.pull(reference)
        assert pulled.kind == expected and pulled.platform == ""
        assert pulled.path.read_bytes() == (wasm if expected == "wasm" else native).read_bytes()
    else:
        with pytest.raises(OciError, match=re.escape(expected)):
            oci.pull(reference)


def _one_file_tarball(path: Path) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        archive.add(path, arcname=f"lib/{path.name}")  # a folder in the archive: the base name is kept
    return gzip.compress(raw.getvalue())


def test_an_index_without_a_usable_platform_lists_what_it_has(registry, echo_builds):
    reference = _ref(registry, "plugins/native-only")
    oci.push(reference, [echo_builds[0]])
    with pytest.raises(OciError, match=rf"no build for wasi/wasm \(it has: {HOST_PLATFORM}\)"):
        oci.pull(reference, OciSettings(allow_native=False))


# ---- signatures ----------------------------------------------------------------------------------


def _key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def test_a_good_signature_verifies_and_is_remembered(registry, echo_builds, tmp_path, cache):
    private, public = _key_pair(tmp_path, "cosign")
    reference = _ref(registry, "signed/good")
    pushed = oci.push(reference, echo_builds, sign_key=private)
    assert pushed.signature_tag == pushed.digest.replace(":", "-") + ".sig"
    sig = _get(registry, "signed/good", "manifests", pushed.signature_tag).json()["layers"][0]
    assert sig["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = json.loads(_get(registry, "signed/good", "blobs", sig["digest"]).content)
    assert payload["critical"]["image"]["docker-manifest-digest"] == pushed.digest
    assert base64.b64decode(sig["annotations"]["dev.cosignproject.cosign/signature"])

    pulled = oci.pull(reference, OciSettings(public_key=public))
    assert pulled.verified
    assert len(list((cache / "signatures").iterdir())) == 1
    assert oci.inspect(reference).rows[-1]["platform"] == "signature"


def test_a_signature_by_another_key_is_refused(registry, echo_builds, tmp_path):
    other, _ = _key_pair(tmp_path, "other")
    _key_pair(tmp_path, "trusted")  # trusted.pub is the configured key
    reference = _ref(registry, "signed/bad")
    oci.push(reference, echo_builds, sign_key=other)
    config = _config(tmp_path, reference, 'public_key = "trusted.pub"')
    with PluginRegistry.from_path(config) as plugins, pytest.raises(PluginLoadError, match="verifies with") as info:
        plugins.get("remote")
    assert isinstance(info.value.__cause__, SignatureError)
    assert str(tmp_path / "trusted.pub") in str(info.value)


def test_a_missing_signature_is_refused_when_a_key_is_configured(registry, echo_builds, tmp_path, cache):
    _, public = _key_pair(tmp_path, "cosign")
    reference = _ref(registry, "signed/missing")
    oci.push(reference, echo_builds)
    with pytest.raises(SignatureError, match=r"no signature for sha256:\w+ \(tag sha256-\w+\.sig not found\)"):
        oci.pull(reference, OciSettings(public_key=public))
    assert not (cache / "blobs").exists()  # refused before any plugin was downloaded


@pytest.mark.parametrize(
    ("reference", "table", "names"),
    [
        ("oci://registry.example:5000/p/echo:1", {}, ["public_key", "insecure_skip_signature = true"]),
        (
            "oci://127.0.0.1:9/p/echo:1",
            {"insecure_skip_signature": False},
            ["insecure_skip_signature = false", "public_key"],
        ),
        ("oci://127.0.0.1:9/p/echo:1", {"cert_email": "me@example.org"}, ["cert_email", "public_key"]),
    ],
)
def test_a_demanded_check_that_cannot_be_done_is_refused_before_any_request(reference, table, names):
    settings = OciSettings.from_table(table, Path.cwd())
    with pytest.raises(SignatureError) as info:
        oci.pull(reference, settings)  # port 9 / .example: a request would fail differently
    assert all(name in str(info.value) for name in names)


def test_skipping_signatures_is_explicit(registry, echo_builds):
    reference = _ref(registry, "signed/skipped")
    oci.push(reference, echo_builds)
    assert not oci.pull(reference, OciSettings.from_table({"insecure_skip_signature": True}, Path.cwd())).verified


# ---- settings, credentials -----------------------------------------------------------------------


def test_unknown_oci_keys_are_config_errors(tmp_path):
    config = _config(tmp_path, "oci://127.0.0.1:9/p/x:1", 'publickey = "k.pub"')
    with (
        PluginRegistry.from_path(config) as plugins,
        pytest.raises(ConfigError, match=r"unknown \[oci\] keys: publickey"),
    ):
        plugins.get("remote")


def test_references_must_name_their_registry():
    with pytest.raises(OciError, match="oci://HOST"):
        Reference.parse("oci://plugins/echo:1.0")
    assert str(Reference.parse("oci://localhost/plugins/echo")) == "oci://localhost/plugins/echo:latest"


def test_credentials_come_from_the_docker_config(tmp_path, echo_builds, monkeypatch):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(b"alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)) + b"\n")
    (tmp_path / "locked").mkdir()
    server = RegistryServer(tmp_path / "locked", htpasswd=htpasswd).start()
    try:
        reference = _ref(server, "private/echo")
        with pytest.raises(OciError, match="HTTP 401") as info:
            oci.push(reference, echo_builds)
        assert "docker login" in str(info.value)
        docker = tmp_path / "docker"
        docker.mkdir()
        auth = base64.b64encode(b"alice:secret").decode()
        (docker / "config.json").write_text(json.dumps({"auths": {server.host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(docker))
        oci.push(reference, echo_builds)
        assert oci.pull(reference).kind == "native"
    finally:
        server.stop()


# ---- the console command and the magics ----------------------------------------------------------


def test_the_console_command_pushes_inspects_and_pulls(registry, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no plugins.toml: the bundled default config's (empty) [oci] applies
    reference = _ref(registry, "cli/echo")
    assert cli.main(["push", "echo", reference]) == 0
    assert cli.main(["inspect", reference]) == 0
    shown = capsys.readouterr().out
    assert "index" in shown and HOST_PLATFORM in shown and "wasi/wasm" in shown and "✓" in shown
    assert cli.main(["pull", reference, "--wasm"]) == 0
    assert "plugin.wasm" in capsys.readouterr().out
    assert cli.main(["pull", "oci://127.0.0.1:9/cli/none:1"]) == 1
    assert "oci://127.0.0.1:9/cli/none:1" in capsys.readouterr().err


def test_the_magics_push_pull_and_inspect(registry, tmp_path):
    from test_magics import Kernel

    reference = _ref(registry, "magic/echo")
    env = {**os.environ, "QUERYMT_JUPYTER_LOG": "off"}
    kernel = Kernel(tmp_path, env)
    try:
        assert kernel.run("%load_ext querymt_jupyter").status == "ok"
        pushed = kernel.run(f"%querymt push echo {reference}")
        assert pushed.status == "ok", pushed.stderr
        assert kernel.run(f"shown = %querymt inspect {reference}").status == "ok"
        assert kernel.value("shown['platform'].tolist()") == ["index", HOST_PLATFORM, "wasi/wasm"]
        assert kernel.run(f"pulled = %querymt pull {reference} --wasm").status == "ok"
        assert kernel.value("[type(pulled).__name__, pulled['kind'].tolist()]") == ["DataFrame", ["wasm"]]
        failed = kernel.run("%querymt pull oci://127.0.0.1:9/magic/none:1")
        assert failed.status == "error" and "connection refused" in json.dumps(failed.messages)
        assert kernel.run("%querymt pull").status == "error"
    finally:
        kernel.close()
