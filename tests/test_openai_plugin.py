"""The bundled openai plugin, at the raw export level, in both builds.

The generation-A flows of wire spec 6.1 are driven by hand: the plugin builds a request, httpx sends it
to the loopback OpenAI server, the plugin parses the response (streams are fed one LF-terminated line per
call). Goldens from querymt_wire_golden.json pin the encodings; the Wasm and native builds must answer
every input with the same bytes.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import extism
import httpx
import pytest

from querymt_jupyter.build import build_plugin
from querymt_jupyter.loaders.base import CallFailed
from querymt_jupyter.loaders.native import load_native
from querymt_jupyter.loopback import LoopbackOpenAI, embedding_vector

SOURCE = Path(__file__).resolve().parents[1] / "querymt_jupyter" / "plugins" / "openai.c"
KINDS = ("wasm", "native")
I64 = extism.ValType.I64
HELLO = [{"role": "User", "content": [{"type": "text", "text": "Hello"}]}]


# ---- loading both builds -------------------------------------------------------------------------------


def _trivial_host_function(name: str, returns: bool) -> Any:
    """The openai plugin never calls the host (generation A), but every import must resolve."""

    @extism.host_fn(name=name, namespace="extism:host/user", signature=([I64], [I64] if returns else []))
    def host_function(current: Any, params: list, results: list, *_: Any) -> None:
        if returns:
            results[0].value = 0

    return host_function


HOST_FUNCTIONS = [
    _trivial_host_function("qmt_http_request", True),
    _trivial_host_function("qmt_http_stream_open", True),
    _trivial_host_function("qmt_http_stream_next", True),
    _trivial_host_function("qmt_http_stream_close", False),
    _trivial_host_function("qmt_yield_chunk", False),
    _trivial_host_function("qmt_log", False),
]


class NullHost:
    """HostCalls for the native build; like the Wasm host functions above, never used."""

    def http_request(self, request: bytes) -> bytes:
        return b""

    def http_stream_open(self, request: bytes) -> bytes:
        return b""

    def http_stream_next(self, stream_id: int) -> bytes:
        return b""

    def http_stream_close(self, stream_id: int) -> None:
        pass

    def yield_chunk(self, chunk: bytes) -> None:
        pass

    def log(self, record: bytes) -> None:
        pass


class ExportFailed(Exception):
    """An export returned an error; ``payload`` is its LLMErrorPayload when structured."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        try:
            doc = json.loads(message)
        except ValueError:
            doc = None
        self.payload: dict | None = doc.get("payload") if isinstance(doc, dict) else None


class Plugin:
    """One instance of one build, called by export name; JSON-able inputs are sent compact."""

    def __init__(self, kind: str, call: Callable[[str, bytes], bytes]) -> None:
        self.kind, self._call = kind, call

    def __call__(self, op: str, data: Any = None) -> bytes:
        payload = data if isinstance(data, bytes) else compact(data)
        try:
            return self._call(op, payload)
        except extism.Error as exc:
            raise ExportFailed(str(exc)) from None
        except CallFailed as exc:
            raise ExportFailed(exc.message.decode()) from None

    def json(self, op: str, data: Any = None) -> Any:
        return json.loads(self(op, data))

    def error(self, op: str, data: Any = None) -> dict:
        """The structured payload of a call that must fail."""
        with pytest.raises(ExportFailed) as failure:
            self(op, data)
        assert failure.value.payload is not None, f"unstructured error: {failure.value}"
        return failure.value.payload


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def f32(values: list[float]) -> list[float]:
    """Each value rounded to float32 (QueryMT's embeddings are Vec<f32>)."""
    return [struct.unpack("<f", struct.pack("<f", x))[0] for x in values]


@pytest.fixture(scope="session")
def openai_builds() -> dict[str, Path]:
    return {kind: build_plugin(SOURCE, kind) for kind in KINDS}  # the build cache: the registry's artifacts too


def open_plugin(kind: str, path: Path) -> Plugin:
    if kind == "wasm":
        instance = extism.Plugin({"wasm": [{"data": path.read_bytes()}]}, wasi=True, functions=HOST_FUNCTIONS)
        return Plugin(kind, lambda op, data: bytes(instance.call(op, data)))
    native = load_native(path, NullHost(), plugin="openai")
    return Plugin(kind, native.call)


@pytest.fixture(scope="session")
def instances(openai_builds: dict[str, Path]) -> dict[str, Plugin]:
    return {kind: open_plugin(kind, path) for kind, path in openai_builds.items()}


@pytest.fixture(params=KINDS)
def plugin(request: pytest.FixtureRequest, instances: dict[str, Plugin]) -> Plugin:
    return instances[request.param]


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(reply="Hello from the loopback!", api_key="sk-test-key") as s:
        yield s


def cfg_for(server: LoopbackOpenAI, **extra: Any) -> dict:
    return {"api_key": "sk-test-key", "base_url": server.base_url, "model": "gpt-4o-mini", **extra}


# ---- driving the generation-A flows ----------------------------------------------------------------------


def wire_response(status: int, headers: httpx.Headers, body: bytes) -> dict:
    """An httpx response as a SerializableHttpResponse (wire spec 7.7)."""
    grouped: dict[str, Any] = {}
    for name, value in headers.multi_items():
        name = name.lower()
        if name in grouped:
            previous = grouped[name]
            grouped[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            grouped[name] = value
    return {"resp": {"head": {"status": status, "headers": grouped, "version": "HTTP/1.1"}, "body": list(body)}}


def http_args(request_wire: bytes) -> dict:
    req = json.loads(request_wire)["req"]
    head = req["head"]
    assert head["version"] == "HTTP/1.1"
    return {"method": head["method"], "url": head["uri"], "headers": head["headers"], "content": bytes(req["body"])}


def send(request_wire: bytes) -> dict:
    response = httpx.request(**http_args(request_wire))
    return wire_response(response.status_code, response.headers, response.content)


def chat(plugin: Plugin, cfg: dict, messages: list = HELLO, tools: list | None = None) -> dict:
    """chat_request -> send -> parse_chat_response, or the classified error for a non-2xx status."""
    resp = send(plugin("chat_request", {"cfg": cfg, "messages": messages, "tools": tools}))
    if 200 <= resp["resp"]["head"]["status"] < 300:
        return plugin.json("parse_chat_response", {"cfg": cfg, "resp": resp})
    return plugin.json("classify_chat_error", {"cfg": cfg, "resp": resp})


def feed_lines(plugin: Plugin, parser_id: int, buffer: bytes, chunks: list) -> bytes:
    """Parse every complete line of buffer (one parse call per LF-terminated line); return the rest."""
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        parsed = plugin.json("chat_stream_parser_parse", {"parser_id": parser_id, "chunk": list(line + b"\n")})
        chunks.extend((time.monotonic(), c) for c in parsed)
    return rest


def stream_chat(plugin: Plugin, cfg: dict, messages: list = HELLO, tools: list | None = None) -> list[tuple[float, dict]]:
    """The streaming flow of wire spec 6.1; returns (arrival time, ExtismChatChunk) pairs."""
    request = plugin("chat_stream_request", {"cfg": cfg, "messages": messages, "tools": tools})
    chunks: list[tuple[float, dict]] = []
    with httpx.stream(**http_args(request)) as response:
        assert response.status_code == 200
        parser_id = plugin.json("chat_stream_parser_start", cfg)
        buffer = b""
        for data in response.iter_raw():
            buffer = feed_lines(plugin, parser_id, buffer + data, chunks)
    feed_lines(plugin, parser_id, buffer + b"\n", chunks)
    chunks.extend((time.monotonic(), c) for c in plugin.json("chat_stream_parser_finish", parser_id))
    assert plugin("chat_stream_parser_close", parser_id) == b""
    return chunks


# ---- identity and config ----------------------------------------------------------------------------------


def test_identity_exports(plugin: Plugin, golden: dict) -> None:
    assert plugin("name", b"null").decode() == golden["name_output_openai"]["wire"]
    assert plugin("base_url", b"null").decode() == golden["base_url_output_openai"]["wire"]
    assert plugin("api_key_name", b"null").decode() == golden["api_key_name_output_openai"]["wire"]
    assert plugin("init_logging", b"3") == b""
    assert plugin("supports_streaming", {"model": "m"}) == golden["supports_streaming_output"]["wire"].encode()
    assert plugin("list_models_static", {"cfg": {}}) == golden["list_models_static_response_none"]["wire"].encode()
    assert plugin.error("init_logging", b"9")["type"] == "json_error"


def test_config_schema(plugin: Plugin) -> None:
    schema = plugin.json("config_schema", b"null")
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert list(schema["properties"]) == [
        "api_key", "base_url", "model", "max_tokens", "temperature", "top_p", "system", "stream",
        "timeout_seconds", "tool_choice", "embedding_dimensions", "embedding_encoding_format", "reasoning_effort",
    ]
    assert all(prop["description"] for prop in schema["properties"].values())
    assert schema["properties"]["system"]["items"] == {"type": "string"}
    # tool_choice has no inline "properties": host-side pruning (wire spec 3) keeps its object whole
    assert "properties" not in schema["properties"]["tool_choice"]


def test_from_config_echoes_a_pruned_config(plugin: Plugin) -> None:
    overlay = {"provider": "openai", "model": "gpt-4o-mini", "temperature": 0.7, "system": ["Be brief."],
               "tool_choice": {"type": "function", "function": {"name": "f"}}, "validator_attempts": 3,
               "allowed_hosts": ["api.openai.com"], "max_tokens": None}
    properties = plugin.json("config_schema", b"null")["properties"]
    pruned = {k: v for k, v in overlay.items() if k in properties}
    assert plugin("from_config", pruned) == compact(pruned)
    assert plugin("from_config", b' {"model" : "m"} ') == b'{"model" : "m"}'


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"model": "m", "allowed_hosts": []}, "unknown field `allowed_hosts`"),
        ({"model": 5}, "`model`"),
        ({"max_tokens": -1}, "`max_tokens`"),
        ({"max_tokens": 1.5}, "`max_tokens`"),
        ({"temperature": "hot"}, "`temperature`"),
        ({"system": "one string"}, "`system`"),
        ({"stream": 1}, "`stream`"),
        ({"tool_choice": "sometimes"}, "`tool_choice`"),
        ({"tool_choice": {"type": "function"}}, "`tool_choice`"),
        ({"base_url": "ftp://x"}, "`base_url`"),
        ({"reasoning_effort": "extreme"}, "`reasoning_effort`"),
        ({"api_key": "sk-\nInjected: yes"}, "`api_key`"),
        ([], "object"),
    ],
)
def test_from_config_rejects(plugin: Plugin, cfg: Any, needle: str) -> None:
    payload = plugin.error("from_config", cfg)
    assert payload["type"] == "json_error" and needle in payload["message"]


# ---- chat ---------------------------------------------------------------------------------------------------


def test_chat_round_trip(plugin: Plugin, server: LoopbackOpenAI) -> None:
    result = chat(plugin, cfg_for(server))
    assert result == {"text": "Hello from the loopback!", "tool_calls": None, "thinking": None,
                      "usage": {"input_tokens": 1, "output_tokens": 5, "reasoning_tokens": 0, "cache_read": 0,
                                "cache_write": 0},
                      "finish_reason": "Stop"}
    (recorded,) = server.requests
    assert (recorded.method, recorded.path) == ("POST", "/v1/chat/completions")
    assert recorded.headers["authorization"] == "Bearer sk-test-key"
    assert recorded.headers["content-type"] == "application/json"
    assert recorded.json == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}],
                             "stream": False}


def test_chat_request_body_carries_every_option(plugin: Plugin, server: LoopbackOpenAI, golden: dict) -> None:
    tool = golden["tool_definition"]["json"]
    cfg = cfg_for(server, system=["You are terse.", "Answer in French."], temperature=0.2, max_tokens=64,
                  top_p=1, tool_choice="required", reasoning_effort="max")
    chat(plugin, cfg, tools=[tool])
    recorded = server.requests[-1]
    body = recorded.json
    assert list(body) == ["model", "messages", "max_tokens", "temperature", "stream", "top_p", "tools",
                          "tool_choice", "reasoning_effort"]
    assert body["messages"][:2] == [{"role": "system", "content": "You are terse."},
                                    {"role": "system", "content": "Answer in French."}]
    assert (body["max_tokens"], body["top_p"], body["tool_choice"], body["reasoning_effort"]) == (64, 1, "required", "xhigh")
    # f32 values are written as serde does: shortest digits, always with a fraction
    assert b'"temperature":0.2,' in recorded.body and b'"top_p":1.0,' in recorded.body
    # tools travel byte for byte
    assert b'"tools":[' + golden["tool_definition"]["wire"].encode() + b"]" in recorded.body


def test_tool_choice_only_with_tools_and_no_auth_without_key(plugin: Plugin) -> None:
    with LoopbackOpenAI() as server:
        chat(plugin, {"base_url": server.base_url + "/", "model": "m", "tool_choice": "auto", "api_key": ""},
             tools=[])
        recorded = server.requests[-1]
    assert "authorization" not in recorded.headers
    assert recorded.path == "/v1/chat/completions"  # a trailing slash in base_url is fine too
    assert "tools" not in recorded.json and "tool_choice" not in recorded.json


def test_golden_chat_request(plugin: Plugin, golden: dict) -> None:
    request = plugin.json("chat_stream_request", golden["extism_chat_request"]["wire"].encode())["req"]
    assert request["head"] == {
        "method": "POST", "uri": "https://token-plan-sgp.xiaomimimo.com/v1/chat/completions",
        "headers": {"content-type": "application/json", "authorization": "Bearer test-key"}, "version": "HTTP/1.1",
    }
    body = bytes(request["body"])
    tools = compact(golden["extism_chat_request"]["json"]["tools"])
    assert body == (b'{"model":"mimo-v2.5-pro","messages":[{"role":"user","content":"Hello"}],"stream":true,'
                    b'"stream_options":{"include_usage":true},"tools":' + tools + b"}")
    no_tools = plugin.json("chat_request", golden["extism_chat_request_no_tools"]["wire"].encode())["req"]
    assert json.loads(bytes(no_tools["body"])) == {"model": "gpt-4o-mini",
                                                   "messages": [{"role": "user", "content": "Hello"}], "stream": False}


def test_golden_messages_become_openai_messages(plugin: Plugin, server: LoopbackOpenAI, golden: dict) -> None:
    names = ["chat_message_user_text_and_image", "chat_message_assistant_tool_use", "chat_message_user_tool_result",
             "chat_message_assistant_thinking_with_cache_hint", "chat_message_user_text"]
    chat(plugin, cfg_for(server, system=["sys"]), [golden[name]["json"] for name in names])
    assert server.requests[-1].json["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AQID"}}]},
        {"role": "assistant", "content": "Let me search",
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "search", "arguments": '{"q":"rust"}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "found it"},
        {"role": "assistant", "content": "response"},
        {"role": "user", "content": "Hello"},
    ]


def test_every_content_block_variant(plugin: Plugin, golden: dict) -> None:
    messages = [{"role": "User", "content": golden["content_blocks_all_variants"]["json"]}]
    request = plugin.json("chat_request", {"cfg": {"model": "m"}, "messages": messages, "tools": None})
    sent = json.loads(bytes(request["req"]["body"]))["messages"]
    assert sent == [
        {"role": "tool", "tool_call_id": "t1", "content": "boom"},
        {"role": "user", "content": "hello",
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "search", "arguments": '{"q":"test"}'}}]},
    ]


def test_chat_tool_calls_and_usage(plugin: Plugin, golden: dict) -> None:
    calls = [{"id": "call_a", "name": "read_file", "arguments": {"path": "a.txt"}}]
    usage = {"prompt_tokens": 30, "completion_tokens": 12, "cached_tokens": 10, "reasoning_tokens": 2}
    with LoopbackOpenAI(tool_calls=calls, usage=usage) as server:
        result = chat(plugin, cfg_for(server, api_key=None))
    assert compact(result["tool_calls"][0]) == golden["tool_call"]["wire"].encode()
    assert result["text"] is None and result["finish_reason"] == "ToolCalls"
    # like QueryMT's openai plugin: cached prompt tokens and reasoning tokens are reported apart
    assert result["usage"] == {"input_tokens": 20, "output_tokens": 10, "reasoning_tokens": 2, "cache_read": 10,
                               "cache_write": 0}


def parse_chat_body(plugin: Plugin, body: Any, status: int = 200) -> bytes:
    raw = body if isinstance(body, bytes) else compact(body)
    resp = wire_response(status, httpx.Headers({"content-type": "application/json"}), raw)
    return plugin("parse_chat_response", {"cfg": {"model": "m"}, "resp": resp})


def test_parse_chat_response_golden(plugin: Plugin, golden: dict) -> None:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": None, "reasoning_content": "need the file",
                        "tool_calls": [{"id": "call_a", "type": "function",
                                        "function": {"name": "read_file", "arguments": '{"path":"a.txt"}'}}]}}]}
    assert parse_chat_body(plugin, body) == golden["extism_chat_response_tool_calls"]["wire"].encode()


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("stop", "Stop"), ("length", "Length"), ("tool_calls", "ToolCalls"), ("content_filter", "ContentFilter"),
     ("function_call", "ToolCalls"), ("something_new", "Unknown"), (None, None)],
)
def test_finish_reason_mapping(plugin: Plugin, finish: str | None, expected: str | None) -> None:
    body = {"choices": [{"finish_reason": finish, "message": {"role": "assistant", "content": "x"}}]}
    assert json.loads(parse_chat_body(plugin, body))["finish_reason"] == expected


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b"{}", b'{"choices":{}}', b"\xff\xfe"])
def test_malformed_chat_response(plugin: Plugin, body: bytes) -> None:
    with pytest.raises(ExportFailed) as failure:
        parse_chat_body(plugin, body)
    payload = failure.value.payload
    assert payload is not None and payload["type"] == "response_format_error"
    assert payload["message"].startswith("Failed to decode API response")
    assert isinstance(payload["raw_response"], str)


# ---- error classification ------------------------------------------------------------------------------------


def test_classify_chat_errors(plugin: Plugin, server: LoopbackOpenAI) -> None:
    server.fail_next(429)
    server.fail_next(500)
    server.fail_next(400, message="Invalid 'messages': empty.")
    server.fail_next(404)
    limited = chat(plugin, cfg_for(server))
    assert limited["payload"]["type"] == "rate_limited" and limited["payload"]["retry_after_secs"] == 30
    assert limited["payload"]["message"].startswith("Rate limit reached for gpt-4o-mini")
    assert chat(plugin, cfg_for(server))["payload"] == {
        "type": "http_status", "status_code": 500,
        "message": "The server had an error while processing your request. Sorry about that!",
        "retry_after_secs": None,
    }
    assert chat(plugin, cfg_for(server))["payload"] == {"type": "invalid_request",
                                                         "message": "Invalid 'messages': empty."}
    missing_model = chat(plugin, cfg_for(server))["payload"]
    assert missing_model["type"] == "provider_error" and missing_model["code"] == "model_not_found"
    assert missing_model["error_type"] == "invalid_request_error" and missing_model["request_id"].startswith("req-")
    unauthorized = chat(plugin, cfg_for(server, api_key="sk-wrong-key-0000"))["payload"]
    assert unauthorized == {"type": "auth_error", "message": "Incorrect API key provided: sk-wr***0000."}


def test_classify_without_json_body(plugin: Plugin) -> None:
    def classify(status: int, body: bytes, headers: dict) -> dict:
        resp = wire_response(status, httpx.Headers(headers), body)
        return plugin.json("classify_chat_error", {"cfg": {}, "resp": resp})["payload"]

    assert classify(502, b"  <html>Bad gateway</html>\n", {"retry-after-ms": "1500"}) == {
        "type": "http_status", "status_code": 502, "message": "<html>Bad gateway</html>", "retry_after_secs": 2}
    assert classify(429, b"", {"x-ratelimit-reset-requests": "1m30s"})["retry_after_secs"] == 90
    assert classify(429, b'{"error":{"message":"slow","retry_after":0.2}}', {})["retry_after_secs"] == 1
    assert classify(403, b"", {}) == {"type": "auth_error", "message": "HTTP 403"}
    assert classify(499, b"cancelled", {}) == {"type": "cancelled"}
    long_page = classify(503, b"x" * 100_000, {})
    assert len(long_page["message"]) == 2000


# ---- streaming ------------------------------------------------------------------------------------------------


def test_stream_text(plugin: Plugin, golden: dict) -> None:
    reply = "Streaming works, one piece at a time."
    with LoopbackOpenAI(reply=reply, chunk_delay=0.02, usage={"prompt_tokens": 25, "completion_tokens": 15}) as server:
        started = time.monotonic()
        timed = stream_chat(plugin, cfg_for(server, api_key=None))
        body = server.requests[-1].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    chunks = [c for _, c in timed]
    texts = [c["chunk"]["text"] for c in chunks if "text" in c["chunk"]]
    assert len(texts) == 8 and "".join(texts) == reply
    assert all(c["usage"] is None for c in chunks if "text" in c["chunk"])
    usage = {"input_tokens": 25, "output_tokens": 15, "reasoning_tokens": 0, "cache_read": 0, "cache_write": 0}
    assert chunks[-2] == {"chunk": {"usage": usage}, "usage": usage}
    assert compact(chunks[-1]) == golden["extism_chat_chunk_done"]["wire"].encode()
    assert len(chunks) == 10
    first_text = next(t for t, c in timed if "text" in c["chunk"])
    assert first_text - started < (timed[-1][0] - started) / 2, "chunks must be parsed as they arrive"


def test_stream_tool_call(plugin: Plugin, golden: dict) -> None:
    calls = [{"id": "call_a", "name": "read_file", "arguments": {"path": "a.txt"}}]
    with LoopbackOpenAI(tool_calls=calls, chunks=3) as server:
        chunks = [c for _, c in stream_chat(plugin, cfg_for(server, api_key=None))]
    kinds = [next(iter(c["chunk"])) for c in chunks]
    assert kinds == ["tool_use_start", "tool_use_input_delta", "tool_use_input_delta", "tool_use_input_delta",
                     "tool_use_complete", "usage", "done"]
    assert compact(chunks[0]) == golden["extism_chat_chunk_tool_use_start"]["wire"].encode()
    assert "".join(c["chunk"]["tool_use_input_delta"]["partial_json"] for c in chunks[1:4]) == '{"path":"a.txt"}'
    assert compact(chunks[4]) == golden["extism_chat_chunk_tool_use_complete"]["wire"].encode()
    assert chunks[-1]["chunk"]["done"]["finish_reason"] == "ToolCalls"


def parse_lines(plugin: Plugin, lines: list[bytes]) -> list[dict]:
    """A fresh parser fed these raw lines one call each, then finished."""
    parser_id = plugin.json("chat_stream_parser_start", {"model": "m"})
    chunks = []
    try:
        for line in lines:
            chunks += plugin.json("chat_stream_parser_parse", {"parser_id": parser_id, "chunk": list(line)})
        return chunks + plugin.json("chat_stream_parser_finish", parser_id)
    finally:
        plugin("chat_stream_parser_close", parser_id)


def test_stream_parser_edge_cases(plugin: Plugin, golden: dict) -> None:
    done_line = bytes(golden["extism_chat_chunk_parse_request"]["json"]["chunk"])
    assert parse_lines(plugin, [done_line]) == [golden["extism_chat_chunk_done"]["json"]]
    # no [DONE], a dangling line without LF, comments and other SSE fields: finish completes the stream
    lines = [b": keep-alive\n", b"event: message\n", b'data:{"choices":[{"index":0,"delta":{"content":"hel"}}]}\r\n',
             b'data: {"choices":[{"index":0,"delta":{"reasoning":"hmm","content":"lo"},"finish_reason":"length"}]}']
    assert parse_lines(plugin, lines) == [
        {"chunk": {"text": "hel"}, "usage": None}, {"chunk": {"thinking": "hmm"}, "usage": None},
        {"chunk": {"text": "lo"}, "usage": None}, {"chunk": {"done": {"finish_reason": "Length"}}, "usage": None}]
    # exactly one done, even with [DONE] repeated; nothing after it
    after = parse_lines(plugin, [b"data: [DONE]\n", b"data: [DONE]\n", b'data: {"choices":[{"delta":{"content":"x"}}]}\n'])
    assert after == [golden["extism_chat_chunk_done"]["json"]]
    # a tool call left open at the end is still completed
    open_call = b'data: {"choices":[{"delta":{"tool_calls":[{"index":2,"id":"c","function":{"name":"f","arguments":"{}"}}]}}]}\n'
    kinds = [next(iter(c["chunk"])) for c in parse_lines(plugin, [open_call])]
    assert kinds == ["tool_use_start", "tool_use_input_delta", "tool_use_complete", "done"]


def test_stream_parser_errors(plugin: Plugin) -> None:
    parser_id = plugin.json("chat_stream_parser_start", {"model": "m"})
    bad = plugin.error("chat_stream_parser_parse", {"parser_id": parser_id, "chunk": list(b"data: {nope\n")})
    assert bad["type"] == "response_format_error" and bad["raw_response"] == "{nope"
    upstream = b'data: {"error":{"message":"The server is overloaded","type":"server_error","code":"server_is_overloaded"}}\n'
    failed = plugin.error("chat_stream_parser_parse", {"parser_id": parser_id, "chunk": list(upstream)})
    assert failed == {"type": "provider_error", "message": "The server is overloaded", "kind": "server_overloaded",
                      "code": "server_is_overloaded", "error_type": "server_error"}
    assert plugin.error("chat_stream_parser_parse", {"parser_id": parser_id, "chunk": "data"})["type"] == "json_error"
    plugin("chat_stream_parser_close", parser_id)
    assert plugin("chat_stream_parser_close", parser_id) == b""  # idempotent
    assert plugin("chat_stream_parser_close", 987654) == b""
    unknown = plugin.error("chat_stream_parser_parse", {"parser_id": parser_id, "chunk": [10]})
    assert unknown["type"] == "invalid_request"
    assert plugin.error("chat_stream_parser_finish", parser_id)["type"] == "invalid_request"
    assert plugin.error("chat_stream_parser_start", {"model": "m", "bogus": 1})["type"] == "json_error"


def test_parser_ids_start_at_one_per_instance(openai_builds: dict[str, Path]) -> None:
    for kind, path in openai_builds.items():
        fresh = open_plugin(kind, path)
        assert [fresh("chat_stream_parser_start", {}) for _ in range(3)] == [b"1", b"2", b"3"]
        fresh.json("chat_stream_parser_finish", 2)
        assert fresh("chat_stream_parser_start", {}) == b"4"  # ids are never reused


# ---- embeddings, completions, models --------------------------------------------------------------------------


def test_embeddings(plugin: Plugin, server: LoopbackOpenAI) -> None:
    for encoding in ("float", "base64"):
        cfg = cfg_for(server, model="text-embedding-3-small", embedding_dimensions=64, embedding_encoding_format=encoding)
        request = plugin("embed_request", {"cfg": cfg, "inputs": ["hello", "world"]})
        vectors = plugin.json("parse_embed_response", {"cfg": cfg, "resp": send(request)})
        assert server.requests[-1].json == {"model": "text-embedding-3-small", "input": ["hello", "world"],
                                            "encoding_format": encoding, "dimensions": 64}
        assert server.requests[-1].path == "/v1/embeddings"
        assert [f32(v) for v in vectors] == [embedding_vector("hello", 64), embedding_vector("world", 64)]


def test_embed_golden_and_f32_formatting(plugin: Plugin, golden: dict) -> None:
    request = plugin.json("embed_request", golden["extism_embed_request"]["wire"].encode())["req"]
    assert request["head"]["uri"] == "https://api.openai.com/v1/embeddings"
    assert bytes(request["body"]) == b'{"model":"text-embedding-3-small","input":["hello","world"],"encoding_format":"float"}'
    body = {"object": "list", "data": [{"embedding": [0.25, -0.5]}, {"embedding": [1, 0]}]}
    resp = wire_response(200, httpx.Headers(), compact(body))
    assert plugin("parse_embed_response", {"cfg": {}, "resp": resp}) == golden["embed_response"]["wire"].encode()
    # values are f32, written with serde's shortest round-trip digits
    tricky = [0.1, 1e-7, 3.4028234663852886e38, -0.000123456789, 123456789.0, 5e-05]
    resp = wire_response(200, httpx.Headers(), compact({"data": [{"embedding": tricky}]}))
    out = plugin("parse_embed_response", {"cfg": {}, "resp": resp})
    assert out == b"[[0.1,1e-7,3.4028235e38,-0.00012345679,123456790.0,0.00005]]"
    assert f32(json.loads(out)[0]) == f32(tricky)


def test_completion(plugin: Plugin, server: LoopbackOpenAI, golden: dict) -> None:
    request = golden["extism_complete_request"]["json"]
    cfg = {**request["cfg"], "base_url": server.base_url, "api_key": "sk-test-key"}
    wire = plugin("complete_request", {**request, "cfg": cfg})
    result = plugin.json("parse_complete_response", {"cfg": cfg, "resp": send(wire)})
    assert result == {"text": "Hello from the loopback!"}
    recorded = server.requests[-1]
    assert recorded.path == "/v1/completions"
    assert recorded.body == b'{"model":"m","prompt":"fn main() {","max_tokens":64,"temperature":0.2}'
    payload = plugin.error("parse_complete_response",
                           {"cfg": cfg, "resp": wire_response(200, httpx.Headers(), b'{"choices":[]}')})
    assert payload["type"] == "response_format_error"


def test_list_models(plugin: Plugin, server: LoopbackOpenAI, golden: dict) -> None:
    assert plugin("list_models_request", golden["extism_list_models_request"]["wire"].encode()) == \
        golden["serializable_http_request_get_empty_body"]["wire"].encode()
    request = plugin("list_models_request", {"cfg": {"api_key": "sk-test-key", "base_url": server.base_url,
                                                     "allowed_hosts": ["127.0.0.1"]}})
    models = plugin.json("parse_list_models_response", {"resp": send(request)})
    assert models == server.models
    assert server.requests[-1].method == "GET" and server.requests[-1].body == b""
    assert plugin.error("list_models_request", {"cfg": {"base_url": "not a url"}})["type"] == "invalid_request"


def test_non_2xx_reaching_a_parser_is_classified(plugin: Plugin, server: LoopbackOpenAI) -> None:
    server.fail_next(401)
    request = plugin("list_models_request", {"cfg": {"base_url": server.base_url}})
    payload = plugin.error("parse_list_models_response", {"resp": send(request)})
    assert payload["type"] == "auth_error"


@pytest.mark.parametrize(
    "op",
    ["from_config", "supports_streaming", "list_models_request", "parse_list_models_response", "chat_request",
     "chat_stream_request", "parse_chat_response", "classify_chat_error", "chat_stream_parser_start",
     "chat_stream_parser_parse", "chat_stream_parser_finish", "chat_stream_parser_close", "embed_request",
     "parse_embed_response", "complete_request", "parse_complete_response", "init_logging"],
)
@pytest.mark.parametrize("data", [b"", b"{", b"[1,2", b'"\xff"', b"null", b'{"cfg":{},"resp":{"resp":{}}}',
                                  b'{"cfg":{"model":"m"},"messages":[{"role":"user","content":[]}],"tools":null}'])
def test_malformed_input_never_crashes(plugin: Plugin, op: str, data: bytes) -> None:
    try:
        plugin(op, data)
    except ExportFailed as failure:
        assert failure.payload is not None and failure.payload["type"] in {"json_error", "invalid_request"}
    assert plugin("name", b"null") == b"openai"  # the instance is still healthy


# ---- both builds agree -------------------------------------------------------------------------------------------


def test_wasm_and_native_answer_identically(openai_builds: dict[str, Path], golden: dict) -> None:
    with LoopbackOpenAI(tool_calls=[{"name": "f", "arguments": {"x": [1, 2.5]}}], reply="Hi!") as server:
        cfg = cfg_for(server, api_key=None, temperature=0.7)
        sse = httpx.post(f"{server.base_url}/chat/completions",
                         json={"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True,
                               "stream_options": {"include_usage": True}}).content
        embeddings = send(embeddings_request_by_hand(server))
    lines = [line + b"\n" for line in sse.split(b"\n")]
    script: list[tuple[str, Any]] = [
        ("name", b"null"), ("config_schema", b"null"), ("from_config", cfg), ("from_config", {"nope": 1}),
        ("chat_request", golden["extism_chat_request"]["wire"].encode()),
        ("chat_stream_request", {"cfg": cfg, "messages": [golden["chat_message_user_text_and_image"]["json"]],
                                 "tools": [golden["tool_definition"]["json"]]}),
        ("complete_request", golden["extism_complete_request"]["wire"].encode()),
        ("parse_embed_response", {"cfg": {}, "resp": embeddings}),
        ("chat_stream_parser_start", cfg),
        *[("chat_stream_parser_parse", {"parser_id": 1, "chunk": list(line)}) for line in lines],
        ("chat_stream_parser_finish", 1), ("chat_stream_parser_parse", {"parser_id": 1, "chunk": [10]}),
    ]
    transcripts = {}
    for kind, path in openai_builds.items():
        fresh = open_plugin(kind, path)
        transcript = []
        for op, data in script:
            try:
                transcript.append((op, "ok", fresh(op, data)))
            except ExportFailed as failure:
                transcript.append((op, "error", str(failure).encode()))
        transcripts[kind] = transcript
    assert transcripts["wasm"] == transcripts["native"]
    assert sum(1 for _, status, _ in transcripts["wasm"] if status == "error") == 2


def embeddings_request_by_hand(server: LoopbackOpenAI) -> bytes:
    """An embeddings request built by hand, so the comparison above feeds both builds the same bytes."""
    body = compact({"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256})
    return compact({"req": {"head": {"method": "POST", "uri": f"{server.base_url}/embeddings",
                                     "headers": {"content-type": "application/json"}, "version": "HTTP/1.1"},
                            "body": list(body)}})
