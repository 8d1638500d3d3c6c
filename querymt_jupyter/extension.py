"""What ``%load_ext querymt_jupyter`` does, kept apart so importing the package stays light."""

from __future__ import annotations

from typing import Any

from . import session
from .comm import serve
from .magics import QueryMTMagics
from .promptlog import CallRecord
from .provider import on_call

_unhook_log: Any = None


def _log(record: CallRecord) -> None:
    session.current().log.record(record)


def _bench_magic(ipython: Any) -> Any:
    """%querymt_bench, importing the benchmark package (pandas, matplotlib: ~0.7 s) on first use only."""

    def querymt_bench(line: str) -> Any:
        """Time plugin calls, native against Wasm; %querymt_bench -h lists the options."""
        from .bench.magic import BenchMagics

        return BenchMagics(ipython).querymt_bench(line)

    return querymt_bench


def load(ipython: Any) -> None:
    global _unhook_log
    ipython.register_magics(QueryMTMagics)
    ipython.register_magic_function(_bench_magic(ipython), "line", "querymt_bench")
    serve(ipython)  # the JupyterLab panel's comm target "querymt"
    if _unhook_log is None:  # loading the extension twice must not log every call twice
        _unhook_log = on_call(_log)
