"""The chat widget on the bundled echo plugin, both builds: streaming, history, models, clear, errors."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as w
import pytest

from querymt_jupyter.promptlog import CallRecord
from querymt_jupyter.provider import on_call
from querymt_jupyter.registry import PluginRegistry
from querymt_jupyter.session import Session
from querymt_jupyter.widgets import ChatWidget

ECHOES = ["echo-wasm", "echo-native"]


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Session]:
    monkeypatch.setenv("QUERYMT_JUPYTER_LOG", str(tmp_path / "prompts.sqlite"))  # never the user's data folder
    session = Session(PluginRegistry.default())
    yield session
    session.log.close()
    session.registry.close()


@pytest.fixture
def calls() -> Iterator[list[CallRecord]]:
    records: list[CallRecord] = []
    unhook = on_call(records.append)
    yield records
    unhook()


def plain(widget: w.HTML) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", widget.value))


def updates(widget: w.HTML) -> list[str]:
    """Every value the widget takes from now on."""
    seen: list[str] = []
    widget.observe(lambda change: seen.append(change["new"]), "value")
    return seen


@pytest.mark.parametrize("name", ECHOES)
def test_send_streams_the_reply_and_records_the_turn(session: Session, calls: list[CallRecord], name: str) -> None:
    chat = ChatWidget(name, session=session)
    streamed = updates(chat.reply)
    chat.input.value = "one two three four"
    chat.send_button.click()

    assert chat.input.value == ""
    answer = "echo: one two three four"
    # the prompt first, then one update per streamed word, then emptied into the history
    partials = [html.unescape(re.sub(r"<[^>]+>", " ", value)) for value in streamed]
    assert len(streamed) >= 5 and streamed[-1] == ""
    assert any("echo: one two " in p and answer not in p for p in partials)  # a partial reply was on screen
    conversation = session.conversation(name)
    assert [(e.prompt, e.answer) for e in conversation.exchanges] == [("one two three four", answer)]
    assert conversation.exchanges[0].key.startswith("widget:")
    assert "one two three four" in plain(chat.history) and answer in plain(chat.history)
    assert [(c.source, c.conversation, c.operation, c.provider) for c in calls] == [("widget", name, "chat_stream", name)]
    assert calls[0].response == answer


@pytest.mark.parametrize("name", ECHOES)
def test_the_model_picker_lists_the_echo_models(session: Session, calls: list[CallRecord], name: str) -> None:
    chat = ChatWidget(name, session=session)
    assert [value for _, value in chat.model.options] == ["", "echo-1", "echo-mini"]
    assert chat.models_error.value == ""
    chat.model.value = "echo-mini"
    assert chat.send("hi") == "echo: hi"
    assert calls[-1].model == "echo-mini"


def test_history_is_sent_and_shared_with_chat_cells(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    conversation = session.conversation("notes")
    conversation.record("cell:3", "from a cell", "echo: from a cell")  # what %%querymt --chat notes left
    chat = ChatWidget("echo-wasm", session=session, conversation="notes")
    assert "from a cell" in plain(chat.history)
    provider = session.provider("echo-wasm")
    sent: list[list[dict]] = []
    real = provider.chat_stream
    monkeypatch.setattr(provider, "chat_stream", lambda messages, tools=None: (sent.append(messages), real(messages))[1])
    chat.send("first")
    chat.send("second")
    assert sent[1] == [
        {"role": "user", "content": "from a cell"},
        {"role": "assistant", "content": "echo: from a cell"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "echo: first"},
        {"role": "user", "content": "second"},
    ]
    assert [e.key for e in conversation.exchanges][0] == "cell:3" and len(conversation) == 3
    assert len({e.key for e in conversation.exchanges}) == 3  # each widget turn has its own key


def test_enter_sends(session: Session) -> None:
    chat = ChatWidget("echo-native", session=session)
    chat.input.value = "by enter"
    chat.input._handle_custom_msg({"event": "submit"}, [])  # what the Text view sends on Enter
    assert [e.answer for e in chat.conversation.exchanges] == ["echo: by enter"]
    chat.send("   ")  # blank: nothing sent
    assert len(chat.conversation) == 1


def test_clear_resets_the_conversation(session: Session) -> None:
    chat = ChatWidget("echo-wasm", session=session)
    chat.send("hello")
    assert len(session.conversation("echo-wasm")) == 1
    chat.clear_button.click()
    assert len(session.conversation("echo-wasm")) == 0
    assert "no messages yet" in plain(chat.history)


def test_without_streaming_the_reply_comes_whole(session: Session, calls: list[CallRecord]) -> None:
    session.stream = False
    chat = ChatWidget("echo-wasm", session=session)
    assert chat.send("whole") == "echo: whole"
    assert calls[-1].operation == "chat"


def test_the_prompt_log_records_widget_calls(session: Session) -> None:
    unhook = on_call(session.log.record)  # what %load_ext registers
    try:
        ChatWidget("echo-wasm", session=session, conversation="logged").send("log me")
    finally:
        unhook()
    row = session.log.frame().iloc[-1]
    assert (row.source, row.conversation, row.prompt, row.response) == ("widget", "logged", "log me", "echo: log me")


def test_errors_are_shown_in_the_widget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYMT_JUPYTER_LOG", "off")
    config = tmp_path / "plugins.toml"
    config.write_text('[[providers]]\nname = "broken"\npath = "missing.wasm"\n')
    session = Session(PluginRegistry.from_path(config))
    chat = ChatWidget("broken", session=session)
    assert "models unavailable: PluginLoadError" in plain(chat.models_error)
    assert chat.model.options == (("(default)", ""),)
    chat.input.value = "hello?"
    chat.send_button.click()  # must not raise into the void
    assert "PluginLoadError" in plain(chat.error) and "missing.wasm" in plain(chat.error)
    assert chat.input.value == "hello?"  # given back, to retry
    assert len(chat.conversation) == 0 and chat.reply.value == "" and not chat.send_button.disabled

    unknown = ChatWidget("nope", session=session)
    assert unknown.send("x") is None
    assert "no provider named 'nope'" in plain(unknown.error)
    session.registry.close()


def test_defaults_follow_the_session(session: Session) -> None:
    session.default_provider, session.default_model = "echo-native", "echo-mini"
    chat = ChatWidget(session=session)
    assert (chat.provider_name, chat.conversation_name) == ("echo-native", "echo-native")
    assert chat.model.value == "" and chat.model.options[0] == ("(default: echo-mini)", "")
    chat.send("which model?")
    assert list(session._providers) == [("echo-native", "echo-mini", ())]  # the session's provider, shared
