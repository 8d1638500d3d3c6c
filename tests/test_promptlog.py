"""The prompt log: one row per provider call through the call hooks, written off the caller's thread."""

from __future__ import annotations

import threading

import pytest

from querymt_jupyter import PluginRegistry, ProviderError
from querymt_jupyter.promptlog import CallRecord, PromptLog
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


def test_a_huge_prompt_keeps_a_prefix_its_length_and_hash(tmp_path):
    import hashlib

    path = tmp_path / "log.sqlite"
    log = PromptLog(path)
    unhook = on_call(log.record)
    huge = "é" + "x" * (16 * 1024 * 1024)
    try:
        with PluginRegistry.default() as registry:
            provider = registry.builder("echo-native").build()
            provider.complete(huge, max_tokens=1)
            provider.complete(huge, max_tokens=1)
        frame = log.frame()
    finally:
        unhook()
        log.close()
    assert path.stat().st_size < 1_000_000  # two 16 MiB prompts made a 67 MB file before
    row = frame.iloc[-1]
    assert row.prompt == huge[:65536] and row.prompt_chars == len(huge)
    assert row.prompt_sha256 == hashlib.sha256(huge.encode()).hexdigest()
    assert len(row.response) == 65536 < row.response_chars  # echo answers with the prompt: cut the same way


def test_only_the_newest_rows_are_kept_and_clear_empties_the_file(tmp_path):
    log = PromptLog(tmp_path / "log.sqlite", max_rows=3)
    unhook = on_call(log.record)
    try:
        with PluginRegistry.default() as registry:
            provider = registry.builder("echo-native").build()
            for i in range(5):
                provider.chat(f"call {i}")
        assert list(log.frame().prompt.str[-6:]) == ["call 2", "call 3", "call 4"]
        assert log.clear() == 3
        assert log.frame().empty
    finally:
        unhook()
        log.close()


def test_a_log_from_an_older_version_gains_the_columns_and_keeps_its_rows(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE prompts (id INTEGER PRIMARY KEY, time, source, provider, plugin_type, model, "
                   "operation, prompt, response, parameters, input_tokens, output_tokens, latency_ms, error, "
                   "execution_count, conversation)")
        db.execute("INSERT INTO prompts (provider, prompt) VALUES ('old', 'kept')")
    db.close()
    log = PromptLog(path)
    unhook = on_call(log.record)
    try:
        with PluginRegistry.default() as registry:
            registry.builder("echo-native").build().chat("new")
        frame = log.frame()
    finally:
        unhook()
        log.close()
    assert list(frame.provider) == ["old", "echo-native"] and frame.prompt.iloc[0] == "kept"
    assert frame.prompt_chars.iloc[1] == 3


def test_rows_are_made_on_the_writer_thread_not_the_callers(tmp_path):
    """Hashing and cutting a huge text must not delay the call that recorded it."""
    seen: list[str] = []

    class Traced:
        def __str__(self) -> str:  # json.dumps(default=str) turns it into text while the row is made
            seen.append(threading.current_thread().name)
            return "traced"

    log = PromptLog(tmp_path / "log.sqlite")
    log.record(CallRecord("p", "wasm", "m", "chat", "hi", "ok", {"value": Traced()}))
    assert seen in ([], ["querymt-prompt-log"])  # record() returned without making the row
    frame = log.frame()
    assert seen == ["querymt-prompt-log"] and frame.loc[0, "parameters"] == '{"value": "traced"}'
    log.close()
