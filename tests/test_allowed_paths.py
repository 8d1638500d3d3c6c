"""``allowed_paths``: directories granted, read-only, to a Wasm plugin's WASI sandbox; ``bundled:<name>``.

tests/plugins/fsprobe.c reads (``read_file``) and writes (``write_file``) files with plain stdio and reports
a failure's errno. Built once (the build cache keeps it across sessions) as Wasm and as a native library,
it is loaded through a real registry and real Extism, so the grant is checked end to end: config key ->
ProviderSpec -> Extism manifest of every instance -> what the guest can open.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from querymt_jupyter import ConfigError, load_config
from querymt_jupyter import config as config_module
from querymt_jupyter.build import build_plugin
from querymt_jupyter.config import MODELS_DIR, expand_env, parse_config
from querymt_jupyter.errors import QueryMTError
from querymt_jupyter.registry import PluginRegistry

FSPROBE = Path(__file__).parent / "plugins" / "fsprobe.c"


@pytest.fixture(scope="session")
def fsprobe() -> dict[str, Path]:
    return {kind: build_plugin(FSPROBE, kind) for kind in ("wasm", "native")}


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """A granted folder holding ``weights.bin``, and a folder beside it holding ``secret.txt``."""
    granted, other = tmp_path / "granted", tmp_path / "other"
    granted.mkdir()
    other.mkdir()
    (granted / "weights.bin").write_bytes(b"\x00weights\xff")
    (other / "secret.txt").write_text("secret")
    return {"granted": granted, "other": other}


def registry(tmp_path: Path, plugin: Path, grant: str = "") -> PluginRegistry:
    """A registry whose one provider ``fsprobe`` is ``plugin``, with ``grant`` (a TOML line) added."""
    config = tmp_path / "plugins.toml"
    config.write_text(f'[[providers]]\nname = "fsprobe"\npath = "{plugin}"\n{grant}\n')
    return PluginRegistry.from_path(config)


def call(plugins: PluginRegistry, op: str, arg: str) -> bytes:
    return plugins["fsprobe"].call(op, arg.encode())


# ---- the sandbox, end to end ---------------------------------------------------------------------------


def test_a_granted_directory_is_readable_at_the_same_path(tmp_path, fsprobe, dirs):
    granted = dirs["granted"]
    with registry(tmp_path, fsprobe["wasm"], f'allowed_paths = ["{granted}"]') as plugins:
        assert call(plugins, "read_file", f"{granted}/weights.bin") == b"\x00weights\xff"
        assert plugins.config.providers[0].allowed_paths == {str(granted): str(granted)}


def test_outside_the_grant_nothing_is_readable(tmp_path, fsprobe, dirs):
    granted, other = dirs["granted"], dirs["other"]
    with registry(tmp_path, fsprobe["wasm"], f'allowed_paths = ["{granted}"]') as plugins:
        with pytest.raises(QueryMTError, match=r"errno \d+ \(No such file or directory\): open .*secret\.txt"):
            call(plugins, "read_file", f"{other}/secret.txt")
        with pytest.raises(QueryMTError, match=r"errno \d+"):  # no escape through ..
            call(plugins, "read_file", f"{granted}/../other/secret.txt")


def test_without_a_grant_the_sandbox_has_no_files(tmp_path, fsprobe, dirs):
    with registry(tmp_path, fsprobe["wasm"]) as plugins:
        assert plugins.config.providers[0].allowed_paths == {}
        with pytest.raises(QueryMTError, match=r"errno \d+ \(No such file or directory\)"):
            call(plugins, "read_file", f"{dirs['granted']}/weights.bin")


def test_the_grant_is_read_only(tmp_path, fsprobe, dirs):
    granted = dirs["granted"]
    with registry(tmp_path, fsprobe["wasm"], f'allowed_paths = ["{granted}"]') as plugins:
        with pytest.raises(QueryMTError, match=r"errno \d+ \(Operation not permitted\): open for writing"):
            call(plugins, "write_file", f"{granted}/new.txt\nhello")
        with pytest.raises(QueryMTError, match=r"errno \d+ \(Operation not permitted\): open for writing"):
            call(plugins, "write_file", f"{granted}/weights.bin\noverwritten")
    assert sorted(p.name for p in granted.iterdir()) == ["weights.bin"]
    assert (granted / "weights.bin").read_bytes() == b"\x00weights\xff"


def test_a_table_mounts_a_host_directory_at_a_guest_path(tmp_path, fsprobe, dirs):
    grant = f'allowed_paths = {{ "{dirs["granted"]}" = "/models" }}'
    with registry(tmp_path, fsprobe["wasm"], grant) as plugins:
        assert call(plugins, "read_file", "/models/weights.bin") == b"\x00weights\xff"
        with pytest.raises(QueryMTError, match="errno"):  # mounted at /models only
            call(plugins, "read_file", f"{dirs['granted']}/weights.bin")


def test_every_instance_gets_the_grant(tmp_path, fsprobe, dirs, monkeypatch):
    """The pre-flight instance, the final one and each pooled one."""
    from querymt_jupyter.loaders import wasm

    granted, manifests = dirs["granted"], []
    real_plugin = wasm.extism.Plugin

    def recording(manifest, **options):
        manifests.append(manifest)
        return real_plugin(manifest, **options)

    monkeypatch.setattr(wasm.extism, "Plugin", recording)
    with registry(tmp_path, fsprobe["wasm"], f'allowed_paths = ["{granted}"]') as plugins:
        factory = plugins["fsprobe"]
        factory.set_pool_size(2)
        with factory.lease(), factory.lease() as second:  # the second lease needs a second instance
            assert len(factory.instances) == 2
            assert second.call("read_file", f"{granted}/weights.bin".encode()) == b"\x00weights\xff"
    assert [m["allowed_paths"] for m in manifests] == [{f"ro:{granted}": str(granted)}] * 3
    assert ["allowed_hosts" in m for m in manifests] == [False, True, True]


def test_a_native_plugin_is_not_sandboxed(tmp_path, fsprobe, dirs):
    """The key is accepted and changes nothing: a native plugin reads (and writes) any file."""
    with registry(tmp_path, fsprobe["native"], f'allowed_paths = ["{dirs["granted"]}"]') as plugins:
        assert plugins["fsprobe"].plugin_type == "native"
        assert call(plugins, "read_file", f"{dirs['other']}/secret.txt") == b"secret"


# ---- the config key -------------------------------------------------------------------------------------


def write_config(tmp_path: Path, grant: str, name: str = "plugins.toml") -> Path:
    path = tmp_path / name
    path.write_text(f'[[providers]]\nname = "p"\npath = "p.wasm"\n{grant}\n')
    return path


def test_paths_are_expanded_and_resolved_against_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "home" / "models").mkdir(parents=True)
    (tmp_path / "cfg" / "weights").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MY_DIR", str(tmp_path / "var"))
    grant = 'allowed_paths = ["~/models", "weights", "${MY_DIR}", "weights/../../var/."]'
    config = load_config(write_config(tmp_path / "cfg", grant))
    home, weights, var = (str(tmp_path / p) for p in ("home/models", "cfg/weights", "var"))
    assert config.providers[0].allowed_paths == {home: home, weights: weights, var: var}


def test_the_same_grant_in_json_and_yaml(tmp_path):
    (tmp_path / "m").mkdir()
    entry = {"name": "p", "path": "p.wasm", "allowed_paths": {"m": "/models"}}
    for name in ("plugins.json", "plugins.yaml"):
        (tmp_path / name).write_text(json.dumps({"providers": [entry]}))
        assert load_config(tmp_path / name).providers[0].allowed_paths == {str(tmp_path / "m"): "/models"}


@pytest.mark.parametrize(
    ("grant", "field", "message"),
    [
        ('allowed_paths = ["missing"]', "providers[0] (p).allowed_paths[0]", "{tmp}/missing does not exist"),
        ('allowed_paths = ["plugins.toml"]', "providers[0] (p).allowed_paths[0]", "plugins.toml is not a directory"),
        ('allowed_paths = { "missing" = "/m" }', 'providers[0] (p).allowed_paths["missing"]', "does not exist"),
        ('allowed_paths = "."', "providers[0] (p).allowed_paths", "must be a list of directories or a table"),
        ("allowed_paths = [1]", "providers[0] (p).allowed_paths", "must be a list of directories or a table"),
        ('allowed_paths = { "." = 1 }', "providers[0] (p).allowed_paths", "must be a list of directories or a table"),
        ('allowed_paths = { "." = "models" }', 'providers[0] (p).allowed_paths["."]', "must be absolute"),
        ('allowed_paths = { "." = "/m", ".." = "/m" }', 'providers[0] (p).allowed_paths[".."]', "granted twice"),
        ('allowed_paths = ["${QMT_TEST_UNSET_DIR}"]', "providers[0] (p).allowed_paths[0]", "is an empty path"),
        ('[providers.config]\nallowed_paths = ["."]', "providers[0] (p).config.allowed_paths", "not of its config"),
    ],
)
def test_config_errors_name_the_file_line_and_field(tmp_path, monkeypatch, grant, field, message):
    monkeypatch.delenv("QMT_TEST_UNSET_DIR", raising=False)
    path = write_config(tmp_path, grant)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.path == str(path) and error.field == field
    assert error.line == (5 if grant.startswith("[providers.config]") else 4)
    assert message.format(tmp=tmp_path) in str(error)
    assert error.hint or "absolute" in message or "twice" in message


# ---- ${QUERYMT_JUPYTER_MODELS} --------------------------------------------------------------------------


def test_the_models_variable_is_built_in(monkeypatch):
    monkeypatch.delenv("QUERYMT_JUPYTER_MODELS", raising=False)
    assert MODELS_DIR.is_absolute() and MODELS_DIR.name == "models" and MODELS_DIR.parent.name == "querymt_jupyter"
    assert expand_env("${QUERYMT_JUPYTER_MODELS}/tinyllm-kjv.bin") == f"{MODELS_DIR}/tinyllm-kjv.bin"
    assert expand_env("${QUERYMT_JUPYTER_MODELS:-/elsewhere}") == str(MODELS_DIR)
    text = '[[providers]]\nname = "p"\npath = "p.wasm"\nallowed_paths = ["${QUERYMT_JUPYTER_MODELS}"]\n'
    assert parse_config(text, "toml").providers[0].allowed_paths == {str(MODELS_DIR): str(MODELS_DIR)}


def test_the_environment_overrides_the_models_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("QUERYMT_JUPYTER_MODELS", str(tmp_path))
    assert expand_env({"checkpoint": "${QUERYMT_JUPYTER_MODELS}/m.bin"}) == {"checkpoint": f"{tmp_path}/m.bin"}
    grant = 'allowed_paths = ["${QUERYMT_JUPYTER_MODELS}"]'
    assert load_config(write_config(tmp_path, grant)).providers[0].allowed_paths == {str(tmp_path): str(tmp_path)}


# ---- bundled:<name> without a suffix ----------------------------------------------------------------------


def bundled(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text(f'[[providers]]\nname = "echo"\npath = "bundled:echo"\n{extra}')
    return path


def test_bare_bundled_picks_the_native_build_here(tmp_path):
    assert config_module.native_builds_here()  # the test machines are Linux/macOS on x86_64/aarch64
    spec = load_config(bundled(tmp_path)).providers[0]
    assert (spec.path, str(spec.source), spec.source.kind) == ("bundled:echo", "bundled:echo.native", "native")
    with PluginRegistry.from_path(bundled(tmp_path)) as plugins:
        assert plugins["echo"].plugin_type == "native"


def test_bare_bundled_picks_wasm_without_native_builds(tmp_path, monkeypatch):
    spec = load_config(bundled(tmp_path, "[oci]\nallow_native = false\n")).providers[0]
    assert (str(spec.source), spec.source.kind) == ("bundled:echo.wasm", "wasm")
    monkeypatch.setattr(config_module, "native_builds_here", lambda: False)  # e.g. Pyodide, or riscv64
    assert load_config(bundled(tmp_path)).providers[0].source.kind == "wasm"
