"""The built wheel, installed into a fresh venv: its first prompts run on the prebuilt plugins, compiling nothing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run by the fresh venv's python: a real kernel (jupyter_client starts it with that same python), three
# first prompts, then the build cache and the prebuilt files as that install sees them.
DRIVER = r"""
import json, sys, time
from jupyter_client.manager import start_new_kernel

cells = [
    "%load_ext querymt_jupyter",
    "%%querymt tinyllm -p max_tokens=8 -p seed=1 -o native\nAnd God said",
    "%%querymt tinyllm-wasm -p max_tokens=8 -p seed=1 -o wasm\nAnd God said",
    "%%querymt echo-wasm -o echo\nfirst prompt",
    "import json; from querymt_jupyter import build\n"
    "print(json.dumps({'answers': [str(native), str(wasm), str(echo)],"
    " 'files': [str(build.bundled_plugin(n, k)) for n, k in (('tinyllm', 'native'), ('tinyllm', 'wasm'), ('echo', 'wasm'))],"
    " 'prebuilt': str(build.PREBUILT_DIR)}))",
]
manager, client = start_new_kernel(kernel_name="python3")
report = {"status": [], "stdout": "", "stderr": ""}
try:
    for code in cells:
        def hook(message):
            if message["msg_type"] == "stream":
                report[message["content"]["name"]] += message["content"]["text"]
        reply = client.execute_interactive(code, output_hook=hook, timeout=120)
        report["status"].append(reply["content"]["status"])
    report["first_answer_s"] = time.time() - float(sys.argv[1])
finally:
    client.stop_channels()
    manager.shutdown_kernel(now=True)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built as pip builds it (the venv's build tools, no isolation: offline)."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, env=env, timeout=600,
    )  # fmt: skip
    (built,) = out.glob("*.whl")
    return built


def fresh_venv(folder: Path) -> Path:
    """A new venv that installs the wheel itself but finds its dependencies in this one's site-packages.

    A .pth line adds those to the end of sys.path, so nothing is downloaded; the editable install of this
    checkout is not activated there (its own .pth files are not read), and the wheel's copy comes first.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    Path(purelib, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_the_wheel_carries_every_bundled_plugin_for_its_platform(wheel: Path) -> None:
    assert wheel.name.endswith(f"-py3-none-{sysconfig.get_platform().replace('-', '_').replace('.', '_')}.whl")
    with zipfile.ZipFile(wheel) as archive:
        manifest = json.loads(archive.read("querymt_jupyter/prebuilt/manifest.json"))
        names = set(archive.namelist())
    sources = sorted(p.stem for p in (ROOT / "querymt_jupyter" / "plugins").glob("*.c"))
    assert sorted(manifest) == sorted(f"{s}.{k}" for s in sources for k in ("native", "wasm"))
    assert all(f"querymt_jupyter/prebuilt/{entry['file']}" in names for entry in manifest.values())


def test_a_fresh_install_answers_its_first_prompts_without_compiling(wheel: Path, tmp_path: Path) -> None:
    started = time.time()
    python = fresh_venv(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    cache = tmp_path / "cache"
    env = {**os.environ, "QUERYMT_JUPYTER_CACHE": str(cache), "QUERYMT_JUPYTER_LOG": "off", "PYTHONPATH": ""}
    done = subprocess.run(
        [python, "-c", DRIVER, str(started)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["status"] == ["ok"] * 5, report
    result = json.loads(report["stdout"].splitlines()[-1])
    native, wasm, echo = result["answers"]
    assert native and native == wasm  # one seed, the same text from both builds
    assert echo == "echo: first prompt"
    prebuilt = Path(result["prebuilt"])
    assert prebuilt.is_relative_to(tmp_path / "venv") and all(Path(f).parent == prebuilt for f in result["files"])
    assert "building" not in report["stderr"] and not (cache / "build").exists()  # zig never ran
    print(f"\nfrom pip install of the wheel to the first answers in a kernel: {report['first_answer_s']:.1f} s")


def test_an_edited_source_is_rebuilt_not_served_stale(wheel: Path, tmp_path: Path) -> None:
    python = fresh_venv(tmp_path / "venv")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    check = (
        "from querymt_jupyter import build\n"
        "assert build._prebuilt('echo', 'wasm') is not None\n"
        "source = build.PLUGINS_DIR / 'echo.c'\n"
        "source.write_text(source.read_text() + '/* edited */\\n')\n"
        "assert build._prebuilt('echo', 'wasm') is None\n"
        "print('ok')\n"
    )
    done = subprocess.run(  # not from the checkout: there, "import querymt_jupyter" finds its sources
        [python, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""}
    )
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the CPU level checked here is x86-64-v3")
def test_a_prebuilt_native_plugin_runs_only_on_a_cpu_with_its_level(tmp_path: Path, monkeypatch) -> None:
    """zig builds for the CPU it runs on; a wheel's native builds must run elsewhere too."""
    from querymt_jupyter import build

    manifest = build.prebuild(tmp_path / "prebuilt", kinds=("native",))  # as a wheel build does
    shipped = tmp_path / "prebuilt" / manifest["tinyllm.native"]["file"]
    code = subprocess.run(["objdump", "-d", str(shipped)], capture_output=True, text=True, check=True).stdout
    assert "ymm" in code and "zmm" not in code  # AVX2 kernels, and no AVX-512 whatever the build machine has
    monkeypatch.setattr(build, "PREBUILT_DIR", tmp_path / "prebuilt")
    assert build.bundled_plugin("tinyllm", "native") == shipped  # this CPU has x86-64-v3
    monkeypatch.setattr(build, "_cpu_features", lambda: frozenset({"sse2", "sse4_2"}))  # an older CPU
    assert build.bundled_plugin("tinyllm", "native") != shipped  # built for that CPU by zig instead
    assert build.bundled_plugin("tinyllm", "wasm").suffix == ".wasm"  # Wasm runs anywhere
