"""``http-chat``: chat end to end through the bundled openai plugin, against a loopback server.

The run starts its own ``LoopbackOpenAI`` on 127.0.0.1 and its own registry with the openai plugin in
each plugin type under test (``openai-native``, ``openai-wasm``). One call is one streamed chat
completion, every chunk consumed: the plugin builds the request, the host sends it, the plugin's stream
parser reads each line. The server sends its events ``CHUNK_DELAY`` apart, as a model producing tokens
would, so the call is HTTP-bound — which is what concurrency is for: with ``threads`` > 1 that many
threads chat at once through one provider (an instance pool of that size), and ops/s in the summary is
the throughput.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..config import parse_config
from ..loopback import LoopbackOpenAI
from ..registry import PluginRegistry
from .ops import Target, text
from .timing import Subject

__all__ = ["CHUNKS", "CHUNK_DELAY", "http_groups"]

CHUNKS = 4  # pieces of the streamed reply
CHUNK_DELAY = 0.001  # seconds between stream events
_REPLY = "A benchmark reply, streamed in a few pieces."
_API_KEY = "sk-querymt-bench"  # the loopback server checks no key; the plugin wants one


@contextmanager
def http_groups(kinds: Sequence[str], size: int, threads: Sequence[int]) -> Iterator[list[list[Subject]]]:
    """The http-chat groups, one per thread count, with a prompt of ``size`` bytes. (Only the smallest
    size of a run: large prompts would time the loopback server's JSON parsing, not the plugin.)"""
    with LoopbackOpenAI(reply=_REPLY, chunks=CHUNKS, chunk_delay=CHUNK_DELAY) as server:
        config = parse_config(_config(kinds, server.base_url), "toml")
        with PluginRegistry(config, pool_size=max(threads)) as registry:
            targets = [Target.build(registry, f"openai-{kind}") for kind in kinds]
            yield [[_subject(t, server, size, n) for t in targets] for n in dict.fromkeys(threads)]


def _subject(target: Target, server: LoopbackOpenAI, size: int, threads: int) -> Subject:
    provider = target.provider
    messages = [{"role": "user", "content": text(size)}]

    def chat() -> None:
        for _ in provider.chat_stream(messages):
            pass

    return target.subject("http-chat", size, chat, threads=threads, after=lambda _: _forget(server))


def _forget(server: LoopbackOpenAI) -> None:
    """The server keeps every request (and event) it saw; a benchmark sends thousands of them."""
    server.clear_requests()
    server.sent.clear()


def _config(kinds: Sequence[str], base_url: str) -> str:
    """A plugins.toml with the bundled openai plugin in each kind, pointed at the loopback server."""
    config = {"base_url": base_url, "model": "gpt-4o-mini", "api_key": _API_KEY}
    settings = "\n".join(f"{key} = {json.dumps(value)}" for key, value in config.items())
    return "".join(
        f'[[providers]]\nname = "openai-{kind}"\npath = "bundled:openai.{kind}"\n[providers.config]\n{settings}\n\n'
        for kind in kinds
    )
