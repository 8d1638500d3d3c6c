"""Named conversations: the history ``%%querymt --chat NAME`` and the chat widget send along.

A conversation is a list of exchanges (one user prompt, one answer), each keyed by where it came from —
a notebook cell, or a widget turn. Recording an exchange under a key that is already there replaces it
in place: re-running a cell revises that turn instead of appending a copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conversation", "Exchange"]


@dataclass
class Exchange:
    key: str
    prompt: str
    answer: str


@dataclass
class Conversation:
    name: str
    max_exchanges: int = 20
    exchanges: list[Exchange] = field(default_factory=list)

    def messages(self, *, excluding: str | None = None) -> list[dict[str, Any]]:
        """The history as OpenAI-style messages, leaving out the exchange keyed ``excluding``."""
        messages: list[dict[str, Any]] = []
        for exchange in self.exchanges:
            if exchange.key != excluding:
                messages += [
                    {"role": "user", "content": exchange.prompt},
                    {"role": "assistant", "content": exchange.answer},
                ]
        return messages

    def record(self, key: str, prompt: str, answer: str) -> None:
        for exchange in self.exchanges:
            if exchange.key == key:
                exchange.prompt, exchange.answer = prompt, answer
                return
        self.exchanges.append(Exchange(key, prompt, answer))
        del self.exchanges[: -self.max_exchanges]

    def reset(self) -> None:
        self.exchanges.clear()

    def __len__(self) -> int:
        return len(self.exchanges)
