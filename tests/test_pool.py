"""The instance pool: N threads calling one provider at once, and streams that stay on their instance.

Overlap is proven by what a server saw, never by elapsed time: a server that holds every request until
N of them are in flight at once (a barrier) can only answer if the calls really overlap; without a
pool the same server sees the requests strictly one after another. All traffic goes to 127.0.0.1 and
every wait is bounded.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from querymt_jupyter import PluginRegistry
from querymt_jupyter.config import parse_config
from querymt_jupyter.factory import PluginFactory
from querymt_jupyter.loopback import LoopbackOpenAI
from querymt_jupyter.provider import ProviderBuilder

KINDS = ("wasm", "native")
THREADS = 4
WAIT = 10.0  # seconds: the bound on every barrier and join
MAX_CHUNKS = 100


# ---- a server that sees how many requests are in flight -------------------------------------------------


class GateServer:
    """GET anything: answers "ok" once ``parties`` requests are in flight together (None: at once).

    Records each request's (start, end) order in ``events`` and the most requests ever in flight.
    """

    def __init__(self, parties: int | None) -> None:
        self.barrier = threading.Barrier(parties, timeout=WAIT) if parties else None
        self.events: list[tuple[str, int]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._ids = itertools.count()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                number = owner.enter()
                try:
                    if owner.barrier is not None:
                        owner.barrier.wait()
                finally:
                    owner.leave(number)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def enter(self) -> int:
        with self._lock:
            number = next(self._ids)
            self.events.append(("start", number))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return number

    def leave(self, number: int) -> None:
        with self._lock:
            self.events.append(("end", number))
            self.in_flight -= 1

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# ---- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def registry_of() -> Iterator[Callable[..., PluginRegistry]]:
    """``registry_of(toml_text, pool_size=...)``: a registry closed after the test."""
    registries: list[PluginRegistry] = []

    def make(text: str, *, pool_size: int) -> PluginRegistry:
        registry = PluginRegistry(parse_config(text, "toml"), pool_size=pool_size)
        registry.client.timeout = httpx.Timeout(WAIT)
        registries.append(registry)
        return registry

    yield make
    for registry in registries:
        registry.close()


def provider_toml(name: str, plugin: str, **config: Any) -> str:
    lines = ["[[providers]]", f"name = {json.dumps(name)}", f"path = {json.dumps(plugin)}", "[providers.config]"]
    return "\n".join(lines + [f"{key} = {json.dumps(value)}" for key, value in config.items()]) + "\n"


def run_threads(target: Callable[[int], None], count: int) -> list[BaseException]:
    """Run ``target(n)`` on ``count`` threads; the exceptions they raised."""
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 3)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    return errors


# ---- calls overlap inside the plugin (generation B: the plugin does its HTTP during the call) ---------------


def test_a_pool_runs_calls_on_several_instances_at_once(registry_of, probe_builds, kind) -> None:
    gate = GateServer(parties=THREADS)  # answers only when THREADS requests are in flight together
    try:
        text = provider_toml("probe", str(probe_builds[kind]), base_url=gate.url, path="/gate")
        factory = registry_of(text, pool_size=THREADS)["probe"]
        assert not factory.instance.thread_safe and factory.pool_size == THREADS
        provider = ProviderBuilder(factory).build()
        replies: dict[int, str] = {}

        def chat(n: int) -> None:
            replies[n] = provider.chat("x").text

        assert run_threads(chat, THREADS) == []
    finally:
        gate.stop()
    assert replies == {n: "200 ok" for n in range(THREADS)}
    assert gate.max_in_flight == THREADS
    assert len(factory.instances) == THREADS  # one per overlapping call, made on demand


def test_without_a_pool_calls_take_turns(registry_of, probe_builds, kind) -> None:
    gate = GateServer(parties=None)
    try:
        text = provider_toml("probe", str(probe_builds[kind]), base_url=gate.url, path="/turns")
        factory = registry_of(text, pool_size=1)["probe"]
        provider = ProviderBuilder(factory).build()
        assert run_threads(lambda n: provider.chat("x"), THREADS) == []
    finally:
        gate.stop()
    assert gate.max_in_flight == 1
    # Each request ended before the next began: start 0, end 0, start 1, end 1, ...
    assert [event for event, _ in gate.events] == ["start", "end"] * THREADS
    assert len(factory.instances) == 1


def test_pooled_instances_share_the_allow_list_client_and_log(registry_of, probe_builds, kind) -> None:
    gate = GateServer(parties=2)
    try:
        text = provider_toml("probe", str(probe_builds[kind]), base_url=gate.url, path="/two")
        factory = registry_of(text, pool_size=2)["probe"]
        provider = ProviderBuilder(factory).build()
        assert run_threads(lambda n: provider.chat("x"), 2) == []
    finally:
        gate.stop()
    first, second = factory._slots()
    assert second.host is not first.host  # its own streams, cancel flag and call state
    assert second.host.allow is first.host.allow and second.host.allow.hosts == ("127.0.0.1",)
    assert second.host.client is first.host.client and second.host.logs is first.host.logs


# ---- many threads, right answers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echoes() -> Iterator[PluginRegistry]:
    with PluginRegistry.default(pool_size=THREADS) as registry:
        yield registry


def test_parallel_calls_on_a_pooled_wasm_provider_get_their_own_answers(echoes) -> None:
    factory = echoes["echo-wasm"]
    provider = echoes.builder("echo-wasm").build()
    replies: dict[tuple[int, int], str] = {}
    vectors: dict[int, list[float]] = {}

    def work(n: int) -> None:
        for k in range(20):
            replies[n, k] = provider.chat(f"thread {n} message {k}").text
        vectors[n] = provider.embed([f"text {n}"])[0]

    assert run_threads(work, 2 * THREADS) == []
    assert replies == {(n, k): f"echo: thread {n} message {k}" for n in range(2 * THREADS) for k in range(20)}
    native = echoes.builder("echo-native").build()
    assert vectors == {n: native.embed([f"text {n}"])[0] for n in range(2 * THREADS)}  # byte-identical builds
    assert 1 <= len(factory.instances) <= THREADS


def test_a_thread_safe_native_plugin_needs_no_pool(echoes) -> None:
    factory = echoes["echo-native"]
    assert factory.instance.thread_safe and factory.pool_size == 1
    provider = echoes.builder("echo-native").build()
    assert run_threads(lambda n: [provider.chat(f"{n}") for _ in range(20)], 2 * THREADS) == []
    assert len(factory.instances) == 1


def test_pool_size_is_a_registry_and_factory_setting(echoes) -> None:
    assert echoes.pool_size == THREADS and echoes["echo-wasm"].pool_size == THREADS
    echoes.set_pool_size(2)
    try:
        assert echoes["echo-wasm"].pool_size == 2
        with pytest.raises(ValueError, match="at least 1"):
            echoes["echo-wasm"].set_pool_size(0)
    finally:
        echoes.set_pool_size(THREADS)


# ---- generation A streams: HTTP-bound, and each parser stays on its instance -------------------------------


@pytest.fixture
def openai(registry_of, kind) -> Callable[..., PluginFactory]:
    def make(server: LoopbackOpenAI, pool_size: int) -> PluginFactory:
        text = provider_toml("openai", f"bundled:openai.{kind}", base_url=server.base_url, api_key="sk-pool", model="m")
        factory = registry_of(text, pool_size=pool_size)["openai"]
        assert factory.generation == "A" and not factory.instance.thread_safe
        return factory

    return make


def test_streams_from_many_threads_are_in_flight_together(openai) -> None:
    gate = threading.Barrier(THREADS, timeout=WAIT)

    def reply(request: dict[str, Any]) -> str:
        gate.wait()  # no stream starts until THREADS requests have arrived
        return request["messages"][-1]["content"].upper()

    with LoopbackOpenAI(reply=reply, chunks=4, chunk_delay=0.005) as server:
        provider = ProviderBuilder(openai(server, pool_size=THREADS)).build()
        texts: dict[int, str] = {}

        def stream(n: int) -> None:
            chunks = list(itertools.islice(provider.chat_stream(f"stream {n} says hello"), MAX_CHUNKS))
            texts[n] = "".join(chunk.text for chunk in chunks)

        assert run_threads(stream, THREADS) == []
    assert texts == {n: f"STREAM {n} SAYS HELLO" for n in range(THREADS)}


def test_each_stream_parser_is_called_on_the_instance_that_started_it(openai, monkeypatch) -> None:
    with LoopbackOpenAI(reply=lambda request: request["messages"][-1]["content"], chunks=6) as server:
        factory = openai(server, pool_size=3)
        provider = ProviderBuilder(factory).build()
        active: list[int] = [-1]
        seen: list[tuple[int, int, str]] = []  # (stream being advanced, instance, op)
        instance_type = type(factory.instance)
        original = instance_type.call

        def spy(self: Any, op: str, data: bytes) -> bytes:
            if op.startswith("chat_stream_parser"):
                seen.append((active[0], id(self), op))
            return original(self, op, data)

        monkeypatch.setattr(instance_type, "call", spy)
        streams = [provider.chat_stream(f"stream {n} has six words here") for n in range(3)]
        texts = ["", "", ""]
        open_streams = set(range(3))
        for _ in range(MAX_CHUNKS):  # one chunk from each open stream in turn: three parsers alive at once
            for n in sorted(open_streams):
                active[0] = n
                chunk = next(streams[n], None)
                if chunk is None:
                    open_streams.discard(n)
                else:
                    texts[n] += chunk.text
            if not open_streams:
                break
    assert texts == [f"stream {n} has six words here" for n in range(3)]
    instances = {n: {instance for stream, instance, _ in seen if stream == n} for n in range(3)}
    assert all(len(used) == 1 for used in instances.values())  # start, parse, finish, close: one instance
    assert len(set.union(*instances.values())) == 3  # three live streams, three instances
    assert {op for *_, op in seen} == {f"chat_stream_parser_{s}" for s in ("start", "parse", "finish", "close")}


def test_interleaved_streams_and_chats_on_a_pool_of_one_do_not_deadlock(openai) -> None:
    with LoopbackOpenAI(reply=lambda request: request["messages"][-1]["content"], chunks=3) as server:
        provider = ProviderBuilder(openai(server, pool_size=1)).build()
        done: list[list[str]] = []

        def interleave(_: int) -> None:
            first, second = provider.chat_stream("one two three"), provider.chat_stream("four five six")
            pieces = [next(first).text, next(second).text, provider.chat("between").text]
            pieces += [chunk.text for chunk in itertools.islice(first, MAX_CHUNKS)]
            pieces += [chunk.text for chunk in itertools.islice(second, MAX_CHUNKS)]
            done.append(pieces)

        assert run_threads(interleave, 1) == []
    assert "between" in done[0] and "".join(done[0]).replace("between", "") != ""
