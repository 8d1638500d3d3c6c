"""Every exception class the package defines joins the one QueryMTError tree."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import querymt_jupyter
from querymt_jupyter.errors import QueryMTError

PACKAGE = Path(querymt_jupyter.__file__).parent


def _exception_classes() -> list[tuple[str, str]]:
    """Public module-level ``*Error`` classes: an underscore one (loopback's _ApiError) stays in its module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and not node.name.startswith("_"):
                found.append((module, node.name))
    return found


def test_every_error_class_is_a_querymt_error() -> None:
    classes = _exception_classes()
    assert ("querymt_jupyter.oci.commands", "CommandLineError") in classes
    exceptions = [
        (f"{module}.{name}", cls)
        for module, name in classes
        if isinstance(cls := getattr(importlib.import_module(module), name), type) and issubclass(cls, BaseException)
    ]
    outside = [name for name, cls in exceptions if not issubclass(cls, QueryMTError)]
    assert outside == []
