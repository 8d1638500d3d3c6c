"""Wheel build hook: ship the bundled plugins prebuilt, so the first prompt after ``pip install`` compiles nothing.

The Wasm builds run on any platform. The native builds are for the machine that builds the wheel, so the
wheel is tagged for its platform (``py3-none-<platform>``: the plugins do not use Python's C ABI). Where zig
cannot build a native plugin the wheel carries the Wasm builds only and stays pure. Editable installs skip
all of this: they build each plugin on first use, from the sources being edited.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import sysconfig
import tempfile
import types
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class PrebuiltPluginsHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        build = _build_module(Path(self.root) / "querymt_jupyter")
        self._out = Path(tempfile.mkdtemp(prefix="qmt-prebuilt-"))
        try:
            build.prebuild(self._out)
            build_data["pure_python"] = False
            build_data["tag"] = f"py3-none-{sysconfig.get_platform().replace('-', '_').replace('.', '_')}"
        except build.BuildError as error:  # no native toolchain for this platform: Wasm only
            print(f"querymt-jupyter: native plugins not prebuilt ({error}); the wheel ships Wasm only", file=sys.stderr)
            shutil.rmtree(self._out)
            build.prebuild(self._out, kinds=("wasm",))
        build_data["force_include"][str(self._out)] = "querymt_jupyter/prebuilt"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if out := getattr(self, "_out", None):
            shutil.rmtree(out, ignore_errors=True)


def _build_module(package: Path) -> types.ModuleType:
    """``querymt_jupyter.build`` without the package's ``__init__``, whose imports (extism, IPython...) the
    build environment does not have; build.py itself needs only the standard library and errors.py."""
    parent = types.ModuleType("querymt_jupyter")
    parent.__path__ = [str(package)]
    sys.modules.setdefault("querymt_jupyter", parent)
    spec = importlib.util.spec_from_file_location("querymt_jupyter.build", package / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
