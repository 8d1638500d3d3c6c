"""What each benchmark operation calls, per provider and payload size.

- ``noop``: the bare boundary, ``PluginFactory.call`` of an export that does nothing;
- ``echo_bytes``: payload scaling, ``size`` bytes in and the same bytes out (``PluginFactory.call``);
- ``embed``: compute-bound work, ``Provider.embed`` of one text of ``size`` bytes;
- ``chat``: ``Provider.chat`` of one user message of ``size`` bytes;
- ``dispatch``: one chat request of ``size`` bytes made three ways (``dispatch/raw``: the runtime alone,
  ``extism.Plugin.call`` or one ctypes ``qmt_call``; ``dispatch/factory.call``: the registry's door;
  ``dispatch/provider.chat``: the whole Python API, encoding and decoding included);
- ``complete``: ``Provider.complete`` generating ``size`` tokens from a short prompt (a language model's
  speed; the summary's ``tokens/s`` column). Plugins whose config has ``stop_at_eos`` (the bundled
  tinyllm) get it turned off so every call generates exactly ``size`` tokens;
- ``load``: loading the plugin as the registry does (fetch, open, identify, instantiate, init_logging);
- ``http-chat``: see ``http.py``.

``noop`` and ``echo_bytes`` are not provider operations (no QueryMT plugin exports them); plugins without
an export an operation needs are skipped and named in the result's metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .. import wire
from ..factory import PluginFactory
from ..provider import Provider
from ..registry import PluginRegistry
from .timing import Subject

__all__ = ["OPS", "SIZELESS", "Target", "groups", "text"]

OPS = ("noop", "echo_bytes", "embed", "chat", "complete", "dispatch", "load", "http-chat")
COMPLETE_PROMPT = "And the LORD said unto"
SIZELESS = frozenset({"noop", "load"})  # measured once, at size 0
_WORDS = b"the quick brown fox jumps over the lazy dog while five boxing wizards jump quickly "


@dataclass(frozen=True)
class Target:
    """A provider under test: its factory, and a provider built from it with the config's options."""

    name: str
    factory: PluginFactory
    provider: Provider

    @classmethod
    def build(cls, registry: PluginRegistry, name: str) -> Target:
        return cls(name, registry[name], registry.builder(name).build())

    @property
    def plugin_type(self) -> str:
        return self.factory.plugin_type

    def subject(self, op: str, size: int, call: Callable[[], Any], **extra: Any) -> Subject:
        return Subject(self.name, self.plugin_type, op, size, call, **extra)


def text(size: int) -> str:
    """``size`` bytes of plain ASCII words: what a prompt or a document to embed looks like."""
    return (_WORDS * (size // len(_WORDS) + 1))[:size].decode()


def groups(
    op: str, targets: Sequence[Target], sizes: Sequence[int], registry: PluginRegistry
) -> Iterator[tuple[list[Subject], list[str]]]:
    """Each group of subjects to compare (one per payload size), with the targets skipped and why."""
    for size in (0,) if op in SIZELESS else sizes:
        subjects: list[Subject] = []
        skipped: list[str] = []
        for target in targets:
            made = _subjects(op, target, size, registry)
            if isinstance(made, str):
                skipped.append(f"{target.name}: {op} ({made})")
            else:
                subjects += made
        yield subjects, skipped


def _subjects(op: str, target: Target, size: int, registry: PluginRegistry) -> list[Subject] | str:
    """The subjects of ``op`` for one target, or why it cannot run there."""
    factory, provider = target.factory, target.provider
    if op in ("noop", "echo_bytes"):
        if not factory.supports(op):
            return "no such export"
        data = text(size).encode()
        return [target.subject(op, size, lambda: factory.call(op, data))]
    if op == "embed":
        if not factory.supports("embed" if factory.generation == "B" else "embed_request"):
            return "the plugin does not embed"
        inputs = [text(size)]
        return [target.subject(op, size, lambda: provider.embed(inputs))]
    if op == "chat":
        messages = [{"role": "user", "content": text(size)}]
        return [target.subject(op, size, lambda: provider.chat(messages))]
    if op == "complete":
        if not factory.supports("complete" if factory.generation == "B" else "complete_request"):
            return "the plugin does not complete"
        exact = _exact_length(registry, target)
        return [target.subject(op, size, lambda: exact.complete(COMPLETE_PROMPT, max_tokens=size))]
    if op == "dispatch":
        if factory.generation != "B":
            return "generation A: a chat is several calls and an HTTP request, not one export"
        return _dispatch(target, size)
    if op == "load":
        return [target.subject(op, 0, _loader(registry, target.name), after=PluginFactory.close)]
    raise ValueError(f"unknown benchmark operation {op!r}; choose from {', '.join(OPS)}")


def _exact_length(registry: PluginRegistry, target: Target) -> Provider:
    """The target's provider, told not to stop early where its config allows that."""
    if "stop_at_eos" not in target.factory.config_schema().get("properties", {}):
        return target.provider
    return registry.builder(target.name).parameter("stop_at_eos", False).build()


def _loader(registry: PluginRegistry, name: str) -> Callable[[], PluginFactory]:
    """Load provider ``name`` afresh, as ``registry.get`` does the first time (the caller closes it)."""
    return lambda: registry.load_fresh(name)


def _dispatch(target: Target, size: int) -> list[Subject]:
    """The same chat request, with the same bytes, through the three layers."""
    factory, provider = target.factory, target.provider
    messages = [{"role": "user", "content": text(size)}]
    _, wire_messages = wire.split_messages(messages)
    data = wire.chat_request(wire.dumps(provider.cfg), wire_messages, None)
    return [
        target.subject("dispatch/raw", size, factory.instance.bare_call("chat", data)),
        target.subject("dispatch/factory.call", size, lambda: factory.call("chat", data, clear_cancel=True)),
        target.subject("dispatch/provider.chat", size, lambda: provider.chat(messages)),
    ]
