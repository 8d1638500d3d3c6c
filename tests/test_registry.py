"""The registry end to end on the bundled echo plugin: both builds, one code path (real extism, real .so)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from querymt_jupyter import (
    ConfigError,
    JsonError,
    PluginLoadError,
    PluginRegistry,
    ProviderNotFoundError,
    StreamChunk,
    UnknownKeyError,
)

ECHOES = ["echo-native", "echo-wasm"]


@pytest.fixture(scope="module")
def registry():
    with PluginRegistry.default() as registry:
        report = registry.load_all()
        assert report.ok, str(report)
        yield registry


@pytest.fixture(params=ECHOES)
def echo(request, registry):
    return registry.builder(request.param).model("echo-1").build()


def test_default_registry_loads_both_builds_and_openai(registry):
    types = {f.name: (f.plugin_type, f.generation) for f in registry.list()}
    assert types == {
        "echo-native": ("native", "B"),
        "echo-wasm": ("wasm", "B"),
        "tinyllm": ("native", "B"),  # bundled:tinyllm picks the native build on this platform
        "tinyllm-native": ("native", "B"),
        "tinyllm-wasm": ("wasm", "B"),
        "openai": ("wasm", "A"),
    }
    assert registry.get("nope") is None
    with pytest.raises(ProviderNotFoundError, match="echo-native, echo-wasm, tinyllm, tinyllm-native, tinyllm-wasm, openai"):
        registry.builder("nope")


def test_config_schema_comes_from_the_plugin(registry):
    for name in ECHOES:
        schema = registry.get(name).config_schema()
        assert schema["properties"]["dimensions"]["default"] == 256
    assert registry.get("echo-native").config_schema() == registry.get("echo-wasm").config_schema()


def test_chat_echoes_the_last_user_message(echo):
    answer = echo.chat([{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "hello there"}])
    assert answer.text == "echo: hello there"
    assert answer.finish_reason == "Stop"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (4, 3)


def test_stream_gives_the_chat_text_in_order(echo):
    chunks = list(echo.chat_stream("one two  three"))
    assert all(isinstance(c, StreamChunk) for c in chunks)
    assert "".join(c.text for c in chunks) == echo.chat("one two  three").text
    assert [c.kind for c in chunks][-2:] == ["usage", "done"]
    assert chunks[-1].value == {"finish_reason": "Stop"}


def test_builder_options_reach_the_plugin(registry):
    for name in ECHOES:
        provider = registry.builder(name).max_tokens(2).parameter("prefix", "> ").build()
        answer = provider.chat("a b c d")
        assert (answer.text, answer.finish_reason) == ("> a b", "Length")


def test_host_keys_and_named_options_the_plugin_lacks_are_pruned_not_sent(registry):
    provider = registry.builder("echo-wasm").parameter("allowed_hosts", ["x"]).top_k(5).top_p(0.5).build()
    assert not {"allowed_hosts", "top_k", "top_p"} & set(provider.cfg)
    assert provider.chat("ok").text == "echo: ok"


def test_a_parameter_the_schema_lacks_is_named_with_the_closest_key(registry):
    with pytest.raises(UnknownKeyError) as info:
        registry.builder("echo-wasm").parameter("temperatur", 0.5)
    assert str(info.value).startswith("echo-wasm has no key 'temperatur'; did you mean 'temperature'?")
    assert "valid keys: model, system, temperature, max_tokens, prefix, dimensions, stream" in str(info.value)
    assert (info.value.key, isinstance(info.value, ValueError)) == ("temperatur", True)
    with pytest.raises(UnknownKeyError, match=r"^echo-wasm has no key 'nosuch'\n"):  # nothing close: no guess
        registry.builder("echo-wasm").parameter("nosuch", 1)


def test_a_bad_config_value_is_the_plugins_json_error(registry):
    with pytest.raises(JsonError, match="dimensions"):
        registry.builder("echo-native").parameter("dimensions", "big").build()


def test_system_messages_travel_in_cfg_system(registry):
    provider = registry.builder("echo-wasm").build()
    # echo ignores the system prompt but the request must be accepted with it in cfg
    assert provider.chat([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]).text == "echo: hi"


def test_complete_embed_and_models(echo):
    assert echo.complete("Once upon", max_tokens=5).text == " Once upon Once upon Once"
    vectors = echo.embed(["the cat sat", "the cat sat", "a different text"])
    assert len(vectors) == 3 and all(len(v) == 256 for v in vectors)
    assert vectors[0] == vectors[1] != vectors[2]
    assert math.isclose(math.fsum(x * x for x in vectors[0]), 1.0, rel_tol=1e-5)
    assert echo.list_models() == ["echo-1", "echo-mini"]


def test_both_builds_answer_byte_for_byte_the_same(registry):
    native, wasm = (registry.builder(n).build() for n in ECHOES)
    prompt = [{"role": "user", "content": "héllo wörld ✓ \"quoted\" \\ tab\t"}]
    assert native.chat(prompt).raw == wasm.chat(prompt).raw
    assert native.embed(["ünïcode", "x" * 5000]) == wasm.embed(["ünïcode", "x" * 5000])
    assert native.complete("a b", max_tokens=7).text == wasm.complete("a b", max_tokens=7).text


def test_one_broken_plugin_does_not_stop_the_others(tmp_path):
    (tmp_path / "junk.wasm").write_bytes(b"not wasm at all")
    (tmp_path / "junk.so").write_bytes(b"\x7fELF garbage")
    config = tmp_path / "plugins.toml"
    config.write_text(
        '[[providers]]\nname = "echo"\npath = "bundled:echo.wasm"\n'
        '[[providers]]\nname = "missing"\npath = "nowhere.wasm"\n'
        '[[providers]]\nname = "junk-wasm"\npath = "junk.wasm"\n'
        '[[providers]]\nname = "junk-native"\npath = "junk.so"\n'
    )
    with PluginRegistry.from_path(config) as registry:
        report = registry.load_all()
        assert report.loaded == ["echo"]
        assert set(report.failed) == {"missing", "junk-wasm", "junk-native"}
        assert all(isinstance(e, PluginLoadError) for e in report.failed.values())
        assert "not found" in str(report.failed["missing"])
        assert "junk-wasm" in str(report.failed["junk-wasm"])
        assert registry.builder("echo").build().chat("still here").text == "echo: still here"


def test_a_native_load_error_names_the_users_file_every_time(tmp_path):
    """Loads after the first dlopen a private copy: its error must still name the configured file."""
    (tmp_path / "garbage.so").write_bytes(b"\x7fELF garbage")
    config = tmp_path / "plugins.toml"
    config.write_text('[[providers]]\nname = "junk"\npath = "garbage.so"\n')
    messages = []
    for _ in range(3):  # load_all, then get() and the magic's path: a fresh registry each time
        with PluginRegistry.from_path(config) as registry:
            with pytest.raises(PluginLoadError) as failure:
                registry.get("junk")
            messages.append(str(failure.value))
    for message in messages:
        assert ".qmt-copy" not in message and "qmt-native-" not in message, message
        assert message.count(str(tmp_path / "garbage.so")) >= 1, message


def test_reloading_a_native_plugin_starts_from_fresh_state():
    # openai's stream parser ids count per loaded instance; a reload must not inherit them.
    def parser_ids() -> list[int]:
        config = Path(__file__).parent / "fixtures" / "openai-native.toml"
        with PluginRegistry.from_path(config) as registry:
            factory = registry["openai"]
            return [int(factory.call("chat_stream_parser_start", b'{"model":"m"}')) for _ in range(2)]

    assert parser_ids() == parser_ids() == [1, 2]


def test_notebook_views_show_status_and_never_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-secret-in-env")
    config = tmp_path / "plugins.toml"
    config.write_text(
        '[[providers]]\nname = "echo"\npath = "bundled:echo.wasm"\n'
        '[[providers]]\nname = "gone"\npath = "gone.wasm"\n'
        '[[providers]]\nname = "ai"\npath = "bundled:openai.native"\n[providers.config]\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key = "${MY_KEY}"\nmodel = "m"\n'
    )
    with PluginRegistry.from_path(config) as registry:
        assert "not loaded yet" in registry._repr_html_()
        registry.load_all()
        view = registry._repr_html_()
        assert "loaded" in view and "error: plugin &#x27;gone&#x27;" in view and "127.0.0.1" in view
        assert "dimensions" in registry["echo"]._repr_html_()
        provider = registry.builder("ai").build()
        assert provider.cfg["api_key"] == "sk-secret-in-env"
        assert "sk-secret" not in provider._repr_html_() + repr(provider) and ">m<" in provider._repr_html_()
        assert registry.builder("echo").build().model == "echo-1"  # the schema's default


def test_a_config_key_the_schema_lacks_names_file_line_and_the_closest_key(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text(
        '[[providers]]\nname = "echo"\npath = "bundled:echo.wasm"\n[providers.config]\n'
        'prefix = "> "\ntemperatur = 0.5   # typo\nallowed_hosts = ["127.0.0.1"]   # read by the host\n'
    )
    with PluginRegistry.from_path(config) as registry:
        assert registry.load_all().ok  # the plugin loads: the schema needed for the check comes from it
        for attempt in (lambda: registry.builder("echo").build(), lambda: registry["echo"].list_models()):
            with pytest.raises(ConfigError) as info:
                attempt()
            assert (info.value.path, info.value.line) == (str(config), 6)
            assert str(info.value).startswith(
                f"{config}:6 [providers[0] (echo).config.temperatur]: the config of 'echo' has no key 'temperatur'; "
                "did you mean 'temperature'?\n  hint: valid keys: model, system, temperature,"
            )


def test_an_unknown_entry_key_is_refused_when_the_file_is_read(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text('[[providers]]\nname = "echo"\npth = "bundled:echo.wasm"\n')
    with pytest.raises(ConfigError) as info:
        PluginRegistry.from_path(config)
    assert str(info.value).startswith(f"{config}:3 [providers[0] (echo).pth]: a [[providers]] entry has no key 'pth'")
    assert "did you mean 'path'?" in str(info.value) and "valid keys: name, path, config, allowed_paths" in str(info.value)
