"""The bundled openai plugin (generation A) end to end through ``PluginRegistry``, in both builds.

Where tests/test_openai_plugin.py drives the raw exports by hand, here everything goes through the
public door: a plugins.toml in tmp_path (``bundled:openai.wasm`` / ``bundled:openai.native``) pointing at
the loopback OpenAI server, ``registry.builder(...).build()``, then chat / chat_stream / complete /
embed / list_models. What the host must do is checked on both sides: what the caller gets back, and what
the server recorded (wire spec 3, 6.1, 9; checklist items noted per test). All traffic goes to
127.0.0.1; every client read has a 10 s timeout and every loop is bounded.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from querymt_jupyter import (
    AuthError,
    HostBlockedError,
    HttpStatusError,
    InvalidRequestError,
    LLMError,
    PluginRegistry,
    RateLimitedError,
    ResponseFormatError,
    TransportError,
    wire,
)
from querymt_jupyter.factory import PluginFactory
from querymt_jupyter.host import AllowList
from querymt_jupyter.loopback import Failure, LoopbackOpenAI, embedding_vector
from querymt_jupyter.provider import ProviderBuilder

KINDS = ("wasm", "native")
KEY = "sk-loopback-test-key-4242"
WRONG_KEY = "sk-wrong-5f3a9c1e7b2d4f60aa"  # long and unique: any leak of it is unmistakable
REPLY = "Bonjour from the loopback, in eight pieces."
USAGE = {"prompt_tokens": 11, "completion_tokens": 7}
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
MAX_CHUNKS = 200  # a bound on every stream loop below


# ---- config, registry and spies -----------------------------------------------------------------------


def toml_config(providers: dict[str, tuple[str, dict[str, Any]]]) -> str:
    """plugins.toml text; JSON string/list/number literals are valid TOML values."""
    lines = []
    for name, (path, config) in providers.items():
        lines += ["[[providers]]", f"name = {json.dumps(name)}", f"path = {json.dumps(path)}"]
        if config:
            lines.append("[providers.config]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def load(tmp_path: Path, kind: str) -> Iterator[Callable[..., PluginFactory]]:
    """``load(**config)``: the openai provider of a fresh registry, in this test's build."""
    registries: list[PluginRegistry] = []

    def make(**config: Any) -> PluginFactory:
        path = tmp_path / f"plugins-{len(registries)}.toml"
        path.write_text(toml_config({"openai": (f"bundled:openai.{kind}", config)}))
        registry = PluginRegistry.from_path(path)
        registry.client.timeout = httpx.Timeout(10.0)  # bounded: a hung read fails the test, not the suite
        registries.append(registry)
        factory = registry["openai"]
        assert (factory.plugin_type, factory.generation) == (kind, "A")
        return factory

    yield make
    for registry in registries:
        registry.close()


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(reply=REPLY, api_key=KEY, usage=USAGE) as s:
        yield s


@pytest.fixture(autouse=True)
def no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real OPENAI_API_KEY must neither leak into nor change these tests."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def spy(monkeypatch: pytest.MonkeyPatch, factory: PluginFactory) -> list[tuple[str, bytes]]:
    """Record (operation, input bytes) of every call into the plugin instance."""
    calls: list[tuple[str, bytes]] = []
    original = factory.instance.call

    def call(op: str, data: bytes) -> bytes:
        calls.append((op, bytes(data)))
        return original(op, data)

    monkeypatch.setattr(factory.instance, "call", call)
    return calls


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def f32(values: list[float]) -> list[float]:
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in values]


def bounded(stream: Iterator[Any]) -> list[Any]:
    chunks = list(itertools.islice(stream, MAX_CHUNKS))
    assert len(chunks) < MAX_CHUNKS, "the stream did not end"
    return chunks


# ---- chat --------------------------------------------------------------------------------------------------


def test_chat_text_usage_finish_and_the_request_sent(load, server: LoopbackOpenAI) -> None:
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
    provider = ProviderBuilder(factory).system("Builder system prompt.").build()
    answer = provider.chat(
        [
            {"role": "system", "content": "Message system prompt."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question"},
        ]
    )
    assert answer.text == REPLY
    assert answer.finish_reason == "Stop"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (11, 7)
    assert answer.tool_calls is None
    (recorded,) = server.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == f"Bearer {KEY}"
    assert recorded.json == {
        "model": "gpt-4o-mini",
        "messages": [  # cfg.system: the builder's prompt, then the system message's
            {"role": "system", "content": "Builder system prompt."},
            {"role": "system", "content": "Message system prompt."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question"},
        ],
        "stream": False,
    }
    # a plain string is one user message, and the builder's options reach the body
    tuned = ProviderBuilder(factory).temperature(0.5).max_tokens(32).build()
    assert tuned.chat("just this").text == REPLY
    body = server.requests[-1].json
    assert body["messages"] == [{"role": "user", "content": "just this"}]
    assert (body["temperature"], body["max_tokens"]) == (0.5, 32)


def test_tool_calls_round_trip(load) -> None:
    calls = [{"id": "call_weather_1", "name": "get_weather", "arguments": {"city": "Paris"}}]

    def last_role(request: dict) -> str:
        return request["messages"][-1]["role"]

    with LoopbackOpenAI(
        reply=lambda r: "18°C and sunny in Paris." if last_role(r) == "tool" else None,
        tool_calls=lambda r: calls if last_role(r) == "user" else None,
    ) as server:
        provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini")).build()
        question = [{"role": "user", "content": "Weather in Paris?"}]
        first = provider.chat(question, tools=[TOOL])
        assert first.text is None and first.finish_reason == "ToolCalls"
        assert first.tool_calls == [
            {"id": "call_weather_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
        ]  # fmt: skip
        assert isinstance(first.tool_calls[0]["function"]["arguments"], str)  # ToolCall arguments: JSON text
        assert server.requests[-1].json["tools"] == [TOOL]

        follow_up = [
            *question,
            {"role": "assistant", "content": None, "tool_calls": first.tool_calls},
            {"role": "tool", "tool_call_id": "call_weather_1", "content": "18°C, sunny"},
        ]
        second = provider.chat(follow_up, tools=[TOOL])
        assert (second.text, second.finish_reason) == ("18°C and sunny in Paris.", "Stop")
        sent = server.requests[-1].json["messages"]
    assert sent[0] == {"role": "user", "content": "Weather in Paris?"}
    assert sent[1]["role"] == "assistant" and not sent[1].get("content")
    assert sent[1]["tool_calls"] == first.tool_calls
    assert sent[2] == {"role": "tool", "tool_call_id": "call_weather_1", "content": "18°C, sunny"}
    assert len(sent) == 3


# ---- the API key (wire spec 3 step 2; checklist 21) -------------------------------------------------------------


def test_api_key_comes_from_the_variable_the_plugin_names(load, server, monkeypatch) -> None:
    factory = load(base_url=server.base_url, model="gpt-4o-mini")  # no api_key in the config
    assert factory.api_key_name() == "OPENAI_API_KEY"
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    provider = ProviderBuilder(factory).build()
    assert provider.chat("hi").text == REPLY
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert factory.list_models() == list(server.models)  # listing models reads the same variable
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_env_references_in_the_config_are_expanded(load, server, monkeypatch) -> None:
    monkeypatch.setenv("QMT_TEST_OPENAI_KEY", KEY)
    monkeypatch.delenv("QMT_TEST_MODEL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-win-over-the-configured-key")
    factory = load(base_url=server.base_url, model="${QMT_TEST_MODEL:-gpt-4o}", api_key="${QMT_TEST_OPENAI_KEY}")
    provider = ProviderBuilder(factory).build()
    assert provider.chat("hi").text == REPLY
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert server.requests[-1].json["model"] == "gpt-4o"  # the ${VAR:-default} fallback
    # references are expanded when a provider is built, so a changed variable takes effect...
    monkeypatch.setenv("QMT_TEST_MODEL", "gpt-4o-mini")
    assert ProviderBuilder(factory).build().chat("hi").text == REPLY
    assert server.requests[-1].json["model"] == "gpt-4o-mini"
    # ...and the builder's options overlay the expanded config
    with pytest.raises(AuthError):
        ProviderBuilder(factory).api_key(WRONG_KEY).build().chat("hi")
    assert server.requests[-1].headers["authorization"] == f"Bearer {WRONG_KEY}"


def test_base_url_from_the_environment_feeds_the_allow_list(load, server, monkeypatch) -> None:
    """Wire spec 9: the configured base_url's host joins allowed_hosts, also when written as ${VAR}."""
    monkeypatch.setenv("QMT_TEST_BASE_URL", server.base_url)
    factory = load(base_url="${QMT_TEST_BASE_URL}", model="gpt-4o-mini", api_key=KEY, allowed_hosts=["localhost"])
    assert factory.allowed_hosts == ["localhost", "127.0.0.1"]
    assert ProviderBuilder(factory).build().chat("hi").text == REPLY


def test_the_default_config_restricts_openai_to_its_base_url(monkeypatch) -> None:
    """The bundled default writes base_url as ${OPENAI_BASE_URL:-https://api.openai.com/v1/}."""
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with PluginRegistry.default() as registry:
        assert registry["openai"].allowed_hosts == ["api.openai.com"]
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with PluginRegistry.default() as registry:
        assert registry["openai"].allowed_hosts == ["127.0.0.1"]


def test_a_missing_key_is_an_auth_error(load, server) -> None:
    provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini")).build()
    with pytest.raises(AuthError) as failure:
        provider.chat("hi")
    assert "didn't provide an API key" in str(failure.value)
    # the variable itself and the field that overrides it, as `%%querymt` shows them
    assert failure.value.hint == "set the environment variable OPENAI_API_KEY, or api_key under [providers.config] of 'openai'"
    assert "authorization" not in server.requests[-1].headers


def _assert_secret_absent(error: BaseException, secret: str) -> None:
    assert secret not in str(error)
    assert secret not in repr(error)
    assert all(secret not in str(arg) for arg in error.args)
    if isinstance(error, LLMError):
        assert secret not in json.dumps(error.payload)


OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "chat": lambda p: p.chat("hi"),
    "chat_stream": lambda p: bounded(p.chat_stream("hi")),
    "complete": lambda p: p.complete("hi"),
    "embed": lambda p: p.embed(["hi"]),
    "list_models": lambda p: p.list_models(),
}


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("echoed", [False, True], ids=["masked-by-server", "echoed-by-server"])
def test_a_wrong_key_never_appears_in_the_error(load, server, operation: str, echoed: bool) -> None:
    provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini", api_key=WRONG_KEY)).build()
    if echoed:  # an upstream that quotes the key it was given, in full
        server.fail_next(401, message=f"Incorrect API key provided: {WRONG_KEY}. You passed {WRONG_KEY}.")
    with pytest.raises(AuthError) as failure:
        OPERATIONS[operation](provider)
    assert server.requests[-1].headers["authorization"] == f"Bearer {WRONG_KEY}"  # it was sent...
    _assert_secret_absent(failure.value, WRONG_KEY)  # ...but never shown
    assert "Incorrect API key provided" in str(failure.value)


@pytest.mark.parametrize("operation", ["chat", "complete", "embed"])
def test_a_response_quoting_the_key_is_redacted_in_the_payload(load, operation: str) -> None:
    """A 200 that is not JSON (a proxy's debug page echoing the request) becomes response_format_error,
    whose raw_response quotes the body: the key must be scrubbed from every payload string."""
    page = f"<html>debug: Authorization: Bearer {WRONG_KEY}</html>".encode()
    with LoopbackOpenAI(failures=[Failure(200, body=page)]) as server:
        provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini", api_key=WRONG_KEY)).build()
        with pytest.raises(ResponseFormatError) as failure:
            OPERATIONS[operation](provider)
    assert failure.value.payload["raw_response"] == "<html>debug: Authorization: Bearer ***</html>"
    _assert_secret_absent(failure.value, WRONG_KEY)


def test_keys_of_every_provider_of_a_factory_stay_redacted(load, server, monkeypatch) -> None:
    """Building another provider or listing models must not forget a key given to an earlier one."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    factory = load(base_url=server.base_url, model="gpt-4o-mini")
    first = ProviderBuilder(factory).api_key(WRONG_KEY).build()
    second = ProviderBuilder(factory).api_key(WRONG_KEY[::-1]).build()
    assert factory.list_models() == list(server.models)  # resolves the config again, with the env key
    for provider, key in ((first, WRONG_KEY), (second, WRONG_KEY[::-1])):
        server.fail_next(401, message=f"Incorrect API key provided: {key}")
        with pytest.raises(AuthError) as failure:
            provider.chat("hi")
        _assert_secret_absent(failure.value, key)


# ---- streaming (checklist 18) ----------------------------------------------------------------------------------


def test_stream_chunks_in_order_then_usage_then_one_done(load, server) -> None:
    provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)).build()
    chunks = bounded(provider.chat_stream([{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}]))
    kinds = [c.kind for c in chunks]
    assert kinds == ["text"] * 8 + ["usage", "done"]
    assert "".join(c.text for c in chunks) == REPLY
    assert (chunks[-2].value.input_tokens, chunks[-2].value.output_tokens) == (11, 7)
    assert chunks[-1].value == {"finish_reason": "Stop"}
    body = server.requests[-1].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": "terse"}


def test_stream_chunks_arrive_while_the_server_is_still_sending(load) -> None:
    delay, pieces = 0.06, 6
    with LoopbackOpenAI(reply="one two three four five six", chunks=pieces, chunk_delay=delay) as server:
        provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini")).build()
        started = time.monotonic()
        arrivals = [(time.monotonic(), chunk) for chunk in itertools.islice(provider.chat_stream("count"), MAX_CHUNKS)]
    texts = [(t, c) for t, c in arrivals if c.kind == "text"]
    assert "".join(c.text for _, c in texts) == "one two three four five six"
    assert len(texts) == pieces
    # The server sleeps `delay` between events: had the host buffered the body, every chunk would turn up
    # at once. Instead the first text is seen well before the last one has been sent.
    spread = texts[-1][0] - texts[0][0]
    assert spread >= 0.6 * (pieces - 1) * delay, f"chunks arrived together (spread {spread:.3f}s)"
    assert texts[0][0] - started < arrivals[-1][0] - started - 0.6 * (pieces - 1) * delay
    assert arrivals[-1][1].kind == "done"


def test_closing_a_stream_early_closes_its_parser(load, server, monkeypatch) -> None:
    """Wire spec 6.1: the host calls chat_stream_parser_close also when the stream is dropped early."""
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
    provider = ProviderBuilder(factory).build()
    calls = spy(monkeypatch, factory)
    parser_ids: list[bytes] = []
    call = factory.instance.call
    monkeypatch.setattr(factory.instance, "call", lambda op, data: _keep_id(op, call(op, data), parser_ids))
    stream = provider.chat_stream("hi")
    assert [next(stream).kind for _ in range(2)] == ["text", "text"]
    stream.close()
    ops = [op for op, _ in calls]
    assert ops[-1] == "chat_stream_parser_close" and "chat_stream_parser_finish" not in ops
    assert calls[-1][1] == parser_ids[0]  # the id chat_stream_parser_start gave out
    assert "".join(c.text for c in bounded(provider.chat_stream("hi"))) == REPLY  # the instance is fine


def _keep_id(op: str, output: bytes, ids: list[bytes]) -> bytes:
    if op == "chat_stream_parser_start":
        ids.append(output)
    return output


def test_a_connection_lost_mid_stream_is_a_transport_error(load) -> None:
    server = LoopbackOpenAI(reply="a b c d e f g h", chunks=8, chunk_delay=0.1)
    try:
        provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini")).build()
        stream = provider.chat_stream("hi")
        assert next(stream).text == "a "
        server.stop()  # drops the connection in the middle of the body
        with pytest.raises(TransportError) as failure:
            bounded(stream)
    finally:
        server.stop()
    assert f"{server.base_url}/chat/completions" in str(failure.value)
    assert failure.value.payload["kind"] == "connection_closed"


def test_stream_tool_calls(load) -> None:
    calls = [{"id": "call_a", "name": "read_file", "arguments": {"path": "a.txt"}}]
    with LoopbackOpenAI(tool_calls=calls, chunks=3) as server:
        provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini")).build()
        chunks = bounded(provider.chat_stream("read a.txt", tools=[TOOL]))
        assert server.requests[-1].json["tools"] == [TOOL]
    assert [c.kind for c in chunks] == [
        "tool_use_start", "tool_use_input_delta", "tool_use_input_delta", "tool_use_input_delta",
        "tool_use_complete", "usage", "done",
    ]  # fmt: skip
    assert chunks[0].value == {"index": 0, "id": "call_a", "name": "read_file"}
    assert "".join(c.value["partial_json"] for c in chunks[1:4]) == '{"path":"a.txt"}'
    call = {"id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a.txt"}'}}
    assert chunks[4].value == {"index": 0, "tool_call": call}
    assert chunks[-1].value == {"finish_reason": "ToolCalls"}


def test_concurrent_streams_on_one_instance_keep_their_own_parser(load) -> None:
    """Checklist 28: parser ids belong to the one instance; interleaved streams must not mix."""

    def reply(request: dict) -> str:
        return f"reply to {request['messages'][-1]['content']}"

    with LoopbackOpenAI(reply=reply, chunks=5, chunk_delay=0.01) as server:
        provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini")).build()
        results: dict[int, str] = {}
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                results[n] = "".join(c.text for c in bounded(provider.chat_stream(f"question {n}")))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert results == {n: f"reply to question {n}" for n in range(6)}


# ---- complete, embed, list models --------------------------------------------------------------------------------


def test_complete(load, server) -> None:
    provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)).build()
    assert provider.complete("Once upon a time", max_tokens=16, temperature=0.5).text == REPLY
    recorded = server.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/completions")
    assert recorded.json == {"model": "gpt-4o-mini", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.5}


def test_embed_with_dimensions(load, server) -> None:
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
    provider = ProviderBuilder(factory).model("text-embedding-3-small").parameter("embedding_dimensions", 64).build()
    vectors = provider.embed(["hello", "world"])
    assert [f32(v) for v in vectors] == [embedding_vector("hello", 64), embedding_vector("world", 64)]
    recorded = server.requests[-1]
    assert recorded.path == "/v1/embeddings"
    assert recorded.json["dimensions"] == 64 and recorded.json["input"] == ["hello", "world"]
    assert len(provider.embed("one string")) == 1


def test_list_models_live(load) -> None:
    with LoopbackOpenAI(models=["model-one", "model-two"], api_key=KEY) as server:
        factory = load(base_url=server.base_url, api_key=KEY)
        assert factory.list_models() == ["model-one", "model-two"]
        assert ProviderBuilder(factory).build().list_models() == ["model-one", "model-two"]
        recorded = server.requests[-1]
    assert (recorded.method, recorded.path, recorded.body) == ("GET", "/v1/models", b"")
    assert recorded.headers["authorization"] == f"Bearer {KEY}"


# ---- errors (wire spec 5.4, 6.1; checklist 16, 17) ------------------------------------------------------------


def test_429_is_rate_limited_with_retry_after(load, server, monkeypatch) -> None:
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
    provider = ProviderBuilder(factory).build()
    calls = spy(monkeypatch, factory)
    for operation in ("chat", "chat_stream", "embed"):
        server.fail_next(429)
        with pytest.raises(RateLimitedError) as failure:
            OPERATIONS[operation](provider)
        assert failure.value.retry_after_secs == 30
        assert "Rate limit reached" in str(failure.value)
    ops = [op for op, _ in calls]
    assert ops.count("classify_chat_error") == 2  # chat and chat_stream: the plugin's classifier
    assert "parse_embed_response" not in ops  # embed: the host's generic classifier, no parse


def test_500_is_http_status_for_chat_and_embed(load, server, monkeypatch) -> None:
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
    provider = ProviderBuilder(factory).build()
    calls = spy(monkeypatch, factory)
    server.fail_next(500)
    with pytest.raises(HttpStatusError) as chat_failure:
        provider.chat("hi")
    assert [op for op, _ in calls][-1] == "classify_chat_error"
    calls.clear()
    server.fail_next(500, message="embeddings are down")
    with pytest.raises(HttpStatusError) as embed_failure:
        provider.embed(["hi"])
    assert [op for op, _ in calls] == ["embed_request"]  # classified by the host, not parsed
    assert (chat_failure.value.status_code, embed_failure.value.status_code) == (500, 500)
    assert embed_failure.value.payload["message"] == "embeddings are down"


def test_401_is_an_auth_error_for_every_operation(load, server) -> None:
    provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)).build()
    for operation in OPERATIONS:
        server.fail_next(401)
        with pytest.raises(AuthError):
            OPERATIONS[operation](provider)


def test_an_unreachable_endpoint_is_a_transport_error_naming_the_url(load) -> None:
    base = f"http://127.0.0.1:{closed_port()}/v1"
    provider = ProviderBuilder(load(base_url=base, model="gpt-4o-mini", api_key=KEY)).build()
    paths = {"chat": "chat/completions", "chat_stream": "chat/completions", "complete": "completions",
             "embed": "embeddings", "list_models": "models"}  # fmt: skip
    for operation, path in paths.items():
        with pytest.raises(TransportError) as failure:
            OPERATIONS[operation](provider)
        assert f"{base}/{path}" in str(failure.value)
        assert failure.value.payload["kind"] == "connection_refused"
        _assert_secret_absent(failure.value, KEY)


# ---- the allow-list (wire spec 9; checklist 19, 20, 22) --------------------------------------------------------


def test_a_base_url_outside_the_allow_list_is_refused_before_from_config(load, server, monkeypatch) -> None:
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY, allowed_hosts=["127.0.0.1"])
    calls = spy(monkeypatch, factory)
    with pytest.raises(InvalidRequestError) as failure:
        ProviderBuilder(factory).base_url(f"http://localhost:{server.port}/v1").build()
    assert "allowed_hosts" in str(failure.value) and "localhost" in str(failure.value)
    assert "from_config" not in [op for op, _ in calls]
    with pytest.raises(InvalidRequestError, match="Invalid base_url"):
        ProviderBuilder(factory).base_url("not a url").build()
    assert server.requests == []


def test_requests_the_plugin_builds_are_checked_against_the_allow_list(load, server) -> None:
    """Checklist 19 (our policy, stricter than QueryMT's): every generation-A request is checked.

    The bundled plugin only ever sends to its base_url, which is always allowed, so the provider is
    built first and its allow-list narrowed afterwards: the same as a plugin whose request URL is not
    its base_url.
    """
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
    provider = ProviderBuilder(factory).build()
    factory.host.allow = AllowList(("localhost",))
    for operation in ("chat", "chat_stream", "complete", "embed"):
        with pytest.raises(HostBlockedError) as failure:
            OPERATIONS[operation](provider)
        assert failure.value.host == "127.0.0.1" and failure.value.allowed == ["localhost"]
        assert 'add "127.0.0.1" to allowed_hosts' in str(failure.value)
    with pytest.raises(InvalidRequestError, match="allowed_hosts"):  # list_models checks base_url first (spec 9)
        provider.list_models()
    assert server.requests == []  # refused before any I/O


def test_host_send_refuses_a_crafted_request_to_another_host(load, server) -> None:
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
    crafted = wire.HttpRequest("GET", f"http://localhost:{server.port}/v1/models", [], b"").to_wire()
    with pytest.raises(HostBlockedError) as failure:
        factory.host.send(crafted)
    assert failure.value.host == "localhost"
    assert failure.value.hint == "add \"localhost\" to allowed_hosts in [providers.config] of 'openai', or set base_url"
    allowed = wire.HttpRequest("GET", f"{server.base_url}/models", [("authorization", f"Bearer {KEY}")], b"")
    response = factory.host.send(allowed.to_wire())
    response.close()
    assert (str(response.url), response.status_code) == (f"{server.base_url}/models", 200)
    assert [r.path for r in server.requests] == ["/v1/models"]


def test_timeout_seconds_is_applied_by_the_host(load) -> None:
    # Stream events come 1.3 s apart: a 1 s timeout fails between two of them, naming the URL, while
    # the same stream without it (the client's default is minutes) gets past that gap.
    with LoopbackOpenAI(reply="slow reply", chunks=2, chunk_delay=1.3) as server:
        factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY)
        impatient = ProviderBuilder(factory).parameter("timeout_seconds", 1).build()
        with pytest.raises(TransportError, match=r"cannot reach http://127\.0\.0\.1") as failure:
            bounded(impatient.chat_stream("hi"))
        assert failure.value.payload["kind"] == "timeout"
        stream = ProviderBuilder(factory).build().chat_stream("hi")
        assert next(stream).text == "slow "  # the first text event is the second event sent
        stream.close()


def test_allowed_hosts_and_unknown_keys_never_reach_the_plugin(load, server, monkeypatch) -> None:
    """Checklist 22: every cfg the plugin sees is pruned to its schema (it rejects unknown keys)."""
    factory = load(base_url=server.base_url, model="gpt-4o-mini", api_key=KEY,
                   allowed_hosts=["127.0.0.1", "localhost"])  # fmt: skip
    assert factory.allowed_hosts == ["127.0.0.1", "localhost"]
    calls = spy(monkeypatch, factory)
    provider = ProviderBuilder(factory).parameter("allowed_hosts", ["elsewhere"]).top_k(40).build()  # openai has no top_k
    assert not {"allowed_hosts", "top_k"} & set(provider.cfg)
    for operation in OPERATIONS:
        OPERATIONS[operation](provider)
    assert {op for op, _ in calls} >= {"from_config", "chat_request", "chat_stream_request", "embed_request",
                                       "complete_request", "list_models_request"}  # fmt: skip
    for op, data in calls:
        for key in (b"allowed_hosts", b"top_k", b"elsewhere"):
            assert key not in data, f"{key!r} reached the plugin in {op}"
    for recorded in server.requests:
        assert b"allowed_hosts" not in recorded.body and b"top_k" not in recorded.body


def test_a_streamed_401_raises_every_time(load, server) -> None:
    """Issue 13.5: a streamed chat answered 401 must raise AuthError on every run, none ending quietly."""
    provider = ProviderBuilder(load(base_url=server.base_url, model="gpt-4o-mini", api_key="sk-wrong-key")).build()
    outcomes = []
    for _ in range(100):
        try:
            outcomes.append("".join(chunk.text for chunk in provider.chat_stream("hi")))
        except AuthError as error:
            outcomes.append(type(error).__name__)
            assert "sk-wrong-key" not in str(error)
    assert outcomes == ["AuthError"] * 100
