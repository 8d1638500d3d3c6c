"""The push / pull / inspect commands: one parser and one ``execute``, for the shell and the notebook.

The console command ``querymt-jupyter`` (cli.py) and ``%querymt push|pull|inspect`` (magics.py) both parse
their words here and run the same ``execute``. The ``[oci]`` table of ``--config`` (default: the caller's
config, else ``plugins.toml`` in the working directory, if any) applies.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..config import RegistryConfig, discover_config, load_config
from ..errors import QueryMTError
from ._base import OciSettings
from ._pull import Inspection, PulledPlugin, inspect, pull
from ._push import PushedPlugin, builds_for, push

__all__ = ["CommandLineError", "execute", "parse"]


class CommandLineError(QueryMTError, ValueError):
    """Bad arguments; the message carries argparse's usage line (a ValueError too, as argparse's are)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # raise instead of exiting, so a magic can show it as a UsageError
        raise CommandLineError(f"{self.format_usage().strip()}\n{self.prog}: error: {message}")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, help="the plugins.toml whose [oci] table applies (default: ./plugins.toml)"
    )
    parser = _Parser(
        prog="querymt-jupyter", description="Publish, fetch and inspect QueryMT plugins in OCI registries."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    push = commands.add_parser("push", parents=[common], help="push a plugin's builds as one image index")
    push.add_argument("source", help="a bundled plugin (echo), a provider name, or a file (.c, .wasm, .so)")
    push.add_argument("reference", help="oci://HOST[:PORT]/REPOSITORY:TAG")
    push.add_argument("--only", choices=("wasm", "native"), help="push one build only")
    push.add_argument("--sign-key", type=Path, metavar="PEM", help="sign the index with this ECDSA key (cosign format)")
    pull = commands.add_parser(
        "pull", parents=[common], help="fetch a plugin into the cache, choosing the build for this machine"
    )
    pull.add_argument("reference", help="oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:HEX]")
    pull.add_argument("--wasm", action="store_true", help="never choose a native build")
    inspect = commands.add_parser(
        "inspect", parents=[common], help="the index, platforms, digests and sizes behind a reference"
    )
    inspect.add_argument("reference")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse command words; raises CommandLineError (or SystemExit(0) after printing ``-h`` help)."""
    return _parser().parse_args(argv)


def execute(args: argparse.Namespace, config: RegistryConfig | None = None) -> PulledPlugin | PushedPlugin | Inspection:
    """Run a parsed command against ``config``'s ``[oci]`` settings and providers."""
    if args.config is not None:
        config = load_config(args.config)
    config = config or load_config(discover_config())
    settings = OciSettings.from_config(config)
    if args.command == "push":
        builds = builds_for(args.source, lambda name: _configured_path(config, name), args.only)
        return push(args.reference, builds, settings, sign_key=args.sign_key)
    if args.command == "pull":
        return pull(args.reference, replace(settings, allow_native=False) if args.wasm else settings)
    return inspect(args.reference, settings)


def _configured_path(config: RegistryConfig, name: str) -> str | None:
    """A provider's plugin path: absolute for files (relative ones are relative to the config)."""
    spec = config.provider(name)
    if spec is None:
        return None
    return spec.source.location if spec.source is not None and spec.source.scheme == "file" else spec.path
