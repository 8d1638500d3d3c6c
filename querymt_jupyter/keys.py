"""The one rule for keys a person writes: a key nothing reads is an error that names the closest valid key.

QueryMT prunes a provider's config by its plugin's schema before ``from_config`` (wire spec 3): when the
schema has top-level ``properties``, any other key never reaches the plugin. A misspelled
``temperatur = 0.5`` would so do nothing, silently. Every door where a person writes keys checks them
here instead: ``[providers.config]`` when a provider is built or lists its models,
``ProviderBuilder.parameter``, ``-p`` in the magics, ``ConfigDocument.validate`` in the config editor, and
the keys of each ``[[providers]]`` entry when the file is read.

Kept as QueryMT has them: a schema without ``properties`` accepts anything, values under a ``$ref`` are
not looked into, the keys the host reads itself (``HOST_KEYS``) are always allowed, the builder's named
options (``temperature()``...) are pruned silently for a plugin without them, and the file's top level
stays open (YAML anchors live there).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import UnknownKeyError

__all__ = ["ENTRY_KEYS", "HOST_KEYS", "UnknownKey", "check_keys", "closest", "schema_of", "unknown_keys"]

# Read by the host from [providers.config] (wire spec 2.4), whether or not the plugin's schema has them.
HOST_KEYS = frozenset({"allowed_hosts", "base_url"})
# A [[providers]] entry: QueryMT's three keys (wire spec 2.2) and our allowed_paths (config.py).
ENTRY_KEYS = ("name", "path", "config", "allowed_paths")


@dataclass(frozen=True)
class UnknownKey:
    """``key`` (a dotted path below the checked table) is not among ``valid``."""

    key: str
    valid: tuple[str, ...]

    @property
    def suggestion(self) -> str | None:
        return closest(self.key.rpartition(".")[2], self.valid)

    def message(self, owner: str) -> str:
        guess = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        return f"{owner} has no key {self.key!r}{guess}"

    @property
    def hint(self) -> str:
        return f"valid keys: {', '.join(self.valid)}" if self.valid else "this table takes no keys"


def closest(key: str, valid: Iterable[str]) -> str | None:
    """The valid key ``key`` was most likely meant to be (a typo, a case slip), or None."""
    valid = list(valid)
    lowered = {name.lower(): name for name in valid}
    if key.lower() in lowered:
        return lowered[key.lower()]
    matches = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_keys(
    table: Mapping[str, Any], schema: Mapping[str, Any] | None, allowed: Iterable[str] = HOST_KEYS
) -> Iterator[UnknownKey]:
    """Every key of ``table`` the schema's ``properties`` lacks (recursing into inline sub-schemas)."""
    properties = (schema or {}).get("properties")
    if not isinstance(properties, Mapping):
        return
    allowed = frozenset(allowed)
    valid = tuple(properties)
    for key, value in table.items():
        if key in allowed:
            continue
        if key not in properties:
            yield UnknownKey(key, valid)
        elif isinstance(value, Mapping) and isinstance(sub := properties[key], Mapping):
            for inner in unknown_keys(value, sub, allowed=()):
                yield UnknownKey(f"{key}.{inner.key}", inner.valid)


def schema_of(valid: Iterable[str]) -> dict[str, Any]:
    """A schema naming just ``valid``, for tables whose keys are fixed by this package."""
    return {"properties": dict.fromkeys(valid, {})}


def check_keys(
    table: Mapping[str, Any], schema: Mapping[str, Any] | None, owner: str, allowed: Iterable[str] = HOST_KEYS
) -> None:
    """Raise ``UnknownKeyError`` for the first key of ``table`` that ``schema`` does not name."""
    for unknown in unknown_keys(table, schema, allowed):
        raise UnknownKeyError(unknown.message(owner), key=unknown.key, valid=unknown.valid, hint=unknown.hint)
