"""The JupyterLab extension in a real browser: jupyter lab on 127.0.0.1, Debian's chromium driven by Playwright.

What a person does: open a notebook, open the QueryMT panel, click "Load QueryMT in this kernel", see the
bundled plugins with their types, click "Insert prompt cell", run the cell and watch the answer stream in.
The bundled config's openai provider points at a loopback OpenAI server (``$OPENAI_BASE_URL``) that streams
slowly, so the test also sees a reply grow on screen. Screenshots go to test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
BUNDLED = {
    "echo-native": "native",
    "echo-wasm": "wasm",
    "tinyllm": "native",
    "tinyllm-native": "native",
    "tinyllm-wasm": "wasm",
    "openai": "wasm",
}
ANSWER = "echo: Say hello to QueryMT in one short sentence."
SLOW_REPLY = "Hello from the loopback server, streamed in six slow pieces."

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing: apt-get install chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def openai_server() -> Iterator[object]:
    from querymt_jupyter.loopback import LoopbackOpenAI

    with LoopbackOpenAI(reply=SLOW_REPLY, chunks=6, chunk_delay=0.3) as server:
        yield server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, openai_server) -> Iterator[str]:
    """A jupyter lab server on a free loopback port, in an empty folder (so the bundled default config)."""
    from querymt_jupyter.build import bundled_plugin

    for name, kind in (("echo", "wasm"), ("echo", "native"), ("tinyllm", "wasm"), ("tinyllm", "native"), ("openai", "wasm")):
        bundled_plugin(name, kind)  # built (or found in the cache) now, not while the browser waits
    home = tmp_path_factory.mktemp("lab")
    root = home / "notebooks"
    root.mkdir()
    # A user setting: the panel sends it to each kernel it connects to (as %querymt default echo-wasm:echo-mini).
    settings = home / "settings" / "querymt-jupyter"
    settings.mkdir(parents=True)
    (settings / "settings.jupyterlab-settings").write_text('{"defaultModel": "echo-mini"}')
    ARTIFACTS.mkdir(exist_ok=True)
    env = {
        **os.environ,
        # a settings and workspace store of its own: no user setting or saved layout changes what is tested
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.update(OPENAI_BASE_URL=openai_server.base_url, OPENAI_API_KEY="sk-loopback")
    port = _free_port()
    log = (ARTIFACTS / "jupyter-lab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", "--IdentityProvider.token=", "--ServerApp.password=",
            f"--ServerApp.root_dir={root}",
        ],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (ARTIFACTS / "jupyter-lab.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{base}/api/status", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "jupyter lab did not answer within 60 s"
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()  # its kernels go with it
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(30_000)
        messages: list[str] = []
        page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
        # Every kernel message the browser receives, by type: proves the reply arrived as a stream.
        page.kernel_messages = []  # type: ignore[attr-defined]

        def watch(ws) -> None:
            def frame(payload: str | bytes) -> None:
                text = payload if isinstance(payload, str) else payload.decode("utf-8", "replace")
                for kind in ("update_display_data", "display_data"):
                    if f'"msg_type":"{kind}"' in text.replace(" ", ""):
                        page.kernel_messages.append(kind)  # type: ignore[attr-defined]
                        break

            ws.on("framereceived", frame)

        page.on("websocket", watch)
        page.goto(f"{lab}/lab/workspaces/{uuid.uuid4().hex}?reset")
        yield page
        (ARTIFACTS / "browser-console.log").write_text("\n".join(messages))
        browser.close()


def test_the_extension_is_installed_and_enabled() -> None:
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent)) or "jupyter"
    listing = subprocess.run([jupyter, "labextension", "list"], capture_output=True, text=True, check=True)
    text = listing.stdout + listing.stderr
    assert "querymt-jupyter v0.1.0" in text and "enabled" in text.split("querymt-jupyter", 1)[1].splitlines()[0]


def test_panel_lists_the_plugins_and_a_prompt_cell_streams(page) -> None:
    from playwright.sync_api import expect

    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click()
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)").last
    expect(notebook.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]')).to_be_visible(timeout=60_000)
    expect(page.locator("#jp-main-statusbar")).to_contain_text("Idle", timeout=60_000)

    # The panel: this kernel has not loaded the extension yet.
    page.locator('.jp-SideBar .lm-TabBar-tab[data-id="jp-QueryMT-panel"]').click()
    panel = page.locator("#jp-QueryMT-panel")
    expect(panel.locator(".jp-QueryMT-missing")).to_contain_text("%load_ext querymt_jupyter", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "lab-panel-not-loaded.png"))

    # One click loads it; the panel lists the bundled plugins with their types, loaded.
    panel.locator('[data-action="load-extension"]').click()
    for name, kind in BUNDLED.items():
        card = panel.locator(f'.jp-QueryMT-provider[data-provider="{name}"]')
        expect(card).to_have_attribute("data-type", kind, timeout=60_000)
        expect(card).to_have_attribute("data-status", "loaded", timeout=60_000)
    expect(panel.locator('.jp-QueryMT-provider[data-provider="echo-native"] .jp-QueryMT-badge').first).to_have_text(
        "native"
    )
    expect(panel.locator('.jp-QueryMT-provider[data-provider="openai"] .jp-QueryMT-hosts')).to_have_text("127.0.0.1")
    expect(panel.locator(".jp-QueryMT-defaults")).to_have_text("default: echo-wasm:echo-mini · markdown · streaming")

    # "Insert prompt cell": a %%querymt cell, highlighted as a Markdown prompt with a distinct magic line.
    panel.locator('.jp-QueryMT-provider[data-provider="echo-wasm"] [data-action="insert"]').click()
    expect(notebook.locator(".jp-Cell.jp-mod-active .cm-content")).to_contain_text(
        "%%querymt echo-wasm:echo-mini", timeout=10_000
    )
    cell = notebook.locator(".jp-Cell", has=page.locator(".jp-QueryMT-prompt")).first
    expect(cell.locator(".cm-editor.jp-QueryMT-prompt")).to_be_visible()
    expect(cell.locator(".cm-line.jp-QueryMT-magicLine")).to_have_text("%%querymt echo-wasm:echo-mini")

    # Run it: the echo streams one chunk per word, each an update of the same output.
    page.kernel_messages.clear()  # type: ignore[attr-defined]
    page.keyboard.press("Shift+Enter")
    output = cell.locator(".jp-OutputArea-output")
    expect(output).to_have_text(ANSWER, timeout=60_000)
    expect(output).to_have_attribute("data-mime-type", "text/markdown")
    received = list(page.kernel_messages)  # type: ignore[attr-defined]
    assert received[0] == "display_data" and received.count("update_display_data") >= 5, received
    expect(cell.locator(".jp-InputPrompt")).to_contain_text("[1]")

    # A slow stream (the loopback OpenAI server) grows on screen.
    panel.locator('.jp-QueryMT-provider[data-provider="openai"] [data-action="insert"]').click()
    slow = notebook.locator(".jp-Cell", has_text="%%querymt openai").first
    expect(slow.locator(".cm-editor.jp-QueryMT-prompt")).to_be_visible(timeout=10_000)
    page.evaluate(
        """() => {
            window.__querymtSeen = [];
            const record = () => {
              const cells = [...document.querySelectorAll('.jp-Cell')];
              const cell = cells.find(c => c.querySelector('.cm-content')?.textContent.startsWith('%%querymt openai'));
              const text = cell?.querySelector('.jp-OutputArea-output')?.textContent.trim();
              const seen = window.__querymtSeen;
              if (text && seen[seen.length - 1] !== text) { seen.push(text); }
            };
            new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.keyboard.press("Shift+Enter")
    expect(slow.locator(".jp-OutputArea-output")).to_have_text(SLOW_REPLY, timeout=60_000)
    seen = page.evaluate("window.__querymtSeen")
    assert seen[-1] == SLOW_REPLY and len(seen) >= 3, seen  # shown in pieces, each a longer prefix
    assert all(SLOW_REPLY.startswith(text) for text in seen), seen
    expect(slow.locator(".jp-InputPrompt")).to_contain_text("[2]")
    page.locator(".jp-QueryMT-provider").first.hover()  # a steady frame for the screenshot
    page.screenshot(path=str(ARTIFACTS / "lab-panel-prompt-cell.png"))

    # The commands are in the notebook's context menu, under QueryMT.
    cell.locator(".jp-InputPrompt").click(button="right")
    page.locator('.lm-Menu .lm-Menu-itemLabel:text-is("QueryMT")').hover()
    expect(page.locator(".lm-Menu .lm-Menu-itemLabel", has_text="Insert prompt cell")).to_be_visible()
    expect(page.locator(".lm-Menu .lm-Menu-itemLabel", has_text="Run benchmark")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "lab-context-menu.png"))
    page.keyboard.press("Escape")

    # The shortcut: Q in command mode puts a prompt for the kernel's default provider in the (empty) last cell.
    notebook.locator(".jp-Cell").last.locator(".jp-InputPrompt").click()
    expect(notebook.locator(".jp-Notebook.jp-mod-commandMode")).to_be_visible()
    page.keyboard.press("q")
    expect(notebook.locator(".jp-Cell.jp-mod-active .cm-content")).to_have_text(
        "%%querymt echo-wasm:echo-miniSay hello to QueryMT in one short sentence."
    )

    # "Benchmark": a %querymt_bench cell when the kernel has the magic, else a message saying it has not.
    panel.locator('.jp-QueryMT-provider[data-provider="echo-native"] [data-action="bench"]').click()
    bench_cell = notebook.locator(".jp-Cell .cm-content", has_text="%querymt_bench echo-native")
    no_bench = panel.locator(".jp-QueryMT-message", has_text="%querymt_bench is not registered")
    expect(bench_cell.or_(no_bench).first).to_be_visible(timeout=10_000)


def test_a_console_has_its_own_kernel_state_and_highlighting(page) -> None:
    from playwright.sync_api import expect

    page.locator(".lm-DockPanel-tabBar .lm-TabBar-addButton:not(.lm-mod-hidden)").first.click()  # a launcher
    page.locator('.jp-LauncherCard[data-category="Console"]').first.click()
    console = page.locator(".jp-ConsolePanel:not(.lm-mod-hidden)").last
    panel = page.locator("#jp-QueryMT-panel")
    # The panel follows the console: a second kernel, which has not loaded QueryMT.
    expect(panel.locator(".jp-QueryMT-target")).to_contain_text("Console", timeout=30_000)
    expect(panel.locator(".jp-QueryMT-missing")).to_be_visible(timeout=60_000)
    prompt = console.locator(".jp-CodeConsole-promptCell .cm-content")
    prompt.click()
    page.keyboard.type("%%querymt echo-native")
    page.keyboard.press("Enter")  # a new line (the console runs on Shift+Enter)
    page.keyboard.type("A *Markdown* prompt")
    expect(console.locator(".jp-CodeConsole-promptCell .cm-editor.jp-QueryMT-prompt")).to_be_visible()
    expect(console.locator(".jp-CodeConsole-promptCell .jp-QueryMT-magicLine")).to_have_text("%%querymt echo-native")
    page.screenshot(path=str(ARTIFACTS / "lab-console.png"))

    # Back on the notebook, its kernel's state is still there (one model per kernel, no reconnect).
    page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab:has-text("Untitled.ipynb")').click()
    expect(panel.locator(".jp-QueryMT-provider")).to_have_count(len(BUNDLED))
    expect(panel.locator(".jp-QueryMT-target")).to_contain_text("Untitled.ipynb")
