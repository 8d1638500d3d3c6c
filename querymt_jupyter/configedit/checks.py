"""What a config editor checks before saving: secrets kept out of the file, host names, values against a schema."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..config import ENV_REF
from ..keys import UnknownKey, unknown_keys

__all__ = ["WHOLE_REF", "check_hosts", "contains_value", "is_secret", "schema_problems", "secret_env_var",
           "unknown_message", "value_problem"]


_SECRET_NAME = re.compile(r"(^|_)(api_?key|token|access_key|private_key)$|secret|password|passwd", re.IGNORECASE)
WHOLE_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")


def is_secret(key: str, schema: Mapping[str, Any] | None = None) -> bool:
    """A config field that holds a secret: named like one (``max_tokens`` is not) or marked so by its schema."""
    if schema and (schema.get("writeOnly") is True or schema.get("format") == "password"):
        return True
    return bool(_SECRET_NAME.search(key))


def secret_env_var(provider: str, key: str, current: Any = None) -> str:
    """The variable a secret is stored in: the one ``current`` already refers to, else ``PROVIDER_KEY``."""
    if isinstance(current, str) and (match := WHOLE_REF.fullmatch(current.strip())):
        return match[1]
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{provider}_{key}").strip("_").upper()
    return name if name and not name[0].isdigit() else f"_{name}"


_HOST = re.compile(r"^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
_IPV6 = re.compile(r"^\[?[0-9a-fA-F:.]+\]?$")


def check_hosts(hosts: Any) -> str | None:
    """``allowed_hosts`` must be a list of bare host names, as ``AllowList`` compares them."""
    if hosts is None:
        return None
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        return "must be a list of host names"
    for host in hosts:
        if "://" in host or "/" in host:
            return f"{host!r}: a host name only, without scheme or path (e.g. api.example.com)"
        if host != host.lower():
            return f"{host!r}: host names are compared in lower case; write {host.lower()!r}"
        if ":" in host and not _IPV6.match(host):
            return f"{host!r}: no port; the allow-list ignores ports"
        if not (_HOST.match(host) or _IPV6.match(host)):
            return f"{host!r} is not a host name"
    return None


def unknown_message(unknown: UnknownKey) -> str:
    guess = f" (did you mean {unknown.suggestion!r}?)" if unknown.suggestion else ""
    return f"unknown key{guess}; {unknown.hint}"


def schema_problems(config: Mapping[str, Any], schema: Mapping[str, Any] | None) -> Iterator[tuple[str, str]]:
    if not schema:
        return
    for unknown in unknown_keys(config, schema):
        yield unknown.key, unknown_message(unknown)
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for key in schema.get("required") or ():
        if config.get(key) is None and not (isinstance(properties.get(key), Mapping) and "default" in properties[key]):
            yield key, "required"
    for key, value in config.items():
        sub = properties.get(key)
        if isinstance(sub, Mapping) and (message := value_problem(value, sub)):
            yield key, message


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def value_problem(value: Any, schema: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under a JSON Schema (the subset plugin schemas use), or None."""
    if isinstance(value, str) and ENV_REF.search(value):
        return None  # ${VAR} is expanded when the registry loads; its value is not known here
    for combinator in ("anyOf", "oneOf"):
        if isinstance(alternatives := schema.get(combinator), list):
            if not any(value_problem(value, alt) is None for alt in alternatives if isinstance(alt, Mapping)):
                return f"does not match any allowed form ({_describe(schema)})"
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    if types and not any(_JSON_TYPES.get(t, lambda v: True)(value) for t in types):
        return f"must be {' or '.join(t for t in types if t != 'null')}"
    if "enum" in schema and value not in schema["enum"]:
        return f"must be one of {', '.join(json.dumps(v) for v in schema['enum'] if v is not None)}"
    if "const" in schema and value != schema["const"]:
        return f"must be {json.dumps(schema['const'])}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        for bound, test, words in (
            ("minimum", lambda v, b: v >= b, "at least"),
            ("maximum", lambda v, b: v <= b, "at most"),
            ("exclusiveMinimum", lambda v, b: v > b, "more than"),
            ("exclusiveMaximum", lambda v, b: v < b, "less than"),
        ):
            limit = schema.get(bound)
            if isinstance(limit, (int, float)) and not isinstance(limit, bool) and not test(value, limit):
                return f"must be {words} {limit}"
    if isinstance(value, str):
        if isinstance(schema.get("minLength"), int) and len(value) < schema["minLength"]:
            return f"must be at least {schema['minLength']} characters"
        if isinstance(schema.get("maxLength"), int) and len(value) > schema["maxLength"]:
            return f"must be at most {schema['maxLength']} characters"
        if isinstance(schema.get("pattern"), str) and not re.search(schema["pattern"], value):
            return f"must match {schema['pattern']}"
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            if message := value_problem(item, schema["items"]):
                return f"item {i + 1}: {message}"
    if isinstance(value, dict):
        properties = schema.get("properties")
        for key in schema.get("required") or ():
            if key not in value:
                return f"needs {key!r}"
        if isinstance(properties, Mapping):
            for key, item in value.items():
                if isinstance(properties.get(key), Mapping) and (message := value_problem(item, properties[key])):
                    return f"{key}: {message}"
    return None


def _describe(schema: Mapping[str, Any]) -> str:
    parts = []
    for alt in schema.get("anyOf") or schema.get("oneOf") or ():
        if isinstance(alt, Mapping):
            parts.append(" | ".join(json.dumps(v) for v in alt["enum"]) if "enum" in alt else str(alt.get("type", "?")))
    return "; ".join(parts)


def contains_value(node: Any, needle: str) -> bool:
    if isinstance(node, dict):
        return any(contains_value(v, needle) for v in node.values())
    if isinstance(node, list):
        return any(contains_value(v, needle) for v in node)
    return node == needle


