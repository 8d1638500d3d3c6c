"""Build plugin C sources with ``zig cc`` from the ``ziglang`` PyPI package.

One C source plus the SDK (``sdk/querymt_plugin.c`` and ``sdk/qmt_json.c``) yields either a Wasm module
that a QueryMT Extism host loads, or a native shared library speaking querymt-jupyter's native ABI v1.
Nothing but the ``ziglang`` wheel is needed: it carries clang, lld and WASI libc.

Builds are cached by content: the default output directory is named by a hash of every input byte, the
flags, the zig version and the target, so an unchanged plugin is never compiled twice and a changed one
never reuses a stale artifact. Artifacts are written to a temporary name and renamed into place, so two
processes building at once both end up with a complete file.

A wheel ships the bundled plugins prebuilt (``prebuild``, run by ``hatch_build.py`` when the wheel is built)
in ``prebuilt/`` with a manifest of what each was built from; ``bundled_plugin`` takes a prebuilt file
whose sources and flags match the installed ones, so the first prompt compiles nothing. Anything else
(an editable install, an edited source, a platform the wheel was not built for) falls back to zig.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from .errors import BuildError

__all__ = ["BUNDLED_FLAGS", "PLUGINS_DIR", "PREBUILT_DIR", "SDK_DIR", "build_plugin", "bundled_plugin", "prebuild"]

Kind = Literal["wasm", "native"]

SDK_DIR: Path = Path(__file__).resolve().parent / "sdk"
"""The C SDK: ``querymt_plugin.h``, ``qmt_json.h`` and their sources, for notebook users' own plugins."""

PLUGINS_DIR = Path(__file__).resolve().parent / "plugins"
PREBUILT_DIR = Path(__file__).resolve().parent / "prebuilt"  # only in a wheel: see prebuild
_SDK_SOURCES = (SDK_DIR / "querymt_plugin.c", SDK_DIR / "qmt_json.c")

# -ffp-contract=off: no fused multiply-add on either target, so floating-point results (embeddings) are
# byte-identical between the Wasm and native builds. -s: the debug info of WASI libc is most of an
# unstripped module; no host reads it.
_COMMON_FLAGS = ("-std=c11", "-O2", "-s", "-Wall", "-Wextra", "-ffp-contract=off", "-fvisibility=hidden")
_KIND_FLAGS: dict[str, tuple[str, ...]] = {
    "wasm": ("-target", "wasm32-wasi", "-mexec-model=reactor"),  # a reactor: Extism runs _initialize
    "native": ("-shared", "-fPIC"),
}
# Extra flags of bundled plugins that need them (appended, so -O3 overrides -O2). tinyllm is compute-bound:
# Wasm SIMD and its relaxed extension (Wasmtime, which Extism and QueryMT run, enables both) and, natively,
# a thread pool.
BUNDLED_FLAGS: dict[str, dict[str, tuple[str, ...]]] = {
    "tinyllm": {"wasm": ("-O3", "-msimd128", "-mrelaxed-simd"), "native": ("-O3", "-pthread")},
}
# zig cc builds native code for the CPU it runs on. A wheel's native plugins run on other machines, so
# prebuild() builds them for a CPU level instead (x86-64-v3: AVX2, FMA, BMI2, Haswell and later), and
# bundled_plugin() takes them only on a CPU with that level's features (Linux /proc/cpuinfo names); any
# other machine builds its own with zig, rather than dying of an illegal instruction.
_PORTABLE_CPU: dict[str, tuple[str, frozenset[str]]] = {
    "x86_64": ("x86_64_v3", frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"})),
    "aarch64": ("baseline", frozenset()),
    "arm64": ("baseline", frozenset()),
}
_WASM_IMPORT_MODULES = frozenset({"wasi_snapshot_preview1", "extism:host/env", "extism:host/user"})


def build_plugin(
    source: Path,
    kind: Kind,
    *,
    out_dir: Path | None = None,
    name: str | None = None,
    flags: tuple[str, ...] = (),
) -> Path:
    """Compile ``source`` with the SDK into a plugin and return the artifact's path.

    ``kind`` is ``"wasm"`` (``<name>.wasm``) or ``"native"`` (``lib<name>.so``/``.dylib``, ``<name>.dll``).
    ``name`` defaults to the source's stem. ``flags`` are added to the compiler's (e.g. ``("-O3",
    "-msimd128")``); they are part of the cache key. Without ``out_dir`` the artifact goes to the build cache and
    an unchanged source is not recompiled; with ``out_dir`` it is always compiled there.

    Raises ``BuildError`` with the compiler's output and command when compilation fails.
    """
    source = Path(source).resolve()
    if kind not in _KIND_FLAGS:
        raise ValueError(f"kind must be 'wasm' or 'native', not {kind!r}")
    name = name or source.stem
    flags = [*_flags(kind, source), *flags]
    if out_dir is None:
        artifact = _cache_root() / _cache_key(source, kind, name, flags) / _artifact_name(name, kind)
        if artifact.is_file():
            return artifact
    else:
        artifact = Path(out_dir).resolve() / _artifact_name(name, kind)
    note = " — the first Wasm build takes about a minute…" if kind == "wasm" else "…"
    print(f"building {name} ({kind}) with zig cc{note}", file=sys.stderr, flush=True)
    _compile(source, kind, flags, artifact)
    return artifact


def bundled_plugin(name: str, kind: Kind) -> Path:
    """One of the plugins shipped in ``querymt_jupyter/plugins``: prebuilt if it matches, else built (cached)."""
    source = PLUGINS_DIR / f"{name}.c"
    if not source.is_file():
        known = sorted(p.stem for p in PLUGINS_DIR.glob("*.c"))
        raise ValueError(f"no bundled plugin named {name!r}; bundled plugins: {', '.join(known)}")
    return _prebuilt(name, kind) or build_plugin(source, kind, flags=BUNDLED_FLAGS.get(name, {}).get(kind, ()))


def prebuild(out_dir: Path, kinds: tuple[Kind, ...] = ("wasm", "native")) -> dict[str, dict[str, str]]:
    """Build every bundled plugin into ``out_dir`` with a ``manifest.json`` naming what each was built from.

    Run when a wheel is built; the manifest's ``inputs`` digest is what ``bundled_plugin`` compares. Native
    builds target a portable CPU level (``_PORTABLE_CPU``); a machine without one gets a ``BuildError``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = {}
    for source in sorted(PLUGINS_DIR.glob("*.c")):
        for kind in kinds:
            flags = _prebuilt_flags(source.stem, kind)
            if flags is None:
                raise BuildError(f"no portable CPU level is known for {platform.machine()}: native plugins stay unbuilt")
            artifact = build_plugin(source, kind, flags=flags)  # the cache: a second wheel build is quick
            (out_dir / artifact.name).write_bytes(artifact.read_bytes())
            manifest[f"{source.stem}.{kind}"] = {"file": artifact.name, "inputs": _inputs_digest(source, kind, flags)}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _prebuilt_flags(name: str, kind: Kind) -> tuple[str, ...] | None:
    """The flags a wheel's build of ``name`` uses: the bundled ones, and natively a portable CPU level
    (None where no level is known for this machine)."""
    flags = BUNDLED_FLAGS.get(name, {}).get(kind, ())
    if kind == "wasm":
        return flags
    level = _PORTABLE_CPU.get(platform.machine().lower())
    return None if level is None else (*flags, f"-mcpu={level[0]}")


@functools.cache  # read once a process, not at every bundled plugin's load
def _cpu_features() -> frozenset[str]:
    """This CPU's feature flags as Linux names them (empty where /proc/cpuinfo is not there to read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def _runs_here(kind: Kind) -> bool:
    """Can this CPU run a prebuilt plugin of ``kind``? Wasm always; native where the level's features are."""
    if kind == "wasm":
        return True
    level = _PORTABLE_CPU.get(platform.machine().lower())
    return level is not None and level[1] <= _cpu_features()


def _prebuilt(name: str, kind: Kind) -> Path | None:
    entry = _manifest().get(f"{name}.{kind}")
    flags = _prebuilt_flags(name, kind)
    if entry is None or flags is None or not _runs_here(kind):
        return None
    if entry.get("inputs") != _inputs_digest(PLUGINS_DIR / f"{name}.c", kind, flags):
        return None
    artifact = PREBUILT_DIR / entry["file"]
    return artifact if artifact.is_file() else None


def _manifest() -> dict[str, dict[str, str]]:
    try:
        return json.loads((PREBUILT_DIR / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _inputs_digest(source: Path, kind: str, flags: tuple[str, ...]) -> str:
    """What a prebuilt artifact must have been built from: sources, flags and, for native, the platform.

    Unlike the cache key, neither the zig version nor where the package is installed counts.
    """
    digest = hashlib.sha256()
    target = ("wasm32-wasi",) if kind == "wasm" else (platform.system(), platform.machine())
    for part in (kind, *target, *_COMMON_FLAGS, *_KIND_FLAGS[kind], *flags):
        digest.update(part.encode() + b"\0")
    for path in _inputs(source):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def _inputs(source: Path) -> list[Path]:
    """The files a build reads: the source, the SDK, and headers beside either (a plugin may include its own)."""
    headers = sorted({*SDK_DIR.glob("*.h"), *source.parent.glob("*.h")})
    return [source, *_SDK_SOURCES, *headers]


def _flags(kind: str, source: Path) -> list[str]:
    return [*_COMMON_FLAGS, *_KIND_FLAGS[kind], "-I", str(SDK_DIR), "-I", str(source.parent)]


def _artifact_name(name: str, kind: str) -> str:
    if kind == "wasm":
        return f"{name}.wasm"
    system = platform.system()
    if system == "Windows":
        return f"{name}.dll"
    return f"lib{name}.dylib" if system == "Darwin" else f"lib{name}.so"


def _cache_root() -> Path:
    configured = os.environ.get("QUERYMT_JUPYTER_CACHE")
    if configured:
        return Path(configured) / "build"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "querymt-jupyter" / "build"


def _cache_key(source: Path, kind: str, name: str, flags: list[str]) -> str:
    """A hash of everything that can change the artifact.

    Headers beside the source count too, since a plugin may include its own.
    """
    digest = hashlib.sha256()
    for part in (kind, name, _zig_version(), platform.system(), platform.machine(), *flags):
        digest.update(part.encode() + b"\0")
    for path in _inputs(source):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


@functools.lru_cache(maxsize=1)
def _zig_version() -> str:
    return importlib.metadata.version("ziglang")


def _compile(source: Path, kind: str, flags: list[str], artifact: Path) -> None:
    """Compile into a private temporary directory, check the result, then rename it into place."""
    artifact.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=artifact.parent, prefix=".build-") as tmp:
        built = Path(tmp) / artifact.name
        command = [
            sys.executable,
            "-m",
            "ziglang",
            "cc",
            *flags,
            str(source),
            *map(str, _SDK_SOURCES),
            "-o",
            str(built),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            raise BuildError(
                f"zig cc failed to build {source.name} ({kind}):\n{output}\ncommand: {shlex.join(command)}"
            )
        if output:  # warnings: worth seeing when writing a plugin
            print(output, file=sys.stderr, flush=True)
        if kind == "wasm":
            _check_wasm_imports(built)
        built.replace(artifact)


def _check_wasm_imports(path: Path) -> None:
    """Refuse a module that imports anything a QueryMT host does not provide.

    A call to a function that exists neither in the source nor in WASI libc links as an import from
    ``env``; Extism would only fail later, at load time, with a less helpful message.
    """
    imports, _ = _wasm_interface(path.read_bytes())
    unknown = [f"{module}.{field}" for module, field in imports if module not in _WASM_IMPORT_MODULES]
    if unknown:
        raise BuildError(
            f"{path.name} imports functions no QueryMT host provides: {', '.join(unknown)}",
            hint="a function the plugin calls is not defined (or not available in WASI); define it",
        )


def _wasm_interface(module: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """The (module, name) imports and the export names of a Wasm binary."""
    if module[:8] != b"\0asm\x01\0\0\0":
        raise BuildError("not a Wasm module (bad header)")
    reader = _WasmReader(module, 8)
    imports: list[tuple[str, str]] = []
    exports: list[str] = []
    while reader.pos < len(module):
        section_id = reader.byte()
        end = reader.uleb() + reader.pos
        if section_id == 2:
            for _ in range(reader.uleb()):
                imports.append((reader.name(), reader.name()))
                reader.skip_import_desc()
        elif section_id == 7:
            for _ in range(reader.uleb()):
                exports.append(reader.name())
                reader.byte()  # kind
                reader.uleb()  # index
        reader.pos = end
    return imports, exports


class _WasmReader:
    """Just enough of the binary format to walk the import and export sections."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uleb(self) -> int:
        result = shift = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return result

    def name(self) -> str:
        length = self.uleb()
        self.pos += length
        return self.data[self.pos - length : self.pos].decode("utf-8")

    def skip_import_desc(self) -> None:
        kind = self.byte()
        if kind == 0:  # function: type index
            self.uleb()
        elif kind == 1:  # table: element type, limits
            self.byte()
            self.skip_limits()
        elif kind == 2:  # memory: limits
            self.skip_limits()
        else:  # global: value type, mutability
            self.pos += 2

    def skip_limits(self) -> None:
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()
