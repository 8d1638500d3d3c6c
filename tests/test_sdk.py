"""Raw-level tests of the C SDK, the bundled echo plugin, build.py and the native loader.

No registry here: Wasm builds run under the extism SDK directly (with the six QueryMT host functions
defined below), native builds under ``load_native``. Every behavioural test runs against both builds.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import extism
import numpy as np
import pytest

from querymt_jupyter import build
from querymt_jupyter.build import SDK_DIR, build_plugin
from querymt_jupyter.errors import AbiMismatchError, BuildError, PluginCallError, PluginLoadError
from querymt_jupyter.loaders import _native_abi
from querymt_jupyter.loaders.base import CallFailed, HostRefusal
from querymt_jupyter.loaders.native import load_native

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

KINDS: tuple[Literal["wasm", "native"], ...] = ("wasm", "native")
ECHO_SOURCE = Path(build.__file__).parent / "plugins" / "echo.c"
PROBE_SOURCE = Path(__file__).parent / "plugins" / "probe.c"
ECHO_OPS = {
    "name", "api_key_name", "config_schema", "init_logging", "from_config", "supports_streaming",
    "chat", "chat_stream", "embed", "complete", "list_models", "noop", "echo_bytes",
}  # fmt: skip
USER_FUNCTIONS = {
    "qmt_http_request", "qmt_http_stream_open", "qmt_http_stream_next",
    "qmt_http_stream_close", "qmt_yield_chunk", "qmt_log",
}  # fmt: skip

# A plugin written by the tests to reach the JSON helpers directly: reformat re-serialises a parsed
# document with the writers, floats writes each number as an f32, bytes decodes a byte array, get looks
# a key up.
JSON_TOOL_SOURCE = r"""
#include "qmt_json.h"
static void rewrite(const qmt_json *v, qmt_buf *out) {
    switch (v->type) {
    case QMT_JSON_NULL: qmt_buf_puts(out, "null"); break;
    case QMT_JSON_TRUE: qmt_buf_puts(out, "true"); break;
    case QMT_JSON_FALSE: qmt_buf_puts(out, "false"); break;
    case QMT_JSON_NUMBER: qmt_json_write_number(out, v->num); break;
    case QMT_JSON_STRING: qmt_json_write_string(out, v->str, v->len); break;
    case QMT_JSON_ARRAY:
    case QMT_JSON_OBJECT:
        qmt_buf_putc(out, v->type == QMT_JSON_ARRAY ? '[' : '{');
        qmt_json_foreach(item, v) {
            if (item != v->child) qmt_buf_putc(out, ',');
            if (item->key) { qmt_json_write_cstr(out, item->key); qmt_buf_putc(out, ':'); }
            rewrite(item, out);
        }
        qmt_buf_putc(out, v->type == QMT_JSON_ARRAY ? ']' : '}');
    }
}
static int32_t with_doc(qmt_slice in, qmt_buf *out, int32_t (*fn)(const qmt_json *, qmt_buf *)) {
    char err[128];
    qmt_json_doc doc;
    qmt_json *root = qmt_json_parse(in, &doc, err, sizeof err);
    int32_t rc = root ? fn(root, out) : qmt_fail(out, "json_error", "%s", err);
    qmt_json_doc_free(&doc);
    return rc;
}
static int32_t do_reformat(const qmt_json *root, qmt_buf *out) { rewrite(root, out); return 0; }
static int32_t do_floats(const qmt_json *root, qmt_buf *out) {
    qmt_json_foreach(item, root) {
        if (item != root->child) qmt_buf_putc(out, ' ');
        qmt_json_write_float(out, (float)item->num);
    }
    return 0;
}
static int32_t do_bytes(const qmt_json *root, qmt_buf *out) { return qmt_json_bytes(root, out) ? -1 : 0; }
static int32_t do_get(const qmt_json *root, qmt_buf *out) {
    qmt_json_write_raw(out, qmt_json_get(qmt_json_at(root, 0), qmt_json_string(qmt_json_at(root, 1), "")));
    return 0;
}
static int32_t op_reformat(qmt_slice in, qmt_buf *out) { return with_doc(in, out, do_reformat); }
static int32_t op_floats(qmt_slice in, qmt_buf *out) { return with_doc(in, out, do_floats); }
static int32_t op_bytes(qmt_slice in, qmt_buf *out) { return with_doc(in, out, do_bytes); }
static int32_t op_get(qmt_slice in, qmt_buf *out) { return with_doc(in, out, do_get); }
#define OPS(X) X(reformat, op_reformat) X(floats, op_floats) X(bytes, op_bytes) X(get, op_get)
QMT_PLUGIN(OPS)
"""


# ---- hosts and runners ------------------------------------------------------------------------


class RecordingHost:
    """A HostCalls answering from canned data and recording what the plugin sent."""

    def __init__(
        self,
        response: bytes = b"",
        stream: tuple[bytes, ...] = (),
        open_result: bytes = b'{"status":"ok","stream_id":1}',
    ) -> None:
        self.response, self.open_result = response, open_result
        self.pending = list(stream)
        self.requests: list[bytes] = []
        self.next_ids: list[int] = []
        self.closed: list[int] = []
        self.chunks: list[bytes] = []
        self.logs: list[bytes] = []

    def http_request(self, request: bytes) -> bytes:
        self.requests.append(request)
        return self.response

    def http_stream_open(self, request: bytes) -> bytes:
        self.requests.append(request)
        return self.open_result

    def http_stream_next(self, stream_id: int) -> bytes:
        self.next_ids.append(stream_id)
        return self.pending.pop(0) if self.pending else b""

    def http_stream_close(self, stream_id: int) -> None:
        self.closed.append(stream_id)

    def yield_chunk(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def log(self, record: bytes) -> None:
        self.logs.append(record)


class OpError(Exception):
    """A failed operation, the same for both builds (Extism does not report the Wasm return code)."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.message)["payload"]
        return payload


def extism_functions(host: RecordingHost) -> list[extism.Function]:
    """The six extism:host/user functions of wire spec section 8, forwarding to ``host``."""
    i64 = extism.ValType.I64

    def define(name: str, handler: Callable[[bytes], Any], returns: bool) -> extism.Function:
        @extism.host_fn(name=name, namespace="extism:host/user", signature=([i64], [i64] if returns else []))
        def function(plugin: extism.CurrentPlugin, params: list[Any], results: list[Any], *_: Any) -> None:
            result = handler(plugin.input_bytes(params[0]))
            if returns and result:
                plugin.return_bytes(results[0], result)
            elif returns:
                results[0].value = 0  # offset 0: no block (end of stream)

        return function

    return [
        define("qmt_http_request", host.http_request, True),
        define("qmt_http_stream_open", host.http_stream_open, True),
        define("qmt_http_stream_next", lambda raw: host.http_stream_next(int(raw)), True),
        define("qmt_http_stream_close", lambda raw: host.http_stream_close(int(raw)), False),
        define("qmt_yield_chunk", host.yield_chunk, False),
        define("qmt_log", host.log, False),
    ]


class Runner:
    """One loaded plugin of either kind, with one ``call`` that raises ``OpError``."""

    def __init__(self, path: Path, kind: str, host: RecordingHost) -> None:
        self.kind, self.host = kind, host
        if kind == "wasm":
            manifest = {"wasm": [{"data": path.read_bytes()}]}
            self.wasm = extism.Plugin(manifest, wasi=True, functions=extism_functions(host))
        else:
            self.native = load_native(path, host, plugin=path.stem)

    def call(self, op: str, data: bytes | str = b"null") -> bytes:
        data = data.encode() if isinstance(data, str) else data
        if self.kind == "wasm":
            try:
                return bytes(self.wasm.call(op, data))
            except extism.Error as exc:
                raise OpError(None, str(exc)) from exc
        try:
            return self.native.call(op, data)
        except CallFailed as exc:
            raise OpError(exc.code, exc.message.decode()) from exc

    def json(self, op: str, data: Any) -> Any:
        return json.loads(self.call(op, json.dumps(data)))

    def close(self) -> None:
        if self.kind == "native":
            self.native.close()


@pytest.fixture(scope="session")
def artifacts() -> dict[tuple[str, str], Path]:
    sources = {"echo": ECHO_SOURCE, "probe": PROBE_SOURCE}
    return {(name, kind): build_plugin(src, kind) for name, src in sources.items() for kind in KINDS}  # cached


@pytest.fixture(scope="session")
def json_tool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("json_tool")
    (folder / "json_tool.c").write_text(JSON_TOOL_SOURCE)
    return build_plugin(folder / "json_tool.c", "native", out_dir=folder)


@pytest.fixture
def load(artifacts: dict[tuple[str, str], Path]) -> Iterator[Callable[..., Runner]]:
    made: list[Runner] = []

    def make(name: str, kind: str, host: RecordingHost | None = None) -> Runner:
        made.append(Runner(artifacts[name, kind], kind, host or RecordingHost()))
        return made[-1]

    yield make
    for runner in made:
        runner.close()


def chat_request(
    text: str = "hello world", cfg: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    messages = extra.pop("messages", [{"role": "User", "content": [{"type": "text", "text": text}]}])
    return {"cfg": cfg or {}, "messages": messages, "tools": None, **extra}


def usage(inputs: int, outputs: int) -> dict[str, int]:
    return {
        "input_tokens": inputs,
        "output_tokens": outputs,
        "reasoning_tokens": 0,
        "cache_read": 0,
        "cache_write": 0,
    }


# ---- artifacts --------------------------------------------------------------------------------


def test_wasm_modules_export_the_operations_and_import_only_host_modules(
    artifacts: dict[tuple[str, str], Path],
) -> None:
    imports, exports = build._wasm_interface(artifacts["echo", "wasm"].read_bytes())
    assert set(exports) == ECHO_OPS | {"memory", "_initialize"}
    assert {module for module, _ in imports} <= {
        "wasi_snapshot_preview1",
        "extism:host/env",
        "extism:host/user",
    }
    probe_imports, _ = build._wasm_interface(artifacts["probe", "wasm"].read_bytes())
    assert {name for module, name in probe_imports if module == "extism:host/user"} == USER_FUNCTIONS


def test_native_exports_match_the_wasm_exports(load: Callable[..., Runner]) -> None:
    echo, probe = load("echo", "native"), load("probe", "native")
    assert echo.native.exports == ECHO_OPS
    assert echo.native.kind == "native"
    assert echo.native.thread_safe  # echo defines QMT_THREAD_SAFE
    assert not probe.native.thread_safe


def test_header_and_loader_agree_on_the_abi_version() -> None:
    header = (SDK_DIR / "querymt_plugin.h").read_text()
    version = re.search(r"#define QMT_ABI_VERSION (\d+)", header)
    assert version
    assert int(version[1]) == _native_abi.ABI_VERSION


# ---- echo: every export -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_echo_metadata_exports(load: Callable[..., Runner], kind: str) -> None:
    echo = load("echo", kind)
    assert echo.call("name") == b"echo"
    assert echo.call("api_key_name") == b""
    assert echo.call("init_logging", b"3") == b""
    assert echo.call("supports_streaming", b"{}") == b"true"
    assert echo.call("list_models", b'{"model":"echo-1"}') == b'["echo-1","echo-mini"]'
    assert echo.call("noop", b"") == b""
    assert echo.call("echo_bytes", bytes(range(256))) == bytes(range(256))


@pytest.mark.parametrize("kind", KINDS)
def test_echo_config_schema(load: Callable[..., Runner], kind: str) -> None:
    schema = json.loads(load("echo", kind).call("config_schema"))
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert "required" not in schema
    props = schema["properties"]
    assert list(props) == ["model", "system", "temperature", "max_tokens", "prefix", "dimensions", "stream"]
    assert all(prop["description"] for prop in props.values())
    assert props["model"]["enum"] == ["echo-1", "echo-mini"]
    assert props["model"]["default"] == "echo-1"
    assert props["system"] == {
        "description": props["system"]["description"],
        "type": "array",
        "items": {"type": "string"},
    }
    assert (props["temperature"]["minimum"], props["temperature"]["maximum"]) == (0, 2)
    assert (props["max_tokens"]["type"], props["max_tokens"]["minimum"]) == ("integer", 1)
    assert props["prefix"]["default"] == "echo: "
    assert (
        props["dimensions"]["minimum"],
        props["dimensions"]["maximum"],
        props["dimensions"]["default"],
    ) == (1, 4096, 256)
    assert props["stream"]["type"] == "boolean"


@pytest.mark.parametrize("kind", KINDS)
def test_echo_from_config_echoes_a_valid_config_byte_for_byte(load: Callable[..., Runner], kind: str) -> None:
    cfg = (
        b'{"model":"echo-mini","system":["be brief"],"temperature":0.50,"max_tokens":5,'
        b'"prefix":">> ","dimensions":8,"stream":null}'
    )
    assert load("echo", kind).call("from_config", cfg) == cfg


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("cfg", "field"),
    [
        ({"model": "echo-1", "allowed_hosts": ["x"]}, "unknown field `allowed_hosts`"),
        ({"max_tokens": "ten"}, "cfg.max_tokens"),
        ({"max_tokens": 0}, "cfg.max_tokens"),
        ({"max_tokens": 2.5}, "cfg.max_tokens"),
        ({"temperature": 3}, "cfg.temperature"),
        ({"model": "gpt-4o"}, "cfg.model"),
        ({"system": ["a", 1]}, "cfg.system"),
        ({"dimensions": 5000}, "cfg.dimensions"),
        ({"stream": "yes"}, "cfg.stream"),
    ],
)
def test_echo_rejects_bad_configs_with_a_json_error_naming_the_field(
    load: Callable[..., Runner], kind: str, cfg: dict[str, Any], field: str
) -> None:
    echo = load("echo", kind)
    for op, data in [("from_config", cfg), ("chat", chat_request(cfg=cfg)), ("list_models", cfg)]:
        with pytest.raises(OpError) as failure:
            echo.call(op, json.dumps(data))
        assert failure.value.payload()["type"] == "json_error"
        assert field in failure.value.payload()["message"]
        assert failure.value.code in (None, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_echo_chat_reply(load: Callable[..., Runner], kind: str) -> None:
    request = chat_request(
        messages=[
            {"role": "User", "content": [{"type": "text", "text": "first question"}]},
            {"role": "Assistant", "content": [{"type": "text", "text": "an answer"}]},
            {
                "role": "User",
                "content": [{"type": "text", "text": "say "}, {"type": "text", "text": "this  twice"}],
            },
        ]
    )
    expected = (
        b'{"text":"echo: say this  twice","tool_calls":null,"thinking":null,'
        b'"usage":{"input_tokens":7,"output_tokens":4,"reasoning_tokens":0,"cache_read":0,"cache_write":0},'
        b'"finish_reason":"Stop"}'
    )
    assert load("echo", kind).call("chat", json.dumps(request, separators=(",", ":"))) == expected


@pytest.mark.parametrize("kind", KINDS)
def test_echo_chat_max_tokens_cuts_words_and_reports_length(load: Callable[..., Runner], kind: str) -> None:
    echo = load("echo", kind)
    cut = echo.json("chat", chat_request("one two\tthree four", cfg={"max_tokens": 3, "prefix": ""}))
    assert (cut["text"], cut["finish_reason"], cut["usage"]) == ("one two\tthree", "Length", usage(4, 3))
    exact = echo.json("chat", chat_request("one two three ", cfg={"max_tokens": 3, "prefix": ""}))
    assert (exact["text"], exact["finish_reason"]) == ("one two three ", "Stop")
    prefixed = echo.json("chat", chat_request("a b c", cfg={"max_tokens": 2, "prefix": "> "}))
    assert (prefixed["text"], prefixed["usage"]) == ("> a b", usage(3, 3))  # the prefix is not limited


@pytest.mark.parametrize("kind", KINDS)
def test_echo_chat_without_a_user_message_replies_with_the_prefix(
    load: Callable[..., Runner], kind: str
) -> None:
    reply = load("echo", kind).json("chat", chat_request(messages=[]))
    assert (reply["text"], reply["usage"]) == ("echo: ", usage(0, 1))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"cfg": {}, "messages": [{"role": "user", "content": []}], "tools": None}, "unknown variant `user`"),
        ({"cfg": {}, "tools": None}, "missing field `messages`"),
        ({"messages": [], "tools": None}, "missing field `cfg`"),
        (
            {"cfg": {}, "messages": [{"role": "User", "content": "hi"}]},
            "messages[0]: `content` must be an array",
        ),
        (
            {"cfg": {}, "messages": [{"role": "User", "content": [{"type": "video"}]}]},
            "unknown content type `video`",
        ),
        ({"cfg": {}, "messages": [{"role": "User", "content": [{"type": "text"}]}]}, "need a string `text`"),
        ({"cfg": {}, "messages": [], "tools": {}}, "`tools` must be an array or null"),
        ("not json", "invalid JSON: expected value at byte 0"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_echo_chat_rejects_bad_requests(
    load: Callable[..., Runner], kind: str, request_: Any, message: str
) -> None:
    data = request_ if isinstance(request_, str) else json.dumps(request_)
    with pytest.raises(OpError) as failure:
        load("echo", kind).call("chat", data)
    assert failure.value.payload()["type"] == "json_error"
    assert message in failure.value.payload()["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_echo_chat_stream_chunks_concatenate_to_the_chat_text(load: Callable[..., Runner], kind: str) -> None:
    host = RecordingHost()
    echo = load("echo", kind, host)
    request = chat_request("  lead\nand  trailing  ", cfg={"prefix": "", "stream": True})
    reply = echo.json("chat", request)
    assert echo.call("chat_stream", json.dumps(request)) == b""
    chunks = [json.loads(chunk) for chunk in host.chunks]
    texts = [chunk["chunk"]["text"] for chunk in chunks[:-2]]
    assert texts == ["  lead\n", "and  ", "trailing  "]
    assert "".join(texts) == reply["text"]
    assert all(chunk["usage"] is None for chunk in chunks[:-2])
    assert chunks[-2] == {"chunk": {"usage": reply["usage"]}, "usage": reply["usage"]}
    assert chunks[-1] == {"chunk": {"done": {"finish_reason": "Stop"}}, "usage": None}
    assert host.chunks[0] == b'{"chunk":{"text":"  lead\\n"},"usage":null}'


@pytest.mark.parametrize("kind", KINDS)
def test_echo_chat_stream_ends_with_length_when_cut(load: Callable[..., Runner], kind: str) -> None:
    host = RecordingHost()
    load("echo", kind, host).call("chat_stream", json.dumps(chat_request("a b c d", cfg={"max_tokens": 2})))
    chunks = [json.loads(chunk) for chunk in host.chunks]
    assert [chunk["chunk"]["text"] for chunk in chunks[:-2]] == ["echo: ", "a ", "b"]
    assert chunks[-1]["chunk"] == {"done": {"finish_reason": "Length"}}


@pytest.mark.parametrize("kind", KINDS)
def test_echo_complete(load: Callable[..., Runner], kind: str) -> None:
    echo = load("echo", kind)

    def complete(prompt: str, max_tokens: int | None = None, cfg: dict[str, Any] | None = None) -> bytes:
        req = {"prompt": prompt, "suffix": None, "max_tokens": max_tokens, "temperature": 0.2}
        return echo.call("complete", json.dumps({"cfg": cfg or {}, "req": req}))

    assert complete("the quick\nfox", 7) == b'{"text":" the quick fox the quick fox the"}'
    assert complete("a b") == b'{"text":"' + b" a b" * 8 + b'"}'  # 16 words by default
    assert complete("a b", cfg={"max_tokens": 3}) == b'{"text":" a b a"}'
    assert complete("   ", 5) == b'{"text":""}'
    assert complete("x", 0) == b'{"text":""}'
    with pytest.raises(OpError) as failure:
        complete("x", -1)
    assert "req.max_tokens" in failure.value.payload()["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_echo_embed_exact_output(load: Callable[..., Runner], kind: str) -> None:
    output = load("echo", kind).call("embed", '{"cfg":{"dimensions":8},"inputs":["hello",""]}')
    assert output == b"[[0.0,0.0,0.0,0.0,-0.4472136,0.0,0.8944272,0.0],[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]]"


@pytest.mark.parametrize("kind", KINDS)
def test_echo_embed_vectors_are_unit_length_deterministic_and_text_dependent(
    load: Callable[..., Runner], kind: str
) -> None:
    echo = load("echo", kind)
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quantum chromodynamics", "é😀", "x"]
    output = echo.call("embed", json.dumps({"cfg": {}, "inputs": texts}))
    vectors = json.loads(output)
    assert [len(v) for v in vectors] == [256] * len(texts)
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-5) for v in vectors)
    similarity = [sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:3]]
    assert similarity[0] > 0.5 > similarity[1]  # near texts share trigrams
    assert echo.call("embed", json.dumps({"cfg": {}, "inputs": texts})) == output
    for token in re.findall(rb"-?[0-9][^,\]]*", output):  # the shortest form that reads back as the f32
        assert token.decode() == str(np.float32(token.decode()))


@pytest.mark.parametrize("kind", KINDS)
def test_echo_embed_rejects_non_string_inputs(load: Callable[..., Runner], kind: str) -> None:
    with pytest.raises(OpError) as failure:
        load("echo", kind).call("embed", '{"cfg":{},"inputs":["a",3]}')
    assert failure.value.payload() == {"type": "json_error", "message": "inputs[1]: expected a string"}


def test_both_builds_give_identical_bytes(load: Callable[..., Runner]) -> None:
    wasm, native = load("echo", "wasm"), load("echo", "native")
    long_text = " ".join(f"word{i} ünïcödé 😀" for i in range(500))
    cases = [
        ("config_schema", "null"),
        ("list_models", "{}"),
        ("chat", json.dumps(chat_request('Hello, "world"\n\t\u0001 😀', cfg={"max_tokens": 4}))),
        ("chat", json.dumps(chat_request(long_text))),
        (
            "complete",
            json.dumps(
                {
                    "cfg": {},
                    "req": {"prompt": long_text, "suffix": None, "max_tokens": 40, "temperature": None},
                }
            ),
        ),
        ("embed", json.dumps({"cfg": {"dimensions": 4096}, "inputs": [long_text, "a", "", "ab"]})),
        ("embed", json.dumps({"cfg": {"dimensions": 3}, "inputs": ["short", "texts", "with collisions"]})),
    ]
    for op, data in cases:
        assert wasm.call(op, data) == native.call(op, data), op


# ---- JSON edge cases, through echo and through the JSON tool ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_unicode_escapes_and_surrogate_pairs_decode_to_utf8(load: Callable[..., Runner], kind: str) -> None:
    text = r'"caf\u00e9 \ud83d\ude00 \u20ac\/\"\\\n"'
    data = (
        '{"cfg":{"prefix":""},"messages":[{"role":"User","content":[{"type":"text","text":' + text + "}]}]}"
    )
    output = load("echo", kind).call("chat", data)
    assert 'café 😀 €/"\\\n'.encode() in json.loads(output)["text"].encode()
    assert '"text":"café 😀 €/\\"\\\\\\n"'.encode() in output  # UTF-8 passes through, specials are escaped


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (rb'"\ud83d"', "lone leading surrogate in \\u escape at byte"),
        (rb'"\ude00x"', "lone trailing surrogate in \\u escape at byte"),
        (rb'"\ud83d\u0041"', "lone leading surrogate"),
        (rb'"\u12G4"', "invalid \\u escape at byte"),
        (rb'"\x"', "invalid escape at byte"),
        (b'"\xff"', "invalid UTF-8 in string at byte"),
        (b'"\xc0\xaf"', "invalid UTF-8 in string"),  # overlong '/'
        (b'"\xed\xa0\x80"', "invalid UTF-8 in string"),  # an encoded surrogate
        (b'"a\x01b"', "control character in string at byte"),
    ],
)
def test_bad_strings_are_json_errors(
    load: Callable[..., Runner], kind: str, text: bytes, message: str
) -> None:
    data = b'{"cfg":{},"messages":[{"role":"User","content":[{"type":"text","text":' + text + b"}]}]}"
    with pytest.raises(OpError) as failure:
        load("echo", kind).call("chat", data)
    assert message in failure.value.payload()["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_nested_content_is_walked_but_only_text_blocks_count(load: Callable[..., Runner], kind: str) -> None:
    content = [
        {
            "type": "tool_result",
            "id": "t1",
            "is_error": False,
            "content": [{"type": "text", "text": "nested not counted"}],
        },
        {
            "type": "tool_use",
            "id": "t2",
            "name": "f",
            "arguments": {"deep": [{"deeper": [[1, {"x": None}]]}]},
        },
        {"type": "image", "mime_type": "image/png", "data": [1, 2, 3]},
        {"type": "text", "text": "kept"},
    ]
    tools = [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]
    reply = load("echo", kind).json(
        "chat", chat_request(messages=[{"role": "User", "content": content}], tools=tools)
    )
    assert (reply["text"], reply["usage"]["input_tokens"]) == ("echo: kept", 1)


@pytest.mark.parametrize("kind", KINDS)
def test_every_truncation_is_a_clean_error(load: Callable[..., Runner], kind: str) -> None:
    echo = load("echo", kind)
    full = json.dumps(
        chat_request('caf\u00e9 "q" 😀', cfg={"max_tokens": 12, "temperature": 0.5}), ensure_ascii=True
    ).encode()
    for n in range(len(full)):
        with pytest.raises(OpError) as failure:
            echo.call("chat", full[:n])
        assert failure.value.payload()["message"] == f"invalid JSON: unexpected end of input at byte {n}"
    echo.call("chat", full)


@pytest.mark.parametrize("kind", KINDS)
def test_nesting_is_limited_to_128_levels(load: Callable[..., Runner], kind: str) -> None:
    echo = load("echo", kind)

    def with_tools(depth: int) -> str:  # the root object is level 1, "tools" level 2
        return '{"cfg":{},"messages":[],"tools":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    echo.call("chat", with_tools(128))
    with pytest.raises(OpError) as failure:
        echo.call("chat", with_tools(129))
    assert "nesting deeper than 128 levels" in failure.value.payload()["message"]
    with pytest.raises(OpError):
        echo.call("chat", "[" * 100_000)  # no stack overflow


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unexpected end of input at byte 0"),
        ("  ", "unexpected end of input at byte 2"),
        ("{} x", "trailing characters at byte 3"),
        ('{"a" 1}', "expected ':' at byte 5"),
        ('{"a":1,}', "expected string key at byte 7"),
        ("[1,]", "expected value at byte 3"),
        ("[1 2]", "expected ',' or ']' at byte 3"),
        ("01", "trailing characters at byte 1"),
        ("-", "unexpected end of input at byte 1"),
        ("1.", "unexpected end of input at byte 2"),
        ("1.e5", "invalid number at byte 2"),
        ("1e400", "number out of range at byte 0"),
        ("nul", "unexpected end of input at byte 3"),
        ("nulx", "expected value at byte 0"),
        ('["a\\', "unexpected end of input at byte 4"),
    ],
)
def test_parser_error_messages_give_the_byte_offset(json_tool: Path, text: str, message: str) -> None:
    tool = Runner(json_tool, "native", RecordingHost())
    with pytest.raises(OpError) as failure:
        tool.call("reformat", text)
    assert failure.value.payload() == {"type": "json_error", "message": message}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.2", "0.2"),
        ("1.25", "1.25"),
        ("3", "3"),
        ("3.0", "3"),
        ("-0.0", "-0"),
        ("1e2", "100"),
        ("123456789012345678", "1.2345678901234568e17"),
        ("0.1e-6", "1e-7"),
        ("1e300", "1e300"),
        ("2.2250738585072014e-308", "2.2250738585072014e-308"),
        ("0.30000000000000004", "0.30000000000000004"),
        ("-12.5E+1", "-125"),
        ('"\\u0000\\u001f\\u007f"', '"\\u0000\\u001f\x7f"'),
        ('{"a":[true,false,null,{}],"b":[]}', '{"a":[true,false,null,{}],"b":[]}'),
        (' [ 1 , "x" ] ', '[1,"x"]'),
    ],
)
def test_writer_round_trips_in_shortest_form(json_tool: Path, text: str, expected: str) -> None:
    output = Runner(json_tool, "native", RecordingHost()).call("reformat", text).decode()
    assert output == expected
    assert json.loads(output, parse_int=float) == json.loads(text, parse_int=float)


def test_floats_are_written_the_way_serde_writes_f32(json_tool: Path) -> None:
    output = Runner(json_tool, "native", RecordingHost()).call(
        "floats", "[0.2, 1, -0.5, 0.1, 16777216, 1e-7, 3.4e38, 0, -0.0]"
    )
    assert output == b"0.2 1.0 -0.5 0.1 16777216.0 1e-7 3.4e38 0.0 -0.0"


def test_byte_arrays_and_lookups(json_tool: Path) -> None:
    tool = Runner(json_tool, "native", RecordingHost())
    assert tool.call("bytes", "[104,105,0,255]") == b"hi\x00\xff"
    for bad in ["[256]", "[1.0]", "[-1]", '["a"]', "{}"]:
        with pytest.raises(OpError):
            tool.call("bytes", bad)
    assert tool.call("get", '[{"k":1,"k":2},"k"]') == b"2"  # the last duplicate wins, as in serde_json::Value
    assert tool.call("get", '[{"k":1},"missing"]') == b"null"


# ---- native loader ----------------------------------------------------------------------------


def zig_shared_library(folder: Path, name: str, code: str) -> Path:
    source, library = folder / f"{name}.c", folder / f"lib{name}.so"
    source.write_text(code)
    command = [sys.executable, "-m", "ziglang", "cc", "-shared", "-fPIC", "-o", str(library), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    return library


@pytest.mark.skipif(sys.platform != "linux", reason="the fixtures are built as Linux shared objects")
class TestNativeLoaderErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(PluginLoadError, match="file not found"):
            load_native(tmp_path / "libnothing.so", RecordingHost(), plugin="nothing")

    def test_unloadable_file_reports_the_os_message(self, tmp_path: Path) -> None:
        (tmp_path / "libjunk.so").write_bytes(b"not an ELF file")
        with pytest.raises(PluginLoadError, match=r"cannot load the shared library: .*libjunk\.so") as error:
            load_native(tmp_path / "libjunk.so", RecordingHost(), plugin="junk")
        assert not isinstance(error.value, AbiMismatchError)

    def test_plain_library(self, tmp_path: Path) -> None:
        library = zig_shared_library(tmp_path, "plain", "int add(int a, int b) { return a + b; }")
        with pytest.raises(AbiMismatchError) as error:
            load_native(library, RecordingHost(), plugin="plain")
        assert "not a querymt-jupyter native plugin: symbol qmt_abi_version missing" in str(error.value)
        assert "Rust" not in str(error.value)

    def test_querymt_rust_plugin(self, tmp_path: Path) -> None:
        library = zig_shared_library(tmp_path, "rusty", "void *plugin_http_factory(void) { return 0; }")
        with pytest.raises(AbiMismatchError) as error:
            load_native(library, RecordingHost(), plugin="rusty")
        message = str(error.value)
        assert "not a querymt-jupyter native plugin" in message
        assert "QueryMT Rust native plugin, which cannot be loaded from Python" in message
        assert "rebuild it against querymt_plugin.h" in message

    def test_wrong_abi_version(self, tmp_path: Path) -> None:
        code = "unsigned qmt_abi_version(void) { return 2; }\nint qmt_call(void) { return 0; }"
        library = zig_shared_library(tmp_path, "future", code)
        with pytest.raises(AbiMismatchError, match="ABI version 2"):
            load_native(library, RecordingHost(), plugin="future")

    def test_failing_init(self, tmp_path: Path) -> None:
        code = (
            "#include <stdint.h>\nuint32_t qmt_abi_version(void) { return 1; }\n"
            'const char *qmt_exports(void) { return "[]"; }\nint32_t qmt_init(const void *h) { return 7; }\n'
            "int32_t qmt_call(void) { return 0; }\nvoid qmt_free(void *p) {}\n"
        )
        library = zig_shared_library(tmp_path, "grumpy", code)
        with pytest.raises(PluginLoadError, match="qmt_init failed with code 7"):
            load_native(library, RecordingHost(), plugin="grumpy")


def test_unknown_operation_and_closed_plugin(load: Callable[..., Runner]) -> None:
    echo = load("echo", "native")
    with pytest.raises(OpError) as failure:
        echo.call("teleport", b"")
    assert (failure.value.code, failure.value.message) == (-2, "unknown operation: teleport")
    echo.native.close()
    with pytest.raises(PluginCallError, match="closed"):
        echo.native.call("noop", b"")


def test_two_instances_of_one_library_keep_their_own_host(artifacts: dict[tuple[str, str], Path]) -> None:
    hosts = [RecordingHost(), RecordingHost()]
    first, second = (load_native(artifacts["probe", "native"], host, plugin="probe") for host in hosts)
    for plugin in (first, second):
        plugin.call("init_logging", b"1")
        plugin.call("embed", b"null")
    assert [len(host.logs) for host in hosts] == [1, 1]
    first.close()
    second.close()
    again_host = RecordingHost()
    again = load_native(artifacts["probe", "native"], again_host, plugin="probe")
    again.call("init_logging", b"1")
    again.call("embed", b"null")
    assert len(again_host.logs) == 1
    again.close()


# ---- host functions, through probe ---------------------------------------------------------------

PROBE_CHAT = json.dumps({"cfg": {"base_url": "http://127.0.0.1:9"}, "messages": [], "tools": None})
OK_RESPONSE = json.dumps(
    {
        "resp": {
            "head": {"status": 200, "headers": {}, "version": "HTTP/1.1"},
            "body": list(b"hello \xffthere"),
        }
    }
).encode()


@pytest.mark.parametrize("kind", KINDS)
def test_probe_logs_one_record_per_level_up_to_the_configured_level(
    load: Callable[..., Runner], kind: str
) -> None:
    host = RecordingHost()
    probe = load("probe", kind, host)
    probe.call("embed")
    assert host.logs == []  # logging is off until init_logging
    probe.call("init_logging", b"5")
    assert probe.call("embed") == b"[[0.0]]"
    names = ["error", "warn", "info", "debug", "trace"]
    assert host.logs == [
        json.dumps(
            {"level": n, "target": "probe", "message": f"{names[n - 1]} record"}, separators=(",", ":")
        ).encode()
        for n in range(1, 6)
    ]
    host.logs.clear()
    probe.call("init_logging", b"2")
    probe.call("embed")
    assert len(host.logs) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_probe_chat_sends_a_get_and_reports_the_response(load: Callable[..., Runner], kind: str) -> None:
    host = RecordingHost(response=OK_RESPONSE)
    reply = load("probe", kind, host).json("chat", json.loads(PROBE_CHAT))
    assert reply == {
        "text": "200 hello \ufffdthere",
        "tool_calls": None,
        "thinking": None,
        "usage": None,
        "finish_reason": "Stop",
    }
    assert json.loads(host.requests[0]) == {
        "req": {
            "head": {
                "method": "GET",
                "uri": "http://127.0.0.1:9/probe",
                "headers": {},
                "version": "HTTP/1.1",
            },
            "body": [],
        }
    }


@pytest.mark.parametrize("kind", KINDS)
def test_probe_chat_stream_relays_every_chunk(load: Callable[..., Runner], kind: str) -> None:
    host = RecordingHost(stream=(b"data: 1\n", b"data: \xc3\xa9\n"))
    assert load("probe", kind, host).call("chat_stream", PROBE_CHAT) == b""
    assert [json.loads(chunk)["chunk"] for chunk in host.chunks] == [
        {"text": "data: 1\n"},
        {"text": "data: é\n"},
        {"done": {"finish_reason": "Stop"}},
    ]
    assert host.closed == [1]
    assert set(host.next_ids) == {1}


@pytest.mark.parametrize("kind", KINDS)
def test_probe_stream_open_error_fails_with_the_plugin_error(load: Callable[..., Runner], kind: str) -> None:
    plugin_error = '{"payload":{"type":"rate_limited","message":"Too many requests","retry_after_secs":30}}'
    result = json.dumps({"status": "error", "plugin_error": plugin_error, "error_code": 1}).encode()
    host = RecordingHost(open_result=result)
    with pytest.raises(OpError) as failure:
        load("probe", kind, host).call("chat_stream", PROBE_CHAT)
    assert failure.value.message == plugin_error
    assert failure.value.code in (None, 1)
    assert host.chunks == []


@pytest.mark.parametrize("kind", KINDS)
def test_probe_stream_cancelled_yields_done(load: Callable[..., Runner], kind: str) -> None:
    host = RecordingHost(open_result=b'{"status":"cancelled"}')
    load("probe", kind, host).call("chat_stream", PROBE_CHAT)
    assert [json.loads(chunk)["chunk"] for chunk in host.chunks] == [{"done": {"finish_reason": "Stop"}}]


def test_native_host_refusal_fails_the_call_with_its_text(
    load: Callable[..., Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = RecordingHost()
    probe = load("probe", "native", host)

    def refuse(_request: bytes) -> bytes:
        raise HostRefusal("Host '127.0.0.1' not in allowlist")

    monkeypatch.setattr(host, "http_request", refuse)
    with pytest.raises(OpError) as failure:
        probe.call("chat", PROBE_CHAT)
    assert (failure.value.code, failure.value.message) == (-1, "Host '127.0.0.1' not in allowlist")

    def crash(_request: bytes) -> bytes:
        raise RuntimeError("boom")

    monkeypatch.setattr(host, "http_stream_open", crash)
    with pytest.raises(OpError) as failure:
        probe.call("chat_stream", PROBE_CHAT)
    assert (failure.value.code, failure.value.message) == (-1, "RuntimeError: boom")


def test_native_stream_next_failure_closes_the_stream(
    load: Callable[..., Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = RecordingHost(stream=(b"first",))
    probe = load("probe", "native", host)
    original = host.http_stream_next

    def next_then_fail(stream_id: int) -> bytes:
        if host.pending:
            return original(stream_id)
        raise HostRefusal("Stream error: connection reset")

    monkeypatch.setattr(host, "http_stream_next", next_then_fail)
    with pytest.raises(OpError) as failure:
        probe.call("chat_stream", PROBE_CHAT)
    assert failure.value.message == "Stream error: connection reset"
    assert host.closed == [1]
    assert len(host.chunks) == 1


def test_files_are_readable_natively_but_not_from_wasm(load: Callable[..., Runner], tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    request = json.dumps(
        {"cfg": {}, "req": {"prompt": str(secret), "suffix": None, "max_tokens": None, "temperature": None}}
    )
    assert load("probe", "native").json("complete", json.loads(request)) == {"text": "top secret\n"}
    with pytest.raises(OpError) as failure:
        load("probe", "wasm").call("complete", request)
    assert failure.value.payload()["type"] == "io_error"
    assert str(secret) in failure.value.payload()["message"]


# ---- build.py -----------------------------------------------------------------------------------


def test_build_cache_hit_does_not_recompile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QUERYMT_JUPYTER_CACHE", str(tmp_path))
    first = build.bundled_plugin("echo", "native")
    assert "building echo (native) with zig cc" in capsys.readouterr().err
    assert first.is_relative_to(tmp_path / "build")
    assert first.name.startswith("libecho.")
    second = build.bundled_plugin("echo", "native")
    assert second == first
    assert capsys.readouterr().err == ""
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind


def test_build_failure_raises_build_error_with_output_and_command(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int broken( { return 0; }\n")
    with pytest.raises(BuildError) as error:
        build_plugin(source, "native", out_dir=tmp_path)
    message = str(error.value)
    assert "zig cc failed to build broken.c (native)" in message
    assert "broken.c:1" in message
    assert "command: " in message
    assert "ziglang cc" in message


def test_wasm_build_refuses_imports_no_host_provides(tmp_path: Path) -> None:
    source = tmp_path / "dangling.c"
    source.write_text(
        '#include "querymt_plugin.h"\nint nowhere(void);\n'
        "static int32_t op_name(qmt_slice in, qmt_buf *out) {\n"
        '    (void)in; qmt_buf_printf(out, "%d", nowhere()); return 0;\n}\n'
        "#define OPS(X) X(name, op_name)\nQMT_PLUGIN(OPS)\n"
    )
    with pytest.raises(BuildError, match="nowhere"):
        build_plugin(source, "wasm", out_dir=tmp_path)


def test_bundled_plugin_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"bundled plugins: .*echo"):
        build.bundled_plugin("nope", "native")
