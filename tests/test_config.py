"""plugins.toml / .json / .yaml: parsing, validation, and errors that name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from querymt_jupyter import ConfigError, load_config
from querymt_jupyter.config import DEFAULT_CONFIG, NATIVE_SUFFIX, discover_config

TOML = """\
# my providers
[[providers]]
name = "echo"
path = "plugins/echo.wasm"

[[providers]]
name = "fast"
path = "/opt/fast.{native}"
[providers.config]
model = "m"
allowed_hosts = ["api.example.com"]

[oci]
insecure_skip_signature = true
""".replace("{native}", NATIVE_SUFFIX)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_json_and_yaml_give_the_same_config(tmp_path):
    from_toml = load_config(write(tmp_path, "plugins.toml", TOML))
    document = {
        "providers": [
            {"name": "echo", "path": "plugins/echo.wasm"},
            {"name": "fast", "path": f"/opt/fast.{NATIVE_SUFFIX}", "config": {"model": "m", "allowed_hosts": ["api.example.com"]}},
        ],
        "oci": {"insecure_skip_signature": True},
    }
    from_json = load_config(write(tmp_path, "plugins.json", json.dumps(document)))
    yaml_text = json.dumps(document)  # JSON is YAML
    from_yaml = load_config(write(tmp_path, "plugins.yaml", yaml_text))
    for config in (from_toml, from_json, from_yaml):
        assert config.names() == ["echo", "fast"]
        assert config.providers[1].config == {"model": "m", "allowed_hosts": ["api.example.com"]}
        assert config.oci == {"insecure_skip_signature": True}
        assert [p.source.kind for p in config.providers] == ["wasm", "native"]


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    config = load_config(write(tmp_path, "plugins.toml", TOML))
    assert config.providers[0].source.location == str(tmp_path / "plugins" / "echo.wasm")


def test_broken_toml_names_file_and_line(tmp_path):
    path = write(tmp_path, "plugins.toml", '[[providers]]\nname = "a"\npath = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path) and info.value.line == 3
    assert f"{path}:3" in str(info.value)


def test_broken_json_and_yaml_name_the_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "p.json", '{"providers": [\n  {"name": "a",}\n]}'))
    assert info.value.line == 2
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "p.yaml", "providers:\n  - name: a\n   path: [x\n"))
    assert info.value.line is not None and "YAML" in str(info.value)


def test_missing_file_and_extension_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="unsupported extension '.ini'"):
        load_config(write(tmp_path, "plugins.ini", ""))


def test_providers_is_required_but_may_be_empty(tmp_path):
    with pytest.raises(ConfigError, match="providers") as info:
        load_config(write(tmp_path, "a.toml", "[oci]\n"))
    assert info.value.field == "providers"
    assert load_config(write(tmp_path, "b.toml", "providers = []\n")).providers == []


@pytest.mark.parametrize(
    ("entry", "field", "line"),
    [
        ('[[providers]]\npath = "x.wasm"\n', "providers[0].name", None),
        ('[[providers]]\nname = "a"\n', "providers[0] (a).path", 2),
        ('[[providers]]\nname = "a"\npath = "x.txt"\n', "providers[0] (a).path", 2),
        ('[[providers]]\nname = "a"\npath = "x.wasm"\nconfig = "no"\n', "providers[0] (a).config", 2),
        ('[[providers]]\nname = "a"\npath = "x.wasm"\n[providers.config]\nallowed_hosts = "h"\n', "providers[0] (a).config.allowed_hosts", 2),
    ],
)
def test_field_errors_name_the_provider_and_field(tmp_path, entry, field, line):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "plugins.toml", entry))
    assert info.value.field == field
    assert info.value.line == line


def test_duplicate_names_are_refused(tmp_path):
    text = '[[providers]]\nname = "a"\npath = "x.wasm"\n[[providers]]\nname = "a"\npath = "y.wasm"\n'
    with pytest.raises(ConfigError, match="used twice") as info:
        load_config(write(tmp_path, "plugins.toml", text))
    assert info.value.line == 5


def test_sources_by_scheme(tmp_path):
    text = (
        '[[providers]]\nname = "u"\npath = "https://example.invalid/p/echo.wasm"\n'
        '[[providers]]\nname = "o"\npath = "oci://127.0.0.1:5000/plugins/echo:1.0"\n'
        '[[providers]]\nname = "b"\npath = "bundled:echo.native"\n'
    )
    providers = load_config(write(tmp_path, "plugins.toml", text)).providers
    assert (providers[0].source.scheme, providers[0].source.kind) == ("url", "wasm")
    assert providers[1].source is None  # the OCI image decides
    assert (providers[2].source.scheme, providers[2].source.kind) == ("bundled", "native")


def test_default_config_and_discovery(tmp_path):
    config = load_config(DEFAULT_CONFIG)
    assert config.names() == ["echo-native", "echo-wasm", "tinyllm", "tinyllm-native", "tinyllm-wasm", "openai"]
    assert discover_config(tmp_path) == DEFAULT_CONFIG
    mine = write(tmp_path, "plugins.toml", "providers = []\n")
    assert discover_config(tmp_path) == mine
