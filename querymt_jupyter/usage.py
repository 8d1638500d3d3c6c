"""How a failure reaches a person in a cell: every magic shows a QueryMTError as IPython's one-line
UsageError (its message and hint, no traceback), whatever step raised it, the config's reading included."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from IPython.core.error import UsageError

from .errors import QueryMTError

__all__ = ["usage_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def usage_errors(magic: F) -> F:
    """Wrap a magic so a QueryMTError it raises is shown as a UsageError."""

    @functools.wraps(magic)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return magic(*args, **kwargs)
        except QueryMTError as error:
            raise UsageError(str(error)) from None

    return run  # type: ignore[return-value]
