"""The prompt log: one row per provider call through the call hooks, written off the caller's thread."""

from __future__ import annotations

import pytest

from querymt_jupyter import PluginRegistry, ProviderError
from querymt_jupyter.promptlog import PromptLog
from querymt_jupyter.provider import call_context, on_call


@pytest.fixture
def log(tmp_path):
    log = PromptLog(tmp_path / "log.sqlite")
    unhook = on_call(log.record)
    yield log
    unhook()
    log.close()


def test_each_call_is_a_row_with_its_context(log):
    with PluginRegistry.default() as registry:
        provider = registry.builder("echo-native").parameter("prefix", "> ").build()
        provider.chat("one")
        with call_context(source="magic", execution_count=7, conversation="c"):
            "".join(c.text for c in provider.chat_stream("two words"))
        provider.embed(["a", "b"])
    frame = log.frame()
    assert list(frame.operation) == ["chat", "chat_stream", "embed"]
    assert list(frame.response) == ["> one", "> two words", "2 vectors of 256"]
    assert list(frame.source) == ["api", "magic", "api"]
    assert frame.execution_count.iloc[1] == 7 and frame.conversation.iloc[1] == "c"
    assert frame.model.iloc[0] == "echo-1" and frame.plugin_type.iloc[0] == "native"
    assert (frame.latency_ms > 0).all() and frame.output_tokens.iloc[0] == 2


def test_failures_are_rows_too_and_keys_are_never_stored(log, tmp_path):
    from querymt_jupyter.loopback import Failure, LoopbackOpenAI

    with LoopbackOpenAI(failures=[Failure(404)]) as server:
        config = tmp_path / "plugins.toml"
        config.write_text(
            f'[[providers]]\nname = "ai"\npath = "bundled:openai.wasm"\n[providers.config]\n'
            f'base_url = "{server.base_url}"\nmodel = "m"\napi_key = "sk-do-not-log"\n'
        )
        with PluginRegistry.from_path(config) as registry:
            with pytest.raises(ProviderError):
                registry.builder("ai").build().chat("hi")
    log.flush()
    row = log.frame().iloc[-1]
    assert row.error.startswith("ProviderError") and row.response is None
    assert "sk-do-not-log" not in (tmp_path / "log.sqlite").read_bytes().decode("utf-8", "replace")


def test_off_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("QUERYMT_JUPYTER_LOG", "off")
    log = PromptLog.default()
    assert not log.enabled and log.frame().empty
