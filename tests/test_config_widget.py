"""The config widget, driven like a user would: set values, click buttons, then read the file on disk."""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as w
import pytest

from querymt_jupyter.registry import PluginRegistry
from querymt_jupyter.session import Session
from querymt_jupyter.widgets import ConfigWidget
from querymt_jupyter.widgets.fields import FieldSpec, field_specs, format_value, parse_input

CONFIG = """\
# my providers (kept)
[[providers]]
name = "echo-native"
path = "bundled:echo.native"   # the native build

# the sandboxed one
[[providers]]
name = "echo-wasm"
path = "bundled:echo.wasm"
[providers.config]
prefix = "wasm: "   # shown before replies
max_tokens = 50
dimensions = 64   # untouched by the edits below
"""


@pytest.fixture(autouse=True)
def _no_prompt_log(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYMT_JUPYTER_LOG", "off")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def session(config: Path) -> Iterator[Session]:
    session = Session(PluginRegistry.from_path(config))
    yield session
    session.registry.close()


def plain(widget: w.HTML) -> str:
    """What an HTML widget shows, as plain text."""
    return html.unescape(re.sub(r"<[^>]+>", "", widget.value))


def widget_for(session: Session) -> ConfigWidget:
    return ConfigWidget(session=session)  # the session registry's own file


def messages(widget: ConfigWidget) -> list[dict[str, str]]:
    """The validation messages on screen, per form, by field."""
    return [{k: v for k, v in form.errors_shown().items() if v} for form in widget.forms]


# ---- the form --------------------------------------------------------------------------------------------


def test_the_form_is_generated_from_the_plugin_schema(session: Session, config: Path) -> None:
    widget = widget_for(session)
    assert widget.doc.path == config
    assert [f.title for f in widget.forms] == ["echo-native — bundled native", "echo-wasm — bundled wasm"]
    assert widget.accordion.titles == ("echo-native — bundled native", "echo-wasm — bundled wasm")
    form = widget.forms[1]
    schema = session.registry["echo-wasm"].config_schema()
    assert list(form.rows) == [k for k in schema["properties"] if k != "stream"] + ["allowed_hosts"]
    kinds = {key: row.spec.kind for key, row in form.rows.items()}
    assert kinds == {
        "model": "enum", "system": "strings", "temperature": "number", "max_tokens": "integer",
        "prefix": "string", "dimensions": "integer", "allowed_hosts": "hosts",
    }
    model = form.rows["model"].input
    assert isinstance(model, w.Dropdown)
    assert [label for label, _ in model.options] == ["(not set) — default echo-1", "echo-1", "echo-mini"]
    assert isinstance(form.rows["system"].input, w.Textarea)
    assert form.rows["prefix"].input.value == "wasm: "
    assert form.rows["max_tokens"].input.value == "50"
    assert form.rows["dimensions"].input.placeholder == "default: 256"
    assert "Length of the embedding vectors." in form.rows["dimensions"].children[1].value  # the help text
    assert form.raw.initial == {}  # every key has a field
    assert "loaded · wasm · generation B" in plain(form.status)
    assert form.kind.value == "<code>bundled wasm</code>"
    form.path.value = "plugins/x.so"
    assert form.kind.value == "<code>native</code>"


def test_field_text_round_trips() -> None:
    spec = FieldSpec("n", "number")
    assert (parse_input(spec, "2"), parse_input(spec, "0.5"), parse_input(spec, " ")) == (2, 0.5, None)
    assert parse_input(FieldSpec("k", "integer"), "${LIMIT}") == "${LIMIT}"
    with pytest.raises(ValueError, match="whole number"):
        parse_input(FieldSpec("k", "integer"), "1.5")
    lines = FieldSpec("s", "strings")
    assert parse_input(lines, format_value(lines, ["a, b", "c"])) == ["a, b", "c"]
    hosts = FieldSpec("allowed_hosts", "hosts")
    assert parse_input(hosts, format_value(hosts, ["a.com", "b.org"])) == ["a.com", "b.org"]
    anything = FieldSpec("j", "json")
    assert parse_input(anything, format_value(anything, {"type": "function"})) == {"type": "function"}
    specs = field_specs({"properties": {"effort": {"type": ["string", "null"], "enum": ["low", None]},
                                        "choice": {"anyOf": [{"type": "string"}, {"type": "object"}]},
                                        "api_key": {"type": ["string", "null"]}}, "required": ["api_key"]})
    assert [(s.key, s.kind, s.options, s.required) for s in specs] == [
        ("effort", "enum", ("low",), False), ("choice", "json", (), False), ("api_key", "secret", (), True)
    ]


# ---- saving ----------------------------------------------------------------------------------------------


def test_save_writes_only_the_edited_fields_then_reloads(session: Session, config: Path) -> None:
    old_registry = session.registry
    widget = widget_for(session)
    form = widget.forms[1]
    form.rows["prefix"].input.value = ">> "
    form.rows["temperature"].input.value = "0.5"
    form.rows["model"].input.value = 2  # echo-mini
    form.rows["max_tokens"].input.value = ""  # cleared: the key goes
    widget.save_button.click()

    assert config.read_text() == CONFIG.replace(
        'prefix = "wasm: "   # shown before replies\nmax_tokens = 50\ndimensions = 64   # untouched by the edits below\n',
        'prefix = ">> "   # shown before replies\ndimensions = 64   # untouched by the edits below\nmodel = "echo-mini"\ntemperature = 0.5\n',
    )
    assert (config.parent / "plugins.toml.bak").read_text() == CONFIG
    assert session.registry is not old_registry and session.registry.config.path == config
    assert widget.load_status == {"echo-native": "loaded", "echo-wasm": "loaded"}
    assert "✓ echo-wasm: loaded" in plain(widget.status) and "plugins.toml.bak" in plain(widget.status)
    reply = session.provider("echo-wasm").chat("hi").text
    assert reply == ">> hi"  # the new registry runs on the new file
    assert "loaded · wasm" in plain(widget.forms[1].status)
    assert widget.forms[1].rows["model"].input.value == 2  # the form was rebuilt from the file


def test_a_misspelled_key_blocks_saving_until_it_is_fixed(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    text = '[[providers]]\nname = "echo"\npath = "bundled:echo.wasm"\n[providers.config]\ntemperatur = 0.5  # typo\n'
    config.write_text(text)
    session = Session(PluginRegistry.from_path(config))
    widget = widget_for(session)
    form = widget.forms[0]
    assert form.raw.initial == {"temperatur": "0.5"}  # shown, never dropped
    form.rows["prefix"].input.value = ">> "
    assert widget.save() is False
    assert "did you mean 'temperature'?" in messages(widget)[0]["raw"]
    assert config.read_text() == text
    form.raw.remove_key("temperatur")
    form.rows["temperature"].input.value = "0.5"
    assert widget.save() is True
    assert config.read_text() == '[[providers]]\nname = "echo"\npath = "bundled:echo.wasm"\n[providers.config]\nprefix = ">> "\ntemperature = 0.5\n'
    assert session.provider("echo").chat("hi").text == ">> hi"
    session.registry.close()


def test_validation_messages_stand_next_to_their_fields(session: Session, config: Path) -> None:
    widget = widget_for(session)
    native, wasm = widget.forms
    wasm.rows["temperature"].input.value = "5"
    wasm.rows["max_tokens"].input.value = "many"
    wasm.rows["allowed_hosts"].input.value = "https://api.example.com/v1"
    native.name.value = "echo-wasm"
    native.path.value = "plugins/echo.txt"
    assert widget.save() is False
    first, second = messages(widget)
    assert list(first) == ["path"] and first["path"].startswith("cannot tell the plugin type of 'plugins/echo.txt'")
    assert second == {
        "name": "'echo-wasm' is already the name of providers[0]",
        "config.temperature": "must be at most 2",
        "config.max_tokens": "must be a whole number",
        "config.allowed_hosts": "'https://api.example.com/v1': a host name only, without scheme or path (e.g. api.example.com)",
    }
    assert "not saved: 5 problems" in plain(widget.status)
    assert config.read_text() == CONFIG and not (config.parent / "plugins.toml.bak").exists()

    native.name.value, native.path.value = "echo-native", "bundled:echo.native"
    wasm.rows["temperature"].input.value = "1.5"
    wasm.rows["max_tokens"].input.value = "50"
    wasm.rows["allowed_hosts"].input.value = "api.example.com, 127.0.0.1"
    assert widget.save() is True
    assert all(not v for form in widget.forms for v in form.errors_shown().values())
    assert config.read_text() == CONFIG.replace(
        "dimensions = 64   # untouched by the edits below\n",
        'dimensions = 64   # untouched by the edits below\ntemperature = 1.5\nallowed_hosts = ["api.example.com", "127.0.0.1"]\n',
    )


def test_secret_fields_write_an_env_reference_and_set_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_LLM_API_KEY", raising=False)
    config = tmp_path / "plugins.toml"
    text = '[[providers]]\nname = "local-llm"\npath = "bundled:openai.wasm"\n[providers.config]\nbase_url = "http://127.0.0.1:9/v1"\n'
    config.write_text(text)
    session = Session(PluginRegistry.from_path(config))
    widget = widget_for(session)
    row = widget.forms[0].rows["api_key"]
    assert isinstance(row.input, w.Password)
    assert row.input.placeholder == "not set — stored as ${LOCAL_LLM_API_KEY}"
    row.input.value = "sk-typed-secret"
    assert widget.save()
    monkeypatch.setenv("LOCAL_LLM_API_KEY", os.environ["LOCAL_LLM_API_KEY"])  # undone after the test
    assert os.environ["LOCAL_LLM_API_KEY"] == "sk-typed-secret"
    on_disk = config.read_bytes()
    assert b"sk-typed-secret" not in on_disk and b"sk-typed-secret" not in (tmp_path / "plugins.toml.bak").read_bytes()
    assert on_disk.decode() == text + 'api_key = "${LOCAL_LLM_API_KEY}"\n'
    row = widget.forms[0].rows["api_key"]
    assert row.input.value == "" and row.input.placeholder == "from ${LOCAL_LLM_API_KEY} — type to replace"
    assert session.registry["local-llm"].resolve_config()["api_key"] == "sk-typed-secret"
    session.registry.close()


def test_add_move_rename_remove_providers(session: Session, config: Path) -> None:
    widget = widget_for(session)
    widget.new_name.value, widget.new_path.value = "echo-wasm", "bundled:echo.wasm"
    widget.add_button.click()
    assert "'echo-wasm' is taken" in plain(widget.add_error)
    widget.new_name.value, widget.new_path.value = "third", "plugins/x.txt"
    widget.add_button.click()
    assert "cannot tell the plugin type" in plain(widget.add_error)
    widget.new_path.value = "bundled:echo.wasm"
    widget.add_button.click()
    assert [f.name.value for f in widget.forms] == ["echo-native", "echo-wasm", "third"]
    assert widget.forms[2].rows["prefix"].input.value == ""  # its schema came from loading the plugin
    third = widget.forms[2]
    third.up_button.click()
    third.up_button.click()
    third.up_button.click()  # already first: nothing happens
    assert [f.name.value for f in widget.forms] == ["third", "echo-native", "echo-wasm"]
    assert widget.accordion.titles[0] == "third — bundled wasm"
    widget.forms[1].remove_button.click()
    widget.forms[1].name.value = "wasm"
    third.rows["prefix"].input.value = "3: "
    assert widget.save()
    assert config.read_text() == (
        "# my providers (kept)\n"
        '[[providers]]\nname = "third"\npath = "bundled:echo.wasm"\n[providers.config]\nprefix = "3: "\n'
        "\n# the sandboxed one\n"
        '[[providers]]\nname = "wasm"\npath = "bundled:echo.wasm"\n'
        '[providers.config]\nprefix = "wasm: "   # shown before replies\nmax_tokens = 50\n'
        "dimensions = 64   # untouched by the edits below\n"
    )
    assert widget.load_status == {"third": "loaded", "wasm": "loaded"}
    assert session.provider("third").chat("x").text == "3: x"


def test_a_plugin_that_does_not_load_gets_a_raw_editor(tmp_path: Path) -> None:
    config = tmp_path / "plugins.toml"
    text = '[[providers]]\nname = "broken"\npath = "missing.wasm"   # not built yet\n[providers.config]\nmodel = "m"\nlimit = 3\n'
    config.write_text(text)
    session = Session(PluginRegistry.from_path(config))
    widget = widget_for(session)
    form = widget.forms[0]
    assert form.info.schema is None and "missing.wasm" in (form.info.error or "")
    assert "schema unavailable" in plain(form.children[2])
    assert list(form.rows) == ["allowed_hosts"]
    assert form.raw.initial == {"model": "m", "limit": "3"}
    form.raw.rows["limit"][0].value = "4"
    form.raw.rows["model"][0].value = '"007"'  # quoted: stays a string
    form.raw.remove_key("model")
    form.raw.new_key.value, form.raw.new_value.value = "flag", "true"
    form.raw.add_button.click()
    assert widget.save()
    assert config.read_text() == text.replace('model = "m"\nlimit = 3\n', "limit = 4\nflag = true\n")
    assert widget.load_status["broken"].startswith("plugin 'broken'")
    assert "✗ broken:" in plain(widget.status)
    assert "error: plugin 'broken'" in plain(widget.forms[0].status)
    session.registry.close()


def test_a_secret_added_as_a_raw_key_goes_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BROKEN_TOKEN", raising=False)
    config = tmp_path / "plugins.toml"
    text = '[[providers]]\nname = "broken"\npath = "missing.wasm"\n'
    config.write_text(text)
    session = Session(PluginRegistry.from_path(config))
    widget = widget_for(session)
    raw = widget.forms[0].raw
    raw.new_key.value, raw.new_value.value = "token", "tok-123"
    raw.add_button.click()
    assert isinstance(raw.rows["token"][0], w.Password)
    assert widget.save()
    monkeypatch.setenv("BROKEN_TOKEN", os.environ["BROKEN_TOKEN"])  # restored after the test
    assert os.environ["BROKEN_TOKEN"] == "tok-123"
    assert config.read_text() == text + '[providers.config]\ntoken = "${BROKEN_TOKEN}"\n'
    session.registry.close()


def test_the_oci_table(session: Session, config: Path) -> None:
    widget = widget_for(session)
    widget.oci.new_key.value, widget.oci.new_value.value = "allow_native", "false"
    widget.oci.add_button.click()
    widget.oci.new_key.value, widget.oci.new_value.value = "insecure_registries", '["registry.local:5000"]'
    widget.oci.add_button.click()
    assert widget.save()
    table = '\n[oci]\nallow_native = false\ninsecure_registries = ["registry.local:5000"]\n'
    assert config.read_text() == CONFIG + table
    widget.oci.rows["allow_native"][0].value = "true"
    assert widget.save()
    assert config.read_text() == CONFIG + table.replace("false", "true")

    widget.oci.rows["allow_native"][0].value = "maybe"  # read as the text "maybe", not a bool
    widget.oci.new_key.value, widget.oci.new_value.value = "public_keys", "k.pem"
    widget.oci.add_button.click()
    assert widget.save() is False
    assert "unknown [oci] keys: public_keys" in plain(widget.oci.error)
    assert config.read_text() == CONFIG + table.replace("false", "true")


def test_an_edit_made_on_disk_meanwhile_is_not_overwritten(session: Session, config: Path) -> None:
    widget = widget_for(session)
    widget.forms[1].rows["prefix"].input.value = ">> "
    config.write_text(CONFIG + "# added by hand\n")
    assert widget.save() is False
    assert "changed on disk" in plain(widget.status)
    assert config.read_text().endswith("# added by hand\n")
    widget.revert_button.click()
    assert widget.forms[1].rows["prefix"].input.value == "wasm: "
    assert "reloaded from disk" in plain(widget.status)


def test_default_registry_edits_a_new_plugins_toml_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from querymt_jupyter.config import DEFAULT_CONFIG

    monkeypatch.chdir(tmp_path)
    session = Session.start(tmp_path)  # no plugins.toml here: the bundled default
    widget = ConfigWidget(session=session)
    target = tmp_path / "plugins.toml"
    assert widget.doc.path == target and not target.exists()
    assert "new file, from the bundled default" in plain(widget.header)
    assert [f.name.value for f in widget.forms] == [
        "echo-native", "echo-wasm", "tinyllm", "tinyllm-native", "tinyllm-wasm", "openai"
    ]
    widget.forms[0].rows["prefix"].input.value = "native: "
    assert widget.save()
    default = DEFAULT_CONFIG.read_text()
    assert target.read_text() == default.replace(
        'path = "bundled:echo.native"\n', 'path = "bundled:echo.native"\n[providers.config]\nprefix = "native: "\n'
    )
    assert session.registry.config.path == target
    names = ["echo-native", "echo-wasm", "tinyllm", "tinyllm-native", "tinyllm-wasm", "openai"]
    assert widget.load_status == dict.fromkeys(names, "loaded")  # ${QUERYMT_JUPYTER_MODELS} still expands
    session.registry.close()


def test_json_config(tmp_path: Path) -> None:
    config = tmp_path / "plugins.json"
    text = json.dumps({"providers": [{"name": "echo-wasm", "path": "bundled:echo.wasm", "allowed_paths": []}]}, indent=2) + "\n"
    config.write_text(text)
    session = Session(PluginRegistry.from_path(config))
    widget = widget_for(session)
    widget.forms[0].rows["system"].input.value = "be brief\nbe kind"
    assert widget.save()
    assert config.read_text() == text.replace(
        '"allowed_paths": []\n', '"allowed_paths": [],\n      "config": {\n        "system": [\n          "be brief",\n          "be kind"\n        ]\n      }\n'
    )
    session.registry.close()


def test_yaml_that_cannot_be_edited_safely_is_shown_read_only(tmp_path: Path) -> None:
    config = tmp_path / "plugins.yaml"
    text = "base: &cfg {prefix: 'y: '}\nproviders:\n- name: echo-wasm\n  path: bundled:echo.wasm\n  config: *cfg\n"
    config.write_text(text)
    session = Session(PluginRegistry.from_path(config))
    widget = widget_for(session)
    assert widget.save_button.disabled and widget.add_button.disabled and widget.forms[0].remove_button.disabled
    assert "read only" in plain(widget.notice) and "anchors/aliases" in plain(widget.notice)
    assert widget.forms[0].rows["prefix"].input.value == "y: "
    widget.forms[0].rows["prefix"].input.value = "z: "
    assert widget.save() is False  # even when called directly
    assert "anchors/aliases" in messages(widget)[0]["config.prefix"]
    assert config.read_text() == text
    session.registry.close()


# ---- in a real kernel ------------------------------------------------------------------------------------


def test_config_widget_in_a_real_kernel(config: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    cells = [
        "from querymt_jupyter.registry import PluginRegistry\n"
        "from querymt_jupyter.session import Session\n"
        "from querymt_jupyter.widgets import ConfigWidget\n"
        f"widget = ConfigWidget(path={str(config)!r}, session=Session(PluginRegistry.from_path({str(config)!r})))\n"
        "widget",
        'widget.forms[1].rows["prefix"].input.value = "kernel> "\n'
        "widget.save_button.click()\n"
        "print(sorted(widget.load_status.items()))",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(config.parent)}}).execute()
    shown = notebook.cells[0].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in shown
    printed = "".join(o.get("text", "") for o in notebook.cells[1].outputs)
    assert printed == "[('echo-native', 'loaded'), ('echo-wasm', 'loaded')]\n"
    assert config.read_text() == CONFIG.replace('prefix = "wasm: "', 'prefix = "kernel> "')
    assert (config.parent / "plugins.toml.bak").read_text() == CONFIG
