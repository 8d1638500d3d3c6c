"""The kernel-resident state every magic, widget and benchmark shares.

One ``Session`` per kernel holds the ``PluginRegistry`` (from ``plugins.toml`` in the working directory,
else the bundled default), the default provider and model, named conversations, and the prompt log.
``current()`` returns it, creating it on first use — so ``%load_ext`` itself stays cheap and touches no
plugin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import discover_config, load_config
from .conversation import Conversation
from .promptlog import PromptLog
from .provider import Provider
from .registry import PluginRegistry

__all__ = ["Session", "current", "reset"]


@dataclass
class Session:
    registry: PluginRegistry
    default_provider: str = "echo-wasm"
    default_model: str | None = None
    output_format: str = "markdown"
    stream: bool = True
    history_length: int = 20  # exchanges kept per conversation
    conversations: dict[str, Conversation] = field(default_factory=dict)
    log: PromptLog = field(default_factory=PromptLog.default)
    listeners: list[Callable[[Session], None]] = field(default_factory=list)  # told when the registry changes
    _providers: dict[tuple[Any, ...], Provider] = field(default_factory=dict)

    @classmethod
    def start(cls, folder: Path | None = None) -> Session:
        return cls(PluginRegistry(load_config(discover_config(folder))))

    def provider(self, name: str | None = None, model: str | None = None, **parameters: Any) -> Provider:
        """A built provider, cached by (name, model, parameters): building calls the plugin."""
        name = name or self.default_provider
        model = model or (self.default_model if name == self.default_provider else None)
        key = (name, model, tuple(sorted((k, repr(v)) for k, v in parameters.items())))
        if key not in self._providers:
            builder = self.registry.builder(name)
            if model:
                builder.model(model)
            for parameter, value in parameters.items():
                builder.parameter(parameter, value)
            self._providers[key] = builder.build()
        return self._providers[key]

    def conversation(self, name: str) -> Conversation:
        if name not in self.conversations:
            self.conversations[name] = Conversation(name, self.history_length)
        return self.conversations[name]

    def use_registry(self, registry: PluginRegistry) -> None:
        """Swap in another registry (``%querymt load``, ``reload``, the config widget's save)."""
        old, self.registry = self.registry, registry
        self._providers.clear()
        old.close()
        self.changed()

    def reload(self) -> None:
        path = self.registry.config.path
        self.use_registry(PluginRegistry(load_config(path)) if path else PluginRegistry.discover())

    def changed(self) -> None:
        for listener in list(self.listeners):
            listener(self)


_current: Session | None = None


def current() -> Session:
    """This kernel's session (created on first use)."""
    global _current
    if _current is None:
        _current = Session.start()
    return _current


def reset() -> None:
    """Forget the session (closing its plugins); the next ``current()`` starts afresh."""
    global _current
    if _current is not None:
        _current.registry.close()
    _current = None
