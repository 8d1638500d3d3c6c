"""``querymt-jupyter``: publish, fetch and look into OCI plugins from a shell.

    querymt-jupyter push echo oci://127.0.0.1:5000/plugins/echo:1.0     # both builds, one image index
    querymt-jupyter pull oci://127.0.0.1:5000/plugins/echo:1.0 [--wasm]
    querymt-jupyter inspect oci://127.0.0.1:5000/plugins/echo:1.0

The ``[oci]`` table of ``--config`` (default: ``plugins.toml`` in the working directory, if any) applies.
``%querymt push|pull|inspect`` parse their words with the same parser and run the same ``execute``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .config import RegistryConfig, discover_config, load_config
from .errors import QueryMTError

if TYPE_CHECKING:
    from .oci import Inspection, PulledPlugin, PushedPlugin

__all__ = ["CommandLineError", "execute", "main", "parse"]


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
    from . import oci

    if args.config is not None:
        config = load_config(args.config)
    config = config or load_config(discover_config())
    settings = oci.OciSettings.from_config(config)
    if args.command == "push":
        builds = oci.builds_for(args.source, lambda name: _configured_path(config, name), args.only)
        return oci.push(args.reference, builds, settings, sign_key=args.sign_key)
    if args.command == "pull":
        return oci.pull(args.reference, replace(settings, allow_native=False) if args.wasm else settings)
    return oci.inspect(args.reference, settings)


def _configured_path(config: RegistryConfig, name: str) -> str | None:
    """A provider's plugin path: absolute for files (relative ones are relative to the config)."""
    spec = next((s for s in config.providers if s.name == name), None)
    if spec is None:
        return None
    return spec.source.location if spec.source is not None and spec.source.scheme == "file" else spec.path


def main(argv: list[str] | None = None) -> int:
    try:
        result = execute(parse(sys.argv[1:] if argv is None else argv))
    except CommandLineError as error:
        print(error, file=sys.stderr)
        return 2
    except QueryMTError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(result.frame().to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
