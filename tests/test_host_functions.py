"""The six host functions (wire spec 8-10) end to end through ``PluginRegistry``, in both builds.

tests/plugins/probe.c is a generation-B plugin that does its HTTP through the host: ``chat`` is one
``qmt_http_request`` (the reply text is "<status> <body>"), ``chat_stream`` relays every
``qmt_http_stream_next`` chunk as a text chunk, ``embed`` logs one record per level, ``complete`` reads a
file. It is loaded from a plugins.toml in tmp_path as ``probe`` (native and Wasm builds), and the echo
plugin is used for the serialisation tests. Servers: the loopback OpenAI server, plus a tiny stdlib
server for chunked GET streams. All traffic goes to 127.0.0.1; client reads time out after 10 s and
every loop and join is bounded.
"""

from __future__ import annotations

import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from querymt_jupyter import (
    HostBlockedError,
    HttpStatusError,
    LLMError,
    PluginCallError,
    PluginRegistry,
    RateLimitedError,
    TransportError,
    wire,
)
from querymt_jupyter.factory import PluginFactory
from querymt_jupyter.loaders.base import HostRefusal
from querymt_jupyter.loopback import LoopbackOpenAI
from querymt_jupyter.provider import ProviderBuilder

KINDS = ("wasm", "native")
MAX_CHUNKS = 500  # a bound on every stream loop below
JOIN_TIMEOUT = 30.0


# ---- a tiny chunked-GET server --------------------------------------------------------------------------


class StreamServer:
    """HTTP/1.1 on 127.0.0.1. ``GET /stream?n=N&delay=S`` sends N chunks ``piece-<i>\\n`` S seconds apart
    (chunked encoding, each flushed); ``GET /drop?n=N`` does the same, then hangs up before the end of the
    body; ``GET /text`` answers ``plain text``. Records every path."""

    def __init__(self) -> None:
        owner = self
        self.paths: list[str] = []
        self.pieces_sent = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                with owner._lock:
                    owner.paths.append(self.path)
                url = urlsplit(self.path)
                if url.path in ("/stream", "/drop"):
                    query = parse_qs(url.query)
                    self._stream(int(query["n"][0]), float(query.get("delay", ["0"])[0]), url.path == "/drop")
                else:
                    body = b"plain text"
                    self.send_response(200)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def _stream(self, n: int, delay: float, drop: bool) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                try:
                    for i in range(n):
                        if i and delay:
                            time.sleep(delay)
                        piece = f"piece-{i}\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        with owner._lock:
                            owner.pieces_sent += 1
                    if drop:  # hang up without the last chunk: the client sees the body cut short
                        self.close_connection = True
                        return
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    self.close_connection = True  # the client went away

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# ---- fixtures and helpers -------------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def toml_config(providers: dict[str, tuple[str, dict[str, Any]]]) -> str:
    """plugins.toml text; JSON string/list literals are valid TOML values."""
    lines = []
    for name, (path, config) in providers.items():
        lines += ["[[providers]]", f"name = {json.dumps(name)}", f"path = {json.dumps(path)}"]
        if config:
            lines.append("[providers.config]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def registry_of(tmp_path: Path) -> Iterator[Callable[[dict[str, tuple[str, dict[str, Any]]]], PluginRegistry]]:
    """``registry_of({name: (path, config)})``: a fresh registry with bounded client timeouts."""
    registries: list[PluginRegistry] = []

    def make(providers: dict[str, tuple[str, dict[str, Any]]]) -> PluginRegistry:
        path = tmp_path / f"plugins-{len(registries)}.toml"
        path.write_text(toml_config(providers))
        registry = PluginRegistry.from_path(path)
        registry.client.timeout = httpx.Timeout(10.0)
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        registry.close()


@pytest.fixture
def load(registry_of, probe_builds: dict[str, Path], kind: str) -> Callable[..., PluginFactory]:
    """``load(**config)``: the ``probe`` provider of a fresh registry, in this test's build."""

    def make(**config: Any) -> PluginFactory:
        factory = registry_of({"probe": (str(probe_builds[kind]), config)})["probe"]
        assert (factory.plugin_type, factory.generation) == (kind, "B")
        return factory

    return make


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(models=["m-one", "m-two"]) as s:
        yield s


@pytest.fixture
def streamer() -> Iterator[StreamServer]:
    s = StreamServer()
    yield s
    s.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> bytes:
    return wire.HttpRequest("GET", url, [], b"").to_wire()


def bounded(stream: Iterator[Any]) -> list[Any]:
    chunks = list(itertools.islice(stream, MAX_CHUNKS))
    assert len(chunks) < MAX_CHUNKS, "the stream did not end"
    return chunks


def record_calls(monkeypatch: pytest.MonkeyPatch, host: Any, name: str) -> list[tuple[Any, Any]]:
    """Wrap one host function of ``host`` (Wasm and native both look it up on the object per call)."""
    seen: list[tuple[Any, Any]] = []
    original = getattr(host, name)

    def wrapper(arg: Any) -> Any:
        result = original(arg)
        seen.append((arg, result))
        return result

    monkeypatch.setattr(host, name, wrapper)
    return seen


def run_threads(target: Callable[[int], None], count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a thread did not finish in time"
    return errors


# ---- qmt_http_request (checklist 8, 10, 12) ------------------------------------------------------------------


def test_http_request_reaches_the_server_and_returns_status_and_body(load, server) -> None:
    factory = load(base_url=server.url, path="/v1/models")
    text = ProviderBuilder(factory).build().chat("x").text
    status, _, body = text.partition(" ")
    assert status == "200"
    assert [m["id"] for m in json.loads(body)["data"]] == ["m-one", "m-two"]
    (recorded,) = server.requests
    assert (recorded.method, recorded.path, recorded.body) == ("GET", "/v1/models", b"")


def test_a_non_2xx_response_is_passed_to_the_plugin_unchanged(load, server) -> None:
    provider = ProviderBuilder(load(base_url=server.url, path="/v1/models")).build()
    server.fail_next(429, message="slow down")
    text = provider.chat("x").text  # probe reports what it got; classifying is the plugin's business
    assert text.startswith("429 ")
    assert json.loads(text[4:])["error"]["message"] == "slow down"
    assert provider.chat("x").text.startswith("200 ")


def test_a_blocked_host_raises_host_blocked_without_network_io(load, server) -> None:
    # base_url's host (localhost) is allowed; probe appends `path`, whose userinfo trick sends the request
    # to 127.0.0.1 instead — where the server is, so a request that got through would be recorded.
    escape = f"@127.0.0.1:{server.port}/v1/models"
    factory = load(base_url=f"http://localhost:{server.port}", path=escape)
    assert factory.allowed_hosts == ["localhost"]
    provider = ProviderBuilder(factory).build()
    for attempt in (lambda: provider.chat("x"), lambda: bounded(provider.chat_stream("x"))):
        with pytest.raises(HostBlockedError) as failure:
            attempt()
        assert (failure.value.host, failure.value.allowed) == ("127.0.0.1", ["localhost"])
        assert 'add "127.0.0.1" to allowed_hosts' in str(failure.value)
    assert server.requests == []
    # the control: allowing 127.0.0.1 lets the very same request through
    allowed = load(base_url=f"http://localhost:{server.port}", path=escape, allowed_hosts=["127.0.0.1"])
    assert ProviderBuilder(allowed).build().chat("x").text.startswith("200 ")
    assert [r.path for r in server.requests] == ["/v1/models"]


def test_the_blocked_response_is_the_golden_403(load, server, golden) -> None:
    factory = load(base_url=server.url)
    assert factory.host.http_request(get("https://evil.example/v1/models")) == golden[
        "serializable_http_response_blocked_403"
    ]["wire"].encode()
    assert isinstance(factory.host.take_error(), HostBlockedError)
    with pytest.raises(HostRefusal, match="Host 'evil.example' not in allowlist"):  # checklist 9: a trap
        factory.host.http_stream_open(get("https://evil.example/v1/models"))
    assert server.requests == []


def test_an_empty_allow_list_allows_every_host(registry_of, probe_builds, kind, server) -> None:
    """Checklist 10. Without a base_url in the config the list is empty (probe has no base_url export)."""
    factory = registry_of({"probe": (str(probe_builds[kind]), {})})["probe"]
    assert factory.allowed_hosts == []
    assert factory.host.allow.permits("https://any.example/") and factory.host.allow.permits(server.url)
    provider = ProviderBuilder(factory).base_url(server.url).parameter("path", "/v1/models").build()
    assert provider.chat("x").text.startswith("200 ")


def test_a_transport_failure_is_a_500_with_the_error_text(load) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    factory = load(base_url=base)
    text = ProviderBuilder(factory).build().chat("x").text
    assert text.startswith("500 ") and "refused" in text.lower()
    response = wire.HttpResponse.from_wire(factory.host.http_request(get(f"{base}/x")))
    assert (response.status, response.headers) == (500, [])
    assert response.body.decode() == text[4:]


def test_allowed_hosts_never_reaches_a_generation_b_plugin(load, server, monkeypatch) -> None:
    """Checklist 22 for generation B: the host reads allowed_hosts; the plugin's cfg is pruned."""
    factory = load(base_url=server.url, path="/v1/models", allowed_hosts=["127.0.0.1"])
    inputs: list[bytes] = []
    call = factory.instance.call
    monkeypatch.setattr(factory.instance, "call", lambda op, data: inputs.append(data) or call(op, data))
    provider = ProviderBuilder(factory).temperature(0.5).build()  # a named option its schema lacks: pruned
    assert provider.cfg == {"base_url": server.url, "path": "/v1/models"}
    assert provider.chat("x").text.startswith("200 ")
    assert bounded(provider.chat_stream("x"))[-1].kind == "done"
    assert (provider.embed(["x"]), provider.list_models()) == ([[0.0]], ["probe"])
    assert len(inputs) >= 5 and not [data for data in inputs if b"allowed_hosts" in data or b"temperature" in data]


# ---- qmt_http_stream_open / next / close (checklist 9, 13, 14) -----------------------------------------------


def test_stream_chunks_come_back_in_order(load, streamer, monkeypatch) -> None:
    factory = load(base_url=streamer.url, path="/stream?n=6&delay=0.02")
    closed = record_calls(monkeypatch, factory.host, "http_stream_close")
    chunks = bounded(ProviderBuilder(factory).build().chat_stream("x"))
    assert chunks[-1].kind == "done" and [c.kind for c in chunks[:-1]] == ["text"] * (len(chunks) - 1)
    assert "".join(c.text for c in chunks) == "".join(f"piece-{i}\n" for i in range(6))
    assert len(chunks) > 2  # spaced pieces arrive as separate stream_next blocks
    assert [stream_id for stream_id, _ in closed] == [1]
    assert factory.host._streams == {}


def test_stream_ids_start_at_one_per_instance(registry_of, probe_builds, kind, streamer, monkeypatch) -> None:
    config = {"base_url": streamer.url, "path": "/stream?n=2"}
    registry = registry_of({"probe-a": (str(probe_builds[kind]), config), "probe-b": (str(probe_builds[kind]), config)})
    opened: dict[str, list[tuple[Any, Any]]] = {}
    for name in ("probe-a", "probe-b"):
        factory = registry[name]
        opened[name] = record_calls(monkeypatch, factory.host, "http_stream_open")
    provider_a = registry.builder("probe-a").build()
    for _ in range(3):
        bounded(provider_a.chat_stream("x"))
    bounded(registry.builder("probe-b").build().chat_stream("x"))
    ids = {name: [json.loads(result) for _, result in calls] for name, calls in opened.items()}
    assert ids["probe-a"] == [{"status": "ok", "stream_id": n} for n in (1, 2, 3)]
    assert ids["probe-b"] == [{"status": "ok", "stream_id": 1}]


def test_a_non_2xx_stream_open_is_classified(load, server) -> None:
    provider = ProviderBuilder(load(base_url=server.url, path="/v1/models")).build()
    server.fail_next(429)
    with pytest.raises(RateLimitedError) as limited:
        bounded(provider.chat_stream("x"))
    assert limited.value.retry_after_secs == 30
    assert "Rate limit reached" in str(limited.value)
    server.fail_next(503)
    with pytest.raises(HttpStatusError) as unavailable:
        bounded(provider.chat_stream("x"))
    assert unavailable.value.status_code == 503
    assert bounded(provider.chat_stream("x"))[-1].kind == "done"  # and the next stream is fine


def test_a_stream_open_transport_failure_names_the_url(load) -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    provider = ProviderBuilder(load(base_url=base)).build()
    with pytest.raises(TransportError) as failure:
        bounded(provider.chat_stream("x"))
    assert f"{base}/probe" in str(failure.value)


def test_a_connection_lost_mid_stream_fails_the_stream(load, streamer) -> None:
    """Wire spec 8: a mid-stream transport error is a host-function error, never a quiet end of stream.
    (The Wasm build cannot trap, so its plugin sees an end of stream and may yield done; the call still
    fails once it returns.)"""
    provider = ProviderBuilder(load(base_url=streamer.url, path="/drop?n=3")).build()
    received = []
    with pytest.raises(PluginCallError, match="Stream error") as failure:
        for chunk in itertools.islice(provider.chat_stream("x"), MAX_CHUNKS):
            received.append(chunk)
    assert "".join(c.text for c in received) == "piece-0\npiece-1\npiece-2\n"
    assert failure.value.op == "chat_stream"
    healthy = ProviderBuilder(load(base_url=streamer.url, path="/stream?n=1")).build()
    assert bounded(healthy.chat_stream("x"))[-1].kind == "done"


def test_stream_next_id_zero_is_empty_and_an_unknown_id_is_refused(load, streamer) -> None:
    host = load(base_url=streamer.url).host
    assert host.http_stream_next(0) == b""
    with pytest.raises(HostRefusal, match="Stream 99 not found"):
        host.http_stream_next(99)
    host.http_stream_close(0)  # ignored
    host.http_stream_close(99)  # ignored
    opened = json.loads(host.http_stream_open(get(f"{streamer.url}/stream?n=2")))
    assert opened == {"status": "ok", "stream_id": 1}
    assert host.http_stream_next(1) + host.http_stream_next(1) == b"piece-0\npiece-1\n"
    assert host.http_stream_next(1) == b""  # end of stream: empty, and still registered
    assert host.http_stream_next(1) == b""
    host.http_stream_close(1)
    with pytest.raises(HostRefusal, match="Stream 1 not found"):
        host.http_stream_next(1)


# ---- qmt_log (checklist 29) ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("python_level", "expected"),
    [
        (logging.WARNING, [("error", logging.ERROR), ("warn", logging.WARNING)]),
        (logging.DEBUG, [("error", logging.ERROR), ("warn", logging.WARNING), ("info", logging.INFO),
                         ("debug", logging.DEBUG)]),
        (1, [("error", logging.ERROR), ("warn", logging.WARNING), ("info", logging.INFO), ("debug", logging.DEBUG),
             ("trace", 5)]),  # below DEBUG: the plugin is asked for trace records too
    ],
)  # fmt: skip
def test_plugin_logs_arrive_at_the_mapped_levels(load, server, caplog, python_level, expected) -> None:
    caplog.set_level(python_level, logger="querymt_jupyter.plugin")  # before loading: init_logging reads it
    factory = load(base_url=server.url)
    assert ProviderBuilder(factory).build().embed(["x"]) == [[0.0]]
    records = [r for r in caplog.records if r.name.startswith("querymt_jupyter.plugin.")]
    assert [(r.getMessage(), r.levelno) for r in records] == [
        (f"[extism:probe] {name} record", level) for name, level in expected
    ]
    assert {r.name for r in records} == {"querymt_jupyter.plugin.probe"}  # the record's target
    # the plugin itself filtered at the level init_logging gave it: nothing more was even sent
    assert len(factory.host.logs) == len(expected)


# ---- the sandbox ------------------------------------------------------------------------------------------------


def test_files_are_readable_natively_but_not_from_wasm(load, server, tmp_path, kind) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret\n")
    provider = ProviderBuilder(load(base_url=server.url)).build()
    if kind == "native":
        assert provider.complete(str(secret)).text == "top secret\n"
    else:
        with pytest.raises(LLMError) as failure:
            provider.complete(str(secret))
        assert failure.value.payload["type"] == "io_error"
        assert str(secret) in failure.value.payload["message"]


# ---- cancellation (checklist 27) ----------------------------------------------------------------------------


def test_closing_a_stream_early_cancels_until_the_next_call(load, streamer, golden, monkeypatch) -> None:
    factory = load(base_url=streamer.url, path="/stream?n=40&delay=0.05")
    host = factory.host
    reads = record_calls(monkeypatch, host, "http_stream_next")
    stream = ProviderBuilder(factory).build().chat_stream("x")
    first = next(stream)
    assert (first.kind, first.text) == ("text", "piece-0\n")
    assert not host.cancelled
    stream.close()  # the consumer goes away mid-stream
    assert host.cancelled

    text = get(f"{streamer.url}/text")
    assert host.http_request(text) == golden["serializable_http_response_cancelled_499"]["wire"].encode()
    assert host.http_stream_open(text) == b'{"status":"cancelled"}'
    # A call that is not a generation-B operation (building a provider) does not clear the flag; it
    # also waits for the abandoned chat_stream, which stops at its next stream_next.
    provider = ProviderBuilder(factory).parameter("path", "/text").build()
    assert host.cancelled
    assert host.http_request(text) == golden["serializable_http_response_cancelled_499"]["wire"].encode()
    assert 0 < sum(1 for _, data in reads if data) < 40  # the plugin stopped reading long before the end
    assert reads[-1][1] == b"" and host._streams == {}  # ...with an end of stream, and the stream closed
    assert "/text" not in streamer.paths  # 499 means no request was made

    assert provider.chat("x").text == "200 plain text"  # the next call clears the flag first
    assert not host.cancelled
    assert wire.HttpResponse.from_wire(host.http_request(text)).status == 200


# ---- serialisation (checklist 28) ------------------------------------------------------------------------------


@pytest.fixture
def echoes(registry_of) -> PluginRegistry:
    return registry_of({"echo-wasm": ("bundled:echo.wasm", {}), "echo-native": ("bundled:echo.native", {})})


def test_concurrent_chats_on_one_wasm_instance_are_serialised(echoes) -> None:
    provider = echoes.builder("echo-wasm").build()
    results: dict[tuple[int, int], str | None] = {}

    def chat(n: int) -> None:
        for k in range(15):
            results[n, k] = provider.chat(f"thread {n} message {k}").text

    assert run_threads(chat, 8) == []
    assert results == {(n, k): f"echo: thread {n} message {k}" for n in range(8) for k in range(15)}


@pytest.mark.parametrize("name", ["echo-wasm", "echo-native"])
def test_concurrent_streams_on_one_instance_keep_their_chunks(echoes, name) -> None:
    """echo-native is thread safe, so its calls really overlap: each call's qmt_yield_chunk must still
    reach that call's consumer."""
    assert echoes[name].instance.thread_safe == (name == "echo-native")
    provider = echoes.builder(name).build()
    results: dict[tuple[int, int], str] = {}

    def stream(n: int) -> None:
        for k in range(10):
            results[n, k] = "".join(c.text for c in bounded(provider.chat_stream(f"t{n} m{k} a b c d")))

    assert run_threads(stream, 8) == []
    assert results == {(n, k): f"echo: t{n} m{k} a b c d" for n in range(8) for k in range(10)}


def test_concurrent_http_calls_each_get_their_own_response(load, server) -> None:
    factory = load(base_url=server.url)
    providers = [ProviderBuilder(factory).parameter("path", f"/v1/models/{m}").build() for m in ("m-one", "m-two")]
    results: dict[tuple[int, int], str] = {}

    def chat(n: int) -> None:
        for k in range(3):
            text = providers[n % 2].chat("x").text
            results[n, k] = json.loads(text.partition(" ")[2])["id"]

    assert run_threads(chat, 4) == []
    assert results == {(n, k): ("m-one", "m-two")[n % 2] for n in range(4) for k in range(3)}
    assert len(server.requests) == 12


def test_a_host_refusal_inside_a_call_is_a_plugin_call_error(load, server, monkeypatch) -> None:
    """A host function that refuses (here: qmt_http_request raising) fails the call in both builds with
    the refusal's text: native reports it to the plugin, Wasm records it and raises after the call."""
    factory = load(base_url=server.url, path="/v1/models")
    provider = ProviderBuilder(factory).build()

    def refuse(_request: bytes) -> bytes:
        raise HostRefusal("no requests today")

    monkeypatch.setattr(factory.host, "http_request", refuse)
    with pytest.raises(PluginCallError, match="no requests today"):
        provider.chat("x")
    monkeypatch.undo()
    assert provider.chat("x").text.startswith("200 ")  # the refusal does not outlive its call
