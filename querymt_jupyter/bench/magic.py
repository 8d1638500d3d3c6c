"""``%querymt_bench``: the benchmark as a line magic, on the kernel session's registry.

    %querymt_bench                                  # echo-native vs echo-wasm, chat and embed
    df = %querymt_bench echo-native echo-wasm --ops chat,embed --sizes 16,1k,64k,1m --repeat 200 -o samples

The magic returns the summary DataFrame, shows the plot (unless ``-q``), and with ``-o VAR`` puts the
per-call samples DataFrame in ``VAR``. ``register(ipython)`` adds it to a shell.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import Image, display

from .. import session
from ..usage import usage_errors
from . import run
from .args import ARGUMENTS, run_options

__all__ = ["BenchMagics", "register"]

_MAGIC_ONLY: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("-o", "--output"), {"metavar": "VAR", "help": "store the per-call samples DataFrame in VAR"}),
    (("-q", "--quiet"), {"action": "store_true", "help": "no progress bar and no plot"}),
]


def _with_arguments(magic: Callable[..., Any]) -> Callable[..., Any]:
    # IPython lists arguments in the reverse of the order their decorators ran.
    for names, options in reversed(ARGUMENTS + _MAGIC_ONLY):
        magic = argument(*names, **options)(magic)
    return magic_arguments()(magic)


@magics_class
class BenchMagics(Magics):
    @_with_arguments
    @line_magic
    @usage_errors
    def querymt_bench(self, line: str) -> pd.DataFrame:
        """Time plugin calls, native against Wasm: a summary DataFrame per provider × op × size."""
        args = parse_argstring(self.querymt_bench, line)
        result = run(**run_options(args), registry=session.current().registry, progress=not args.quiet)
        if args.output:
            self.shell.user_ns[args.output] = result.samples
        if not args.quiet:
            display(Image(data=result.png()))
        return result.summary


def register(ipython: Any) -> None:
    """Add ``%querymt_bench`` to ``ipython`` (``load_ipython_extension`` calls this)."""
    ipython.register_magics(BenchMagics)
