"""``querymt-jupyter``: publish, fetch and look into OCI plugins from a shell.

    querymt-jupyter push echo oci://127.0.0.1:5000/plugins/echo:1.0     # both builds, one image index
    querymt-jupyter pull oci://127.0.0.1:5000/plugins/echo:1.0 [--wasm]
    querymt-jupyter inspect oci://127.0.0.1:5000/plugins/echo:1.0

The commands themselves (parser and ``execute``) are ``oci/commands.py``, shared with ``%querymt``.
"""

from __future__ import annotations

import sys

from .errors import QueryMTError
from .oci.commands import CommandLineError, execute, parse

__all__ = ["main"]


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
