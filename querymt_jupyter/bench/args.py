"""The command-line options shared by ``%querymt_bench`` and ``python -m querymt_jupyter.bench``."""

from __future__ import annotations

import argparse
import re
from typing import Any

__all__ = ["ARGUMENTS", "parse_sizes", "run_options"]

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_SIZE = re.compile(r"^(\d+)\s*([kmg]?)b?$", re.IGNORECASE)

ARGUMENTS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("providers",), {"nargs": "*", "help": "providers to compare (default: echo-native echo-wasm)"}),
    (
        ("--ops",),
        {
            "default": "chat,embed",
            "help": "operations, comma-separated: noop, echo_bytes, embed, chat, complete, dispatch, load, http-chat",
        },
    ),
    (
        ("--sizes",),
        {"default": "16,1k,64k,1m", "help": "payload sizes in bytes, comma-separated; k and m are 1024 and 1024²"},
    ),
    (("--repeat",), {"type": int, "default": 100, "help": "timed calls per provider, operation and size"}),
    (("--threads",), {"default": "1,2,4,8", "help": "thread counts for http-chat"}),
    (("--tokens",), {"type": int, "default": 128, "help": "tokens each complete call generates"}),
]


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"16,1k,64k,1m"`` -> ``(16, 1024, 65536, 1048576)``."""
    sizes = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _SIZE.match(part)
        if not match:
            raise ValueError(f"not a size: {part!r} (write e.g. 16, 1k, 64k or 1m)")
        sizes.append(int(match[1]) * _UNITS[match[2].lower()])
    return tuple(sizes)


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``bench.run`` that the parsed options ask for."""
    options: dict[str, Any] = {
        "ops": tuple(op.strip() for op in args.ops.split(",") if op.strip()),
        "sizes": parse_sizes(args.sizes),
        "repeat": args.repeat,
        "threads": tuple(int(n) for n in args.threads.split(",") if n.strip()),
        "tokens": args.tokens,
    }
    if args.providers:
        options["providers"] = tuple(args.providers)
    return options
