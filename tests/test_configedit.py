"""configedit: edits change only their own span of the file (TOML, JSON, YAML), or are refused whole."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from querymt_jupyter import ConfigError, configedit
from querymt_jupyter.config import DEFAULT_CONFIG, parse_config
from querymt_jupyter.configedit import ConfigDocument, ConfigEditError, FieldError, is_secret, secret_env_var, source_label

TOML = """\
# querymt-jupyter providers
version = 2   # unknown top-level key

[ui]           # unknown table
theme = "dark"

# The echo plugin, natively
[[providers]]
name = "echo-native"   # inline comment
path = "bundled:echo.native"
note = 'kept: an unknown provider key'

# wasm build
# (two comment lines)
[[providers]]
name = "echo-wasm"
path = "bundled:echo.wasm"
[providers.config]
prefix = "wasm: "      # the reply prefix
max_tokens = 64
[providers.config.extra]   # unknown nested table
x = [1, 2, 3]

[[providers]]
name = "third"
path = "plugins/third.wasm"
config = { model = "m1", temperature = 0.5 }   # inline table

# registry settings
[oci]
insecure = false
"""

NATIVE = """\
# The echo plugin, natively
[[providers]]
name = "echo-native"   # inline comment
path = "bundled:echo.native"
note = 'kept: an unknown provider key'
"""
WASM = """\
# wasm build
# (two comment lines)
[[providers]]
name = "echo-wasm"
path = "bundled:echo.wasm"
[providers.config]
prefix = "wasm: "      # the reply prefix
max_tokens = 64
[providers.config.extra]   # unknown nested table
x = [1, 2, 3]
"""
THIRD = """\
[[providers]]
name = "third"
path = "plugins/third.wasm"
config = { model = "m1", temperature = 0.5 }   # inline table
"""

JSON = """\
{
    "$comment": "unknown top-level key, kept",
    "providers": [
        {
            "name": "echo-native",
            "path": "bundled:echo.native",
            "x-note": {"keep": [1, 2,3]}
        },
        {
            "name": "echo-wasm",
            "path": "bundled:echo.wasm",
            "config": {"prefix": "wasm: ", "max_tokens": 64}
        },
        {
            "name": "third",
            "path": "plugins/third.wasm",
            "config": {}
        }
    ],
    "oci": {"insecure": false}
}
"""

YAML = """\
# providers for the demo
providers:
- name: echo-native    # natively
  path: bundled:echo.native
  x-unknown: [1, 2]
# the wasm build
- name: echo-wasm
  path: bundled:echo.wasm
  config:
    prefix: 'wasm: '
    max_tokens: 64
    system:
    - be brief
oci:
  insecure: false  # kept
extra: {a: 1}
"""

ECHO_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string", "enum": ["echo-1", "echo-mini"], "default": "echo-1"},
        "system": {"type": "array", "items": {"type": "string"}},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1},
        "prefix": {"type": "string"},
        "dimensions": {"type": "integer", "default": 256},
    },
    "required": ["prefix", "dimensions"],  # one with a default: the plugin fills that in
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def edited(text: str, fmt: str, *edits: object) -> str:
    doc = ConfigDocument.from_text(text, fmt)
    for edit in edits:
        edit(doc)  # type: ignore[operator]
    return doc.text


# ---- no edit: identical ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text",
    [
        ("plugins.toml", TOML),
        ("plugins.toml", DEFAULT_CONFIG.read_text()),
        ("plugins.toml", TOML.replace("\n", "\r\n")),
        ("plugins.json", JSON),
        ("plugins.yaml", YAML),
    ],
    ids=["toml", "default", "crlf", "json", "yaml"],
)
def test_round_trip_without_edit_is_byte_identical(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    doc = ConfigDocument.load(path)
    assert doc.read_only_reason is None
    assert doc.text == text
    doc.save()
    assert path.read_bytes() == text.encode()
    assert (tmp_path / f"{name}.bak").read_bytes() == text.encode()


def test_records_read_every_field() -> None:
    doc = ConfigDocument.from_text(TOML, "toml")
    assert [r.name for r in doc.providers] == ["echo-native", "echo-wasm", "third"]
    wasm = doc.provider("echo-wasm")
    assert (wasm.index, wasm.path) == (1, "bundled:echo.wasm")
    assert wasm.config == {"prefix": "wasm: ", "max_tokens": 64, "extra": {"x": [1, 2, 3]}}
    assert doc.provider(0).entry["note"] == "kept: an unknown provider key"
    assert doc.get("third", "config.model") == "m1"
    assert doc.get("third", "config.missing") is None
    assert doc.oci == {"insecure": False}
    with pytest.raises(KeyError, match="known: echo-native, echo-wasm, third"):
        doc.provider("nope")


# ---- TOML ------------------------------------------------------------------------------------------------


def test_toml_value_change_keeps_its_comment_and_everything_else() -> None:
    out = edited(TOML, "toml", lambda d: d.set_field("echo-wasm", "config.prefix", "w> "))
    assert out == TOML.replace('prefix = "wasm: "      # the reply prefix', 'prefix = "w> "      # the reply prefix')


def test_toml_new_key_goes_above_the_sub_table_without_a_new_blank_line() -> None:
    out = edited(TOML, "toml", lambda d: d.set_field("echo-wasm", "config.temperature", 0.2))
    assert out == TOML.replace("max_tokens = 64\n", "max_tokens = 64\ntemperature = 0.2\n")


def test_toml_config_table_is_created_below_its_provider() -> None:
    out = edited(TOML, "toml", lambda d: d.set_field("echo-native", "config.model", "echo-mini"))
    assert out == TOML.replace(
        "note = 'kept: an unknown provider key'\n",
        "note = 'kept: an unknown provider key'\n[providers.config]\nmodel = \"echo-mini\"\n",
    )


def test_toml_inline_table_edits_stay_inline() -> None:
    out = edited(TOML, "toml", lambda d: d.set_field("third", "config.model", "m2"))
    assert out == TOML.replace('model = "m1"', 'model = "m2"')
    out = edited(TOML, "toml", lambda d: d.set_field("third", "config.temperature", None))
    assert out == TOML.replace('{ model = "m1", temperature = 0.5 }', '{ model = "m1"  }')  # tomlkit's spacing


def test_toml_unknown_nested_table_can_be_edited_too() -> None:
    out = edited(TOML, "toml", lambda d: d.set_field("echo-wasm", "config.extra.y", 2))
    assert out == TOML.replace("x = [1, 2, 3]\n", "x = [1, 2, 3]\ny = 2\n")


def test_toml_remove_key_and_rename() -> None:
    out = edited(TOML, "toml", lambda d: d.set_field("echo-wasm", "config.max_tokens", None), lambda d: d.rename(0, "native"))
    assert out == TOML.replace("max_tokens = 64\n", "").replace('name = "echo-native"', 'name = "native"')


def test_toml_move_carries_the_comments_above_a_provider() -> None:
    out = edited(TOML, "toml", lambda d: d.move("third", 0))
    assert out == TOML.replace(f"{NATIVE}\n{WASM}\n{THIRD}", f"{THIRD}\n{NATIVE}\n{WASM}")
    out = edited(TOML, "toml", lambda d: d.move("echo-native", 5))  # clamped: to the end
    assert out == TOML.replace(f"{NATIVE}\n{WASM}\n{THIRD}", f"{WASM}\n{THIRD}\n{NATIVE}")


def test_toml_remove_takes_its_comments_and_nothing_else() -> None:
    assert edited(TOML, "toml", lambda d: d.remove("echo-native")) == TOML.replace(f"{NATIVE}\n", "")
    assert edited(TOML, "toml", lambda d: d.remove("echo-wasm")) == TOML.replace(f"{WASM}\n", "")
    assert edited(TOML, "toml", lambda d: d.remove("third")) == TOML.replace(f"{THIRD}\n", "")


def test_toml_add_appends_after_the_last_provider() -> None:
    out = edited(TOML, "toml", lambda d: d.add("new", "bundled:echo.wasm", {"model": "echo-1"}))
    new = '[[providers]]\nname = "new"\npath = "bundled:echo.wasm"\n[providers.config]\nmodel = "echo-1"\n'
    assert out == TOML.replace(THIRD, f"{THIRD}\n{new}")
    out = edited(TOML, "toml", lambda d: d.add("first", "a.wasm", index=0))
    assert out == TOML.replace(NATIVE, f'[[providers]]\nname = "first"\npath = "a.wasm"\n\n{NATIVE}')


def test_toml_oci_table() -> None:
    out = edited(TOML, "toml", lambda d: d.set_oci("registry", "ghcr.io"), lambda d: d.set_oci("insecure", None))
    assert out == TOML.replace("insecure = false\n", 'registry = "ghcr.io"\n')
    bare = '[[providers]]\nname = "a"\npath = "a.wasm"\n'
    assert edited(bare, "toml", lambda d: d.set_oci("registry", "ghcr.io")) == bare + '\n[oci]\nregistry = "ghcr.io"\n'


def test_toml_many_edits_leave_unknown_parts_byte_for_byte() -> None:
    out = edited(
        TOML,
        "toml",
        lambda d: d.set_field("echo-native", "config.allowed_hosts", ["a.example"]),
        lambda d: d.move("echo-wasm", 2),
        lambda d: d.rename("third", "3rd"),
        lambda d: d.add("x", "x.so"),
        lambda d: d.set_oci("registry", "r"),
    )
    for untouched in (
        "# querymt-jupyter providers\nversion = 2   # unknown top-level key\n\n[ui]           # unknown table\ntheme = \"dark\"\n",
        "note = 'kept: an unknown provider key'\n",
        "[providers.config.extra]   # unknown nested table\nx = [1, 2, 3]\n",
        "# wasm build\n# (two comment lines)\n",
        "# registry settings\n[oci]\ninsecure = false\n",
    ):
        assert untouched in out
    readable = out.replace("note = 'kept: an unknown provider key'\n", "")  # the loader refuses it (keys.py)
    assert parse_config(readable, "toml").names() == ["echo-native", "3rd", "echo-wasm", "x"]
    with pytest.raises(ConfigError, match=r"entry has no key 'note'"):
        parse_config(out, "toml")


def test_default_config_edits() -> None:
    default = DEFAULT_CONFIG.read_text()
    out = edited(default, "toml", lambda d: d.set_field("openai", "config.model", "gpt-4o"))
    assert out == default.replace('model = "${OPENAI_MODEL:-gpt-4o-mini}"', 'model = "gpt-4o"')


def test_crlf_files_stay_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins.toml", TOML.replace("\n", "\r\n"))
    doc = ConfigDocument.load(path)
    doc.set_field("echo-wasm", "config.temperature", 0.2)
    doc.save()
    expected = TOML.replace("max_tokens = 64\n", "max_tokens = 64\ntemperature = 0.2\n").replace("\n", "\r\n")
    assert path.read_bytes() == expected.encode()


# ---- JSON ------------------------------------------------------------------------------------------------


def test_json_edits_copy_the_file_style() -> None:
    assert edited(JSON, "json", lambda d: d.set_field(1, "config.prefix", "w> ")) == JSON.replace('"wasm: "', '"w> "')
    out = edited(JSON, "json", lambda d: d.set_field(0, "config.model", "echo-mini"))
    assert out == JSON.replace(
        '"x-note": {"keep": [1, 2,3]}\n',
        '"x-note": {"keep": [1, 2,3]},\n            "config": {\n                "model": "echo-mini"\n            }\n',
    )
    out = edited(JSON, "json", lambda d: d.set_field(2, "config.model", "m"))
    assert out == JSON.replace('"config": {}', '"config": {\n                "model": "m"\n            }')
    out = edited(JSON, "json", lambda d: d.set_field(1, "config.system", ["a", "b"]))  # one-line object: one line
    assert out == JSON.replace('"max_tokens": 64}', '"max_tokens": 64, "system": ["a", "b"]}')
    out = edited(JSON, "json", lambda d: d.set_field(1, "config.prefix", None))
    assert out == JSON.replace('{"prefix": "wasm: ", "max_tokens": 64}', '{"max_tokens": 64}')


def test_json_providers_add_remove_move() -> None:
    first, second, third = (
        '{\n            "name": "echo-native",\n            "path": "bundled:echo.native",\n'
        '            "x-note": {"keep": [1, 2,3]}\n        }',
        '{\n            "name": "echo-wasm",\n            "path": "bundled:echo.wasm",\n'
        '            "config": {"prefix": "wasm: ", "max_tokens": 64}\n        }',
        '{\n            "name": "third",\n            "path": "plugins/third.wasm",\n            "config": {}\n        }',
    )
    sep = ",\n        "
    listing = sep.join([first, second, third])
    assert listing in JSON
    assert edited(JSON, "json", lambda d: d.move(2, 0)) == JSON.replace(listing, sep.join([third, first, second]))
    assert edited(JSON, "json", lambda d: d.remove(0)) == JSON.replace(listing, sep.join([second, third]))
    assert edited(JSON, "json", lambda d: d.remove(2)) == JSON.replace(listing, sep.join([first, second]))
    new = '{\n            "name": "n",\n            "path": "n.wasm"\n        }'
    assert edited(JSON, "json", lambda d: d.add("n", "n.wasm")) == JSON.replace(listing, sep.join([first, second, third, new]))


def test_json_one_line_and_tab_indented_files() -> None:
    one = '{"providers": [{"name": "a", "path": "a.wasm"}]}'
    out = edited(one, "json", lambda d: d.set_field(0, "config.system", ["x"]), lambda d: d.add("b", "b.so"))
    assert out == '{"providers": [{"name": "a", "path": "a.wasm", "config": {"system": ["x"]}}, {"name": "b", "path": "b.so"}]}'
    tabs = '{\n\t"providers": [\n\t\t{\n\t\t\t"name": "a",\n\t\t\t"path": "a.wasm"\n\t\t}\n\t]\n}\n'
    out = edited(tabs, "json", lambda d: d.set_field(0, "config.model", "m"))
    assert out == tabs.replace('"a.wasm"\n', '"a.wasm",\n\t\t\t"config": {\n\t\t\t\t"model": "m"\n\t\t\t}\n')


# ---- YAML ------------------------------------------------------------------------------------------------


def test_yaml_value_edits_keep_comments_and_quoting() -> None:
    out = edited(YAML, "yaml", lambda d: d.set_field(1, "config.prefix", "it's"), lambda d: d.set_field(1, "config.max_tokens", 5))
    assert out == YAML.replace("prefix: 'wasm: '", "prefix: 'it''s'").replace("max_tokens: 64", "max_tokens: 5")
    out = edited(YAML, "yaml", lambda d: d.rename(0, "native"), lambda d: d.set_oci("insecure", True))
    assert out == YAML.replace("name: echo-native    # natively", "name: native    # natively").replace(
        "insecure: false  # kept", "insecure: true  # kept"
    )


def test_yaml_new_keys_and_tables() -> None:
    out = edited(YAML, "yaml", lambda d: d.set_field(0, "config.model", "echo-mini"))
    assert out == YAML.replace("  x-unknown: [1, 2]\n", "  x-unknown: [1, 2]\n  config:\n    model: echo-mini\n")
    out = edited(YAML, "yaml", lambda d: d.set_field(1, "config.system", ["a", "b"]), lambda d: d.set_oci("registry", "r"))
    assert out == YAML.replace("    - be brief\n", "    - a\n    - b\n").replace(
        "  insecure: false  # kept\n", "  insecure: false  # kept\n  registry: r\n"
    )
    out = edited(YAML, "yaml", lambda d: d.set_field(1, "config.max_tokens", None))
    assert out == YAML.replace("    max_tokens: 64\n", "")
    out = edited(YAML, "yaml", lambda d: d.set_field(0, "config.model", "yes"))  # YAML 1.1 would read yes as true
    assert "model: 'yes'\n" in out


def test_yaml_providers_move_remove_add() -> None:
    native = "- name: echo-native    # natively\n  path: bundled:echo.native\n  x-unknown: [1, 2]\n"
    wasm = YAML[YAML.index("# the wasm build") : YAML.index("oci:")]
    assert edited(YAML, "yaml", lambda d: d.move(1, 0)) == YAML.replace(native + wasm, wasm + native)
    assert edited(YAML, "yaml", lambda d: d.remove(0)) == YAML.replace(native, "")
    assert edited(YAML, "yaml", lambda d: d.remove(1)) == YAML.replace(wasm, "")
    out = edited(YAML, "yaml", lambda d: d.add("n", "n.wasm", {"model": "m"}))
    assert out == YAML.replace(wasm, wasm + "- name: n\n  path: n.wasm\n  config:\n    model: m\n")
    out = edited("providers: []\n", "yaml", lambda d: d.add("a", "a.wasm"))
    assert out == "providers: [{name: a, path: a.wasm}]\n"


def test_yaml_with_anchors_is_refused_and_untouched() -> None:
    text = "defaults: &d {model: m}\nproviders:\n- name: a\n  path: a.wasm\n  config: *d\n"
    doc = ConfigDocument.from_text(text, "yaml")
    assert "anchors/aliases" in (doc.read_only_reason or "")
    with pytest.raises(ConfigEditError, match="anchors/aliases"):
        doc.set_field(0, "config.model", "x")
    assert doc.text == text


def test_yaml_block_scalar_is_refused_but_the_rest_is_editable() -> None:
    text = "providers:\n  - name: a\n    path: a.wasm\n    config:\n      prefix: |\n        hi\n"
    doc = ConfigDocument.from_text(text, "yaml")
    with pytest.raises(ConfigEditError, match=r"providers\.0\.config\.prefix.*block scalar"):
        doc.set_field(0, "config.prefix", "x")
    assert doc.text == text
    doc.set_field(0, "config.model", "m")
    assert doc.text == text + "      model: m\n"


# ---- the safety check ------------------------------------------------------------------------------------


def test_an_edit_that_would_change_anything_else_is_refused_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = ConfigDocument.from_text(TOML, "toml")
    real = configedit.toml_editor.TomlEditor.set

    def sloppy(self: object, text: str, path: tuple, value: object) -> str:
        return real(self, text, path, value).replace('theme = "dark"', 'theme = "light"')

    monkeypatch.setattr(configedit.toml_editor.TomlEditor, "set", sloppy)
    with pytest.raises(ConfigEditError, match="without changing other values"):
        doc.set_field("echo-wasm", "config.prefix", "w> ")
    assert doc.text == TOML
    assert doc.get("echo-wasm", "config.prefix") == "wasm: "


def test_setting_the_same_value_writes_nothing() -> None:
    doc = ConfigDocument.from_text(TOML, "toml")
    doc.set_field("echo-wasm", "config.max_tokens", 64)
    doc.set_field("echo-wasm", "config.absent", None)
    assert doc.text == TOML


# ---- validation ------------------------------------------------------------------------------------------


def test_validate_names_paths_and_hosts() -> None:
    doc = ConfigDocument.from_text(TOML, "toml")
    doc.rename("third", "echo-native")
    doc.set_field(0, "path", "plugin.txt")
    doc.set_field(1, "config.allowed_hosts", ["https://api.example.com/v1"])
    doc.add("", "x.wasm")
    errors = {(e.index, e.field): e.message for e in doc.validate()}
    assert errors[(2, "name")] == "'echo-native' is already the name of providers[0]"
    assert errors[(0, "path")].startswith("cannot tell the plugin type of 'plugin.txt'")
    assert "without scheme or path" in errors[(1, "config.allowed_hosts")]
    assert errors[(3, "name")] == "required: a non-empty name"
    assert errors[(0, "note")] == "unknown key; valid keys: name, path, config, allowed_paths"
    assert len(errors) == 5


@pytest.mark.parametrize(
    "hosts, problem",
    [
        (["api.example.com", "127.0.0.1", "::1", "localhost"], None),
        ("api.example.com", "must be a list of host names"),
        (["API.example.com"], "compared in lower case"),
        (["example.com:8080"], "no port"),
        (["exa mple.com"], "is not a host name"),
    ],
)
def test_allowed_hosts_rule(hosts: object, problem: str | None) -> None:
    message = configedit.check_hosts(hosts)
    assert (message is None) if problem is None else (problem in (message or ""))


def test_validate_against_the_plugin_schema() -> None:
    doc = ConfigDocument.from_text(TOML, "toml")
    doc.set_field("echo-wasm", "config.temperature", 3)
    doc.set_field("echo-wasm", "config.max_tokens", 0)
    doc.set_field("echo-wasm", "config.model", "echo-2")
    doc.set_field("echo-wasm", "config.system", ["a", 1])
    doc.set_field("echo-native", "config.max_tokens", "${MAX_TOKENS}")  # known only at load time
    doc.set_field("echo-native", "config.temperature", True)
    errors = doc.validate({"echo-wasm": ECHO_SCHEMA, "echo-native": ECHO_SCHEMA, "third": None})
    assert [(e.provider, e.field, e.message) for e in errors] == [
        ("echo-native", "note", "unknown key; valid keys: name, path, config, allowed_paths"),
        ("echo-native", "config.prefix", "required"),
        ("echo-native", "config.temperature", "must be number"),
        ("echo-wasm", "config.extra", "unknown key; valid keys: model, system, temperature, max_tokens, prefix, dimensions"),
        ("echo-wasm", "config.max_tokens", "must be at least 1"),
        ("echo-wasm", "config.temperature", "must be at most 2"),
        ("echo-wasm", "config.model", 'must be one of "echo-1", "echo-mini"'),
        ("echo-wasm", "config.system", "item 2: must be string"),
    ]
    assert str(errors[1]) == "echo-native: config.prefix: required"


def test_validate_names_the_key_a_typo_meant() -> None:
    doc = ConfigDocument.from_text('[[providers]]\nname = "e"\npth = "x.wasm"\n[providers.config]\ntemperatur = 0.5\n', "toml")
    errors = [(e.field, e.message) for e in doc.validate({"e": ECHO_SCHEMA})]
    assert ("pth", "unknown key (did you mean 'path'?); valid keys: name, path, config, allowed_paths") in errors
    assert ("config.temperatur", "unknown key (did you mean 'temperature'?); valid keys: model, system, temperature, "
            "max_tokens, prefix, dimensions") in errors  # fmt: skip
    assert doc.text.count("temperatur = 0.5") == 1  # reported, never dropped


def test_field_error_of_the_oci_table() -> None:
    doc = ConfigDocument.from_text('oci = "x"\nproviders = []\n', "toml")
    assert doc.validate() == [FieldError(None, None, "oci", "must be a table")]


# ---- secrets -------------------------------------------------------------------------------------------


def test_secret_names() -> None:
    assert all(is_secret(k) for k in ("api_key", "apikey", "token", "auth_token", "client_secret", "password"))
    assert not any(is_secret(k) for k in ("max_tokens", "api_key_name", "model", "base_url", "token_limit"))
    assert is_secret("credential", {"type": "string", "writeOnly": True})
    assert secret_env_var("local-llm", "api_key") == "LOCAL_LLM_API_KEY"
    assert secret_env_var("openai", "api_key", "${MY_KEY:-x}") == "MY_KEY"
    assert secret_env_var("9x", "token") == "_9X_TOKEN"


def test_a_secret_goes_to_the_environment_never_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECHO_WASM_API_KEY", raising=False)
    path = write(tmp_path, "plugins.toml", TOML)
    doc = ConfigDocument.load(path)
    assert doc.set_secret("echo-wasm", "api_key", "sk-very-secret") == "ECHO_WASM_API_KEY"
    assert "ECHO_WASM_API_KEY" not in os.environ  # only a save exports it
    doc.save()
    monkeypatch.setenv("ECHO_WASM_API_KEY", os.environ["ECHO_WASM_API_KEY"])  # restored after the test
    data = path.read_bytes()
    assert b"sk-very-secret" not in data
    assert data == TOML.replace("max_tokens = 64\n", 'max_tokens = 64\napi_key = "${ECHO_WASM_API_KEY}"\n').encode()
    assert os.environ["ECHO_WASM_API_KEY"] == "sk-very-secret"


def test_a_reference_typed_as_a_secret_is_written_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_KEY", raising=False)
    path = write(tmp_path, "plugins.toml", TOML)
    doc = ConfigDocument.load(path)
    assert doc.set_secret("echo-wasm", "api_key", "${MY_KEY}") == "MY_KEY"
    assert doc.set_oci_secret("password", "hunter2-registry") == "OCI_PASSWORD"
    doc.save()
    assert "MY_KEY" not in os.environ  # nothing to export: the file names the variable
    monkeypatch.setenv("OCI_PASSWORD", os.environ["OCI_PASSWORD"])  # restored after the test
    assert path.read_text() == TOML.replace("max_tokens = 64\n", 'max_tokens = 64\napi_key = "${MY_KEY}"\n').replace(
        "insecure = false\n", 'insecure = false\npassword = "${OCI_PASSWORD}"\n'
    )


def test_a_secret_typed_into_another_field_blocks_the_save(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins.toml", TOML)
    doc = ConfigDocument.load(path)
    doc.set_secret("echo-wasm", "api_key", "sk-very-secret")
    doc.set_field("echo-wasm", "config.note", "sk-very-secret")
    with pytest.raises(ConfigEditError, match="a secret would be written"):
        doc.save()
    assert path.read_bytes() == TOML.encode()


# ---- saving ----------------------------------------------------------------------------------------------


def test_save_is_atomic_with_a_backup_and_keeps_the_mode(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins.toml", TOML)
    path.chmod(0o640)
    doc = ConfigDocument.load(path)
    doc.set_field("third", "config.model", "m2")
    assert doc.save() == path
    assert path.read_bytes() == TOML.replace('"m1"', '"m2"').encode()
    assert (tmp_path / "plugins.toml.bak").read_bytes() == TOML.encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugins.toml", "plugins.toml.bak"]  # no temp file left
    assert parse_config(doc.text.replace("note = ", "# note = "), "toml").providers[2].config == {"model": "m2", "temperature": 0.5}


def test_save_refuses_to_overwrite_changes_made_on_disk(tmp_path: Path) -> None:
    path = write(tmp_path, "plugins.toml", TOML)
    doc = ConfigDocument.load(path)
    doc.set_field("third", "config.model", "m2")
    path.write_text(TOML + "\n# edited elsewhere\n")
    with pytest.raises(ConfigEditError, match="changed on disk"):
        doc.save()
    assert path.read_text().endswith("# edited elsewhere\n")
    doc.save(force=True)
    assert path.read_bytes() == TOML.replace('"m1"', '"m2"').encode()


def test_create_starts_from_the_default_and_writes_on_save(tmp_path: Path) -> None:
    path = tmp_path / "plugins.toml"
    doc = ConfigDocument.create(path)
    assert not path.exists()
    doc.set_field("echo-wasm", "config.prefix", "> ")
    doc.save()
    default = DEFAULT_CONFIG.read_text()
    assert path.read_text() == default.replace(
        'path = "bundled:echo.wasm"\n', 'path = "bundled:echo.wasm"\n[providers.config]\nprefix = "> "\n'
    )
    assert not (tmp_path / "plugins.toml.bak").exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~configedit.document._umask()
    with pytest.raises(Exception, match="not JSON"):
        ConfigDocument.create(tmp_path / "plugins.json")


def test_source_labels() -> None:
    assert source_label("bundled:echo.native") == ("bundled native", None)
    assert source_label("https://example.com/p.wasm") == ("url wasm", None)
    assert source_label("oci://ghcr.io/x/y:1") == ("oci", None)
    assert source_label("plugins/x.wasm") == ("wasm", None)
    assert source_label("x.txt")[1].startswith("cannot tell the plugin type")  # type: ignore[union-attr]
    assert source_label("  ")[1].startswith("required")  # type: ignore[union-attr]
