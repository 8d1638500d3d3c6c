"""The side panel's comm target (querymt_jupyter/comm.py): driven with a fake comm, then in a real kernel."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from querymt_jupyter.comm import PROMPT, TARGET, PanelChannel
from querymt_jupyter.config import load_config
from querymt_jupyter.registry import PluginRegistry
from querymt_jupyter.session import Session

CONFIG = """\
[[providers]]
name = "echo-wasm"
path = "bundled:echo.wasm"

[[providers]]
name = "echo-native"
path = "bundled:echo.native"

[[providers]]
name = "broken"
path = "missing/plugin.wasm"

[[providers]]
name = "pinned"
path = "oci://127.0.0.1:9/plugins/echo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
"""


class FakeComm:
    """What ipykernel's Comm offers the target: an id, send, on_msg, on_close, close."""

    def __init__(self) -> None:
        self.comm_id = uuid.uuid4().hex
        self.sent: list[dict[str, Any]] = []
        self.closed = False
        self._on_msg: Any = None
        self._on_close: Any = None

    def send(self, data: dict[str, Any]) -> None:
        self.sent.append(data)

    def on_msg(self, callback: Any) -> None:
        self._on_msg = callback

    def on_close(self, callback: Any) -> None:
        self._on_close = callback

    def close(self) -> None:
        self.closed = True

    def request(self, **data: Any) -> dict[str, Any]:
        """The front end sends a request; returns the kernel's reply to it."""
        data.setdefault("id", uuid.uuid4().hex)
        self._on_msg({"content": {"comm_id": self.comm_id, "data": data}})
        return next(m for m in self.sent if m.get("type") == "reply" and m["id"] == data["id"])

    def states(self) -> list[dict[str, Any]]:
        return [m["state"] for m in self.sent if m.get("type") == "state"]


class FakeEvents:
    def __init__(self) -> None:
        self.callbacks: dict[str, list[Any]] = {}

    def register(self, event: str, callback: Any) -> None:
        self.callbacks.setdefault(event, []).append(callback)

    def trigger(self, event: str) -> None:
        for callback in self.callbacks.get(event, []):
            callback(None)


class FakeShell:
    def __init__(self) -> None:
        self.events = FakeEvents()
        self.magics: dict[str, Any] = {}

    def find_line_magic(self, name: str) -> Any:
        return self.magics.get(name)

    def run_line_magic(self, name: str, line: str) -> Any:
        return self.magics[name](line)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    (tmp_path / "plugins.toml").write_text(CONFIG)
    session = Session(PluginRegistry(load_config(tmp_path / "plugins.toml")))
    yield session
    session.registry.close()


@pytest.fixture
def shell() -> FakeShell:
    return FakeShell()


@pytest.fixture
def channel(shell: FakeShell, session: Session) -> Iterator[PanelChannel]:
    channel = PanelChannel(shell, session=lambda: session)
    yield channel
    channel.close()


def open_comm(channel: PanelChannel, **data: Any) -> FakeComm:
    comm = FakeComm()
    channel.open(comm, {"content": {"comm_id": comm.comm_id, "target_name": TARGET, "data": data}})
    return comm


def by_name(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in state["providers"]}


def test_open_sends_every_provider_without_loading_any(channel: PanelChannel, session: Session) -> None:
    comm = open_comm(channel)
    [state] = comm.states()
    providers = by_name(state)
    assert list(providers) == ["echo-wasm", "echo-native", "broken", "pinned"]
    assert providers["echo-wasm"]["type"] == "wasm"
    assert providers["echo-native"]["type"] == "native"
    assert providers["pinned"]["type"] == "oci"
    assert {p["status"] for p in providers.values()} == {"not-loaded"}
    assert providers["echo-wasm"]["source"] == {
        "scheme": "bundled",
        "location": "echo.wasm",
        "display": "bundled:echo.wasm",
        "digest": None,
        "layer_digest": None,
    }
    assert providers["pinned"]["source"]["scheme"] == "oci"
    assert providers["pinned"]["source"]["digest"] == "sha256:" + "0123456789abcdef" * 4
    assert providers["echo-wasm"]["allowed_hosts"] is None  # known once loaded
    assert state["default_provider"] == "echo-wasm" and state["stream"] is True
    assert state["config_path"].endswith("plugins.toml")
    assert not session.registry.list()


def test_digests_of_oci_plugins() -> None:
    from types import SimpleNamespace

    from querymt_jupyter.comm import _digest, _layer_digest

    spec = SimpleNamespace(path="oci://127.0.0.1:5000/plugins/echo:1.0")
    assert _digest(spec, None) is None
    assert _digest(spec, SimpleNamespace(digest="sha256:" + "a" * 64)) == "sha256:" + "a" * 64
    blob = SimpleNamespace(path=f"/root/.cache/querymt-jupyter/oci/blobs/sha256_{'b' * 64}/echo.wasm")
    assert _layer_digest(blob) == "sha256:" + "b" * 64
    assert _layer_digest(SimpleNamespace(path="/x/echo.wasm")) is None


def test_load_reports_status_hosts_operations_and_errors(channel: PanelChannel) -> None:
    comm = open_comm(channel)
    reply = comm.request(action="load")
    assert reply["ok"] is True
    assert set(reply["loaded"]) == {"echo-wasm", "echo-native"}
    assert set(reply["failed"]) == {"broken", "pinned"}
    providers = by_name(comm.states()[-1])  # the state was pushed after the load
    for name in ("echo-wasm", "echo-native"):
        assert providers[name]["status"] == "loaded"
        assert providers[name]["error"] is None
        assert providers[name]["allowed_hosts"] == []  # unrestricted: echo names no base_url
        assert {"chat", "chat_stream", "complete", "embed", "list_models"} <= set(providers[name]["operations"])
        assert providers[name]["generation"] in ("A", "B")
    assert providers["broken"]["status"] == "error"
    assert "plugin file not found" in providers["broken"]["error"]
    assert providers["broken"]["operations"] == []


def test_open_can_load_at_once(channel: PanelChannel) -> None:
    comm = open_comm(channel, load=True)
    first, last = comm.states()[0], comm.states()[-1]
    assert by_name(first)["echo-wasm"]["status"] == "not-loaded"  # sent before loading: the panel shows at once
    assert comm.sent[0]["loading"] is True
    assert by_name(last)["echo-wasm"]["status"] == "loaded"
    [done] = [m for m in comm.sent if m["type"] == "reply"]  # ends the panel's "loading…"
    assert (done["id"], done["action"], done["ok"]) == (None, "load", True)


def test_settings_set_the_session_and_name_what_is_invalid(channel: PanelChannel, session: Session) -> None:
    comm = open_comm(
        channel,
        settings={
            "default_provider": "echo-native",
            "default_model": "echo-mini",
            "output_format": "text",
            "stream": False,
        },
    )
    assert (session.default_provider, session.default_model) == ("echo-native", "echo-mini")
    assert (session.output_format, session.stream) == ("text", False)
    assert comm.sent[0]["problems"] == []
    state = comm.states()[0]
    assert (state["default_provider"], state["output_format"], state["stream"]) == ("echo-native", "text", False)

    reply = comm.request(action="settings", settings={"default_provider": "nope", "output_format": "yaml"})
    assert reply["ok"] is False
    assert "'nope' is not in the registry" in reply["message"] and "echo-wasm" in reply["message"]
    assert "'yaml' is not one of markdown" in reply["message"]
    assert (session.default_provider, session.output_format) == ("echo-native", "text")  # unchanged

    assert comm.request(action="settings", settings={"default_provider": "", "stream": True})["ok"]
    assert (session.default_provider, session.stream) == ("echo-native", True)  # empty keeps the kernel's


def test_insert_gives_a_prompt_cell(channel: PanelChannel, session: Session) -> None:
    comm = open_comm(channel)
    reply = comm.request(action="insert", provider="echo-native")
    assert reply == {
        "type": "reply",
        "id": reply["id"],
        "action": "insert",
        "ok": True,
        "source": f"%%querymt echo-native\n{PROMPT}",
        "provider": "echo-native",
        "model": None,
    }
    session.default_model = "echo-mini"
    assert comm.request(action="insert")["source"].startswith("%%querymt echo-wasm:echo-mini\n")
    missing = comm.request(action="insert", provider="nope")
    assert missing["ok"] is False and "nope" in missing["message"] and "echo-native" in missing["message"]


def test_bench_without_the_magic_answers_clearly(channel: PanelChannel) -> None:
    comm = open_comm(channel)
    assert comm.states()[0]["bench_available"] is False
    reply = comm.request(action="bench", provider="echo-wasm")
    assert reply["ok"] is False
    assert "%querymt_bench is not registered" in reply["message"]


def test_bench_with_the_magic(channel: PanelChannel, shell: FakeShell) -> None:
    class Result:
        def __str__(self) -> str:
            return "echo-wasm: 12 µs"

        def _repr_html_(self) -> str:
            return "<table>echo-wasm</table>"

    calls: list[str] = []
    shell.magics["querymt_bench"] = lambda line: calls.append(line) or Result()
    comm = open_comm(channel)
    assert comm.states()[0]["bench_available"] is True
    reply = comm.request(action="bench", provider="echo-native")
    assert (reply["ok"], reply["code"]) == (True, "%querymt_bench echo-native")
    assert calls == []  # the front end runs the line in a cell
    reply = comm.request(action="bench", provider="echo-native", run=True)
    assert calls == ["echo-native"]
    assert (reply["text"], reply["html"]) == ("echo-wasm: 12 µs", "<table>echo-wasm</table>")


def test_config_hands_back_the_magic(channel: PanelChannel) -> None:
    comm = open_comm(channel)
    reply = comm.request(action="config")
    if comm.states()[0]["config_available"]:
        assert reply["code"] == "%querymt config"
    else:
        assert reply["ok"] is False and "config widget" in reply["message"]


def test_unknown_actions_get_a_reply(channel: PanelChannel) -> None:
    comm = open_comm(channel)
    assert comm.request(action="fly")["message"] == "unknown action 'fly'"
    assert comm.request()["ok"] is False


def test_reload_pushes_through_the_session_listener(channel: PanelChannel, session: Session) -> None:
    comm = open_comm(channel)
    comm.request(action="load")
    before = len(comm.states())
    old_registry = session.registry
    session.reload()  # as %querymt reload or the config widget's save do
    assert session.registry is not old_registry
    assert len(comm.states()) == before + 1
    assert by_name(comm.states()[-1])["echo-wasm"]["status"] == "not-loaded"
    reply = comm.request(action="reload")
    assert reply["ok"] and "echo-wasm" in reply["loaded"]
    assert by_name(comm.states()[-1])["echo-wasm"]["status"] == "loaded"


def test_cells_push_only_what_changed(channel: PanelChannel, shell: FakeShell, session: Session) -> None:
    comm = open_comm(channel)
    shell.events.trigger("post_run_cell")
    assert len(comm.states()) == 1  # nothing changed: nothing sent
    session.registry.get("echo-native")  # a %%querymt cell loads its provider lazily
    shell.events.trigger("post_run_cell")
    assert len(comm.states()) == 2
    assert by_name(comm.states()[-1])["echo-native"]["status"] == "loaded"
    session.output_format = "code"  # %querymt default -f code
    shell.events.trigger("post_run_cell")
    assert comm.states()[-1]["output_format"] == "code"


def test_every_open_panel_gets_pushes_until_it_closes(channel: PanelChannel, session: Session) -> None:
    first, second = open_comm(channel), open_comm(channel)
    session.changed()
    session.default_provider = "echo-native"
    channel.push()
    assert first.states()[-1]["default_provider"] == second.states()[-1]["default_provider"] == "echo-native"
    first._on_close({})
    session.default_provider = "echo-wasm"
    channel.push()
    assert first.states()[-1]["default_provider"] == "echo-native"
    assert second.states()[-1]["default_provider"] == "echo-wasm"


# ---- in a real kernel ------------------------------------------------------------------------


class Frontend:
    """The front end's half of the comm protocol, over jupyter_client."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(cwd))

    def execute(self, code: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        reply = self.client.execute_interactive(code, output_hook=messages.append, timeout=120)
        assert reply["content"]["status"] == "ok", messages
        return messages

    def open(self, data: dict[str, Any]) -> str:
        comm_id = uuid.uuid4().hex
        self._send("comm_open", {"comm_id": comm_id, "target_name": TARGET, "data": data})
        return comm_id

    def send(self, comm_id: str, data: dict[str, Any]) -> None:
        self._send("comm_msg", {"comm_id": comm_id, "data": data})

    def _send(self, msg_type: str, content: dict[str, Any]) -> None:
        self.client.shell_channel.send(self.client.session.msg(msg_type, content))

    def wait(self, match: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if match(msg):
                return msg
        raise AssertionError("no matching message")

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def frontend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Frontend]:
    folder = tmp_path_factory.mktemp("kernel")
    (folder / "plugins.toml").write_text(CONFIG)
    frontend = Frontend(folder)
    yield frontend
    frontend.close()


def test_in_a_kernel_the_target_appears_with_the_extension(frontend: Frontend) -> None:
    # Before %load_ext the kernel has no such target: it closes the comm (the panel's "not loaded" state).
    early = frontend.open({})
    frontend.wait(lambda m: m["msg_type"] == "comm_close" and m["content"]["comm_id"] == early)

    messages = frontend.execute("%load_ext querymt_jupyter")
    # The extension announces itself to front ends: a comm to their "querymt" target, closed at once.
    assert any(m["msg_type"] == "comm_open" and m["content"]["target_name"] == TARGET for m in messages)

    comm_id = frontend.open({"settings": {"output_format": "text"}, "load": True})
    is_ours = lambda m: m["msg_type"] == "comm_msg" and m["content"]["comm_id"] == comm_id
    is_state = lambda m: is_ours(m) and m["content"]["data"]["type"] == "state"
    first = frontend.wait(is_ours)["content"]["data"]
    assert first["type"] == "state"
    assert [p["name"] for p in first["state"]["providers"]] == ["echo-wasm", "echo-native", "broken", "pinned"]
    assert first["state"]["output_format"] == "text"
    done = frontend.wait(is_ours)["content"]["data"]
    assert (done["type"], done["action"], set(done["loaded"])) == ("reply", "load", {"echo-wasm", "echo-native"})
    loaded = frontend.wait(is_state)["content"]["data"]["state"]
    assert by_name(loaded)["echo-wasm"]["status"] == "loaded"

    frontend.send(comm_id, {"id": "r1", "action": "insert", "provider": "echo-native"})
    reply = frontend.wait(lambda m: is_ours(m) and m["content"]["data"].get("id") == "r1")["content"]["data"]
    assert reply["source"].startswith("%%querymt echo-native\n")

    # A cell that changes what the panel shows pushes a new state (sent during the cell: its output hook sees it).
    messages = frontend.execute("%querymt default echo-native -f code")
    [pushed] = [m["content"]["data"]["state"] for m in messages if is_state(m)]
    assert (pushed["default_provider"], pushed["output_format"]) == ("echo-native", "code")
    assert not [m for m in frontend.execute("x = 1") if is_state(m)]  # nothing changed: nothing sent
