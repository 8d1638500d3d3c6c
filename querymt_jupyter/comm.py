"""The JupyterLab side panel's channel into the kernel: the Jupyter comm target ``querymt``.

``%load_ext querymt_jupyter`` registers the target and *announces* itself: it opens a comm to the front
end's ``querymt`` target and closes it at once, so a panel that found no target learns without polling
that it can connect now. Each panel then opens its own comm (a front-end-opened comm is answered by this
kernel only, whatever other front ends are attached). On open the kernel applies the panel's settings
and sends the registry state; after that it pushes the state again whenever it changes: when the
session's registry is replaced (``Session.changed()``: load, reload, the config widget's save) and after
each cell whose run changed what the panel shows (a provider loaded lazily, ``%querymt default``) —
a comparison of the state in memory, no polling of files.

The wire: the front end sends ``{"id", "action", ...}`` and gets exactly one
``{"type": "reply", "id", "ok", "message"?, ...}`` per request; the kernel sends
``{"type": "state", "state": {...}}`` on its own. Actions:

    state      send the state now
    load       load every provider (statuses, allowed hosts and operations are known after loading)
    reload     re-read the config file, reload every provider
    insert     the source of a ``%%querymt NAME[:MODEL]`` cell for a provider
    bench      ``%querymt_bench NAME``: run it here (``"run": true``) or check it exists and hand back
               the line for a notebook cell
    config     the line that opens the config widget (``%querymt config``)
    settings   default provider and model, output format, streaming
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable
from typing import Any

from . import session as sessions
from .answer import FORMATS
from .errors import ProviderNotFoundError, QueryMTError
from .version import __version__

__all__ = ["PROTOCOL", "TARGET", "PanelChannel", "channel", "serve"]

_LOG = logging.getLogger(__name__)
_BLOB = re.compile(r"[/\\]blobs[/\\]sha256_([0-9a-f]{64})[/\\]")

TARGET = "querymt"
PROTOCOL = 1
BENCH_MAGIC = "querymt_bench"
PROMPT = "Say hello to QueryMT in one short sentence."

# What a panel lists as "operations": the user-level call, and the exports that provide it in
# generation B (the plugin does HTTP) or A (the host does, around request/parse exports).
_OPERATIONS = {
    "chat": ("chat", "chat_request"),
    "chat_stream": ("chat_stream", "chat_stream_request"),
    "complete": ("complete", "complete_request"),
    "embed": ("embed", "embed_request"),
    "list_models": ("list_models", "list_models_request", "list_models_static"),
}


class PanelChannel:
    """Serves every open panel comm of one kernel: state pushes and request/reply."""

    def __init__(self, shell: Any, session: Callable[[], sessions.Session] = sessions.current) -> None:
        self.shell = shell
        self.comms: dict[str, Any] = {}
        self._session = session
        self._watched: sessions.Session | None = None
        self._last: dict[str, Any] | None = None
        if shell is not None and hasattr(shell, "events"):
            shell.events.register("post_run_cell", self._after_cell)

    # ---- comm lifecycle ----------------------------------------------------------------------

    def open(self, comm: Any, open_msg: dict[str, Any]) -> None:
        """The comm target's callback: a panel connected."""
        self.comms[comm.comm_id] = comm
        comm.on_msg(self._on_msg)
        comm.on_close(lambda _msg, comm_id=comm.comm_id: self.comms.pop(comm_id, None))
        data = (open_msg.get("content") or {}).get("data") or {}
        problems = self.apply_settings(data.get("settings") or {})
        state = self.state()
        self._last = state
        load = bool(data.get("load"))
        comm.send({"type": "state", "state": state, "problems": problems, "loading": load})
        if load:
            # handle() turns failures into a reply: an exception here would make the kernel close the comm.
            comm.send({"type": "reply", "id": None, **self.handle({"action": "load"}), "action": "load"})
            self.push()

    def _on_msg(self, msg: dict[str, Any]) -> None:
        content = msg.get("content") or {}
        comm = self.comms.get(content.get("comm_id"))
        request = content.get("data") or {}
        reply = self.handle(request)
        if comm is not None:
            comm.send({"type": "reply", "id": request.get("id"), "action": request.get("action"), **reply})
        self.push()

    def close(self) -> None:
        for comm in list(self.comms.values()):
            comm.close()
        self.comms.clear()
        if self._watched is not None and self._on_changed in self._watched.listeners:
            self._watched.listeners.remove(self._on_changed)
        self._watched = None

    # ---- pushing the state -------------------------------------------------------------------

    def push(self, *, force: bool = False) -> None:
        """Send the state to every open panel if it differs from the last one sent."""
        if not self.comms:
            return
        state = self.state()
        if state == self._last and not force:
            return
        self._last = state
        for comm in list(self.comms.values()):
            comm.send({"type": "state", "state": state})

    def _on_changed(self, _session: sessions.Session) -> None:
        self.push()

    def _after_cell(self, _result: Any = None) -> None:
        self.push()

    def _watch(self, session: sessions.Session) -> None:
        """Listen to the session in use (``sessions.reset()`` may have replaced the old one)."""
        if session is self._watched:
            return
        if self._watched is not None and self._on_changed in self._watched.listeners:
            self._watched.listeners.remove(self._on_changed)
        session.listeners.append(self._on_changed)
        self._watched = session

    def state(self) -> dict[str, Any]:
        """What a panel shows, as JSON. Never loads a plugin."""
        session = self._session()
        self._watch(session)
        registry = session.registry
        return {
            "protocol": PROTOCOL,
            "version": __version__,
            "config_path": str(registry.config.path) if registry.config.path else None,
            "default_provider": session.default_provider,
            "default_model": session.default_model,
            "output_format": session.output_format,
            "stream": session.stream,
            "formats": list(FORMATS),
            "bench_available": self._bench_magic() is not None,
            "config_available": importlib.util.find_spec("querymt_jupyter.widgets") is not None,
            "providers": [_provider_state(spec, registry) for spec in registry.config.providers],
        }

    # ---- requests ----------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request -> its reply (without ``type``/``id``): ``ok`` and the action's fields."""
        action = request.get("action")
        handler = getattr(self, f"_do_{action}", None) if isinstance(action, str) else None
        if handler is None:
            return {"ok": False, "message": f"unknown action {action!r}"}
        try:
            return {"ok": True, **handler(request)}
        except (QueryMTError, ValueError, TypeError) as error:
            return {"ok": False, "message": str(error)}
        except Exception as error:  # noqa: BLE001 - the panel waits for a reply: never leave it without one
            return {"ok": False, "message": f"{type(error).__name__}: {error}"}

    def _do_state(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {"state": self.state()}

    def _do_load(self, _request: dict[str, Any]) -> dict[str, Any]:
        report = self._session().registry.load_all()
        return {"loaded": report.loaded, "failed": {name: str(error) for name, error in report.failed.items()}}

    def _do_reload(self, request: dict[str, Any]) -> dict[str, Any]:
        self._session().reload()  # Session.changed() pushes the fresh (not yet loaded) state
        return self._do_load(request)

    def _do_insert(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self._session()
        name = request.get("provider") or session.default_provider
        if name not in session.registry.names():
            raise ProviderNotFoundError(name, session.registry.names())
        model = request.get("model") or (session.default_model if name == session.default_provider else None)
        target = f"{name}:{model}" if model else name
        prompt = request.get("prompt") or PROMPT
        return {"source": f"%%querymt {target}\n{prompt}", "provider": name, "model": model}

    def _do_bench(self, request: dict[str, Any]) -> dict[str, Any]:
        session = self._session()
        name = request.get("provider") or session.default_provider
        if name not in session.registry.names():
            raise ProviderNotFoundError(name, session.registry.names())
        line = f"%{BENCH_MAGIC} {name}"
        if self._bench_magic() is None:
            raise ValueError(
                f"%{BENCH_MAGIC} is not registered in this kernel, so the panel cannot benchmark {name}: "
                "%load_ext querymt_jupyter did not add the benchmark magic"
            )
        if not request.get("run"):
            return {"code": line, "provider": name}
        result = self.shell.run_line_magic(BENCH_MAGIC, name)
        reply: dict[str, Any] = {"code": line, "provider": name, "text": "" if result is None else str(result)}
        if hasattr(result, "_repr_html_"):
            reply["html"] = result._repr_html_()
        return reply

    def _do_config(self, _request: dict[str, Any]) -> dict[str, Any]:
        if importlib.util.find_spec("querymt_jupyter.widgets") is None:
            raise ValueError("this querymt_jupyter has no config widget (querymt_jupyter.widgets is missing)")
        return {"code": "%querymt config"}

    def _do_settings(self, request: dict[str, Any]) -> dict[str, Any]:
        problems = self.apply_settings(request.get("settings") or {})
        if problems:
            raise ValueError("; ".join(problems))
        return {}

    def apply_settings(self, settings: dict[str, Any]) -> list[str]:
        """Set what is valid, return a message per invalid setting. Empty values keep the kernel's."""
        session = self._session()
        problems: list[str] = []
        provider = settings.get("default_provider")
        if provider:
            if provider in session.registry.names():
                session.default_provider = provider
            else:
                problems.append(
                    f"default provider {provider!r} is not in the registry "
                    f"(known: {', '.join(session.registry.names()) or 'none'})"
                )
        if "default_model" in settings and (not provider or provider in session.registry.names()):
            session.default_model = settings["default_model"] or None
        fmt = settings.get("output_format")
        if fmt:
            if fmt in FORMATS:
                session.output_format = fmt
            else:
                problems.append(f"output format {fmt!r} is not one of {', '.join(FORMATS)}")
        if "stream" in settings:
            if isinstance(settings["stream"], bool):
                session.stream = settings["stream"]
            else:
                problems.append(f"stream must be true or false, not {settings['stream']!r}")
        return problems

    def _bench_magic(self) -> Any:
        finder = getattr(self.shell, "find_line_magic", None)
        return finder(BENCH_MAGIC) if finder is not None else None


def _provider_state(spec: Any, registry: Any) -> dict[str, Any]:
    factory = registry.loaded(spec.name)
    error = registry.errors.get(spec.name)
    source = spec.source
    if factory is not None:
        kind, status = factory.plugin_type, "loaded"
    else:
        kind, status = (source.kind if source else "oci"), ("error" if error else "not-loaded")
    return {
        "name": spec.name,
        "type": kind,
        "generation": factory.generation if factory else None,
        "source": {
            "scheme": source.scheme if source else "oci",
            "location": source.location if source else spec.path,
            "display": spec.path,
            "digest": _digest(spec, factory),
            "layer_digest": _layer_digest(factory),
        },
        "status": status,
        "error": str(error) if error and not factory else None,
        # None: not known before loading (the plugin's own base_url adds a host)
        "allowed_hosts": factory.allowed_hosts if factory else None,
        "operations": [op for op, exports in _OPERATIONS.items() if factory and any(map(factory.supports, exports))],
    }


def _digest(spec: Any, factory: Any) -> str | None:
    """What an OCI reference resolved to, when known: a ``digest`` the loader recorded, or the pinned one."""
    for owner in (factory, getattr(factory, "pulled", None), getattr(factory, "instance", None), spec):
        digest = getattr(owner, "digest", None) if owner is not None else None
        if isinstance(digest, str) and digest:
            return digest
    return spec.path.rpartition("@")[2] if "@sha256:" in spec.path else None


def _layer_digest(factory: Any) -> str | None:
    """The digest of the plugin file itself, for files from the digest-keyed OCI cache (blobs/sha256_<hex>/)."""
    match = _BLOB.search(str(getattr(factory, "path", ""))) if factory is not None else None
    return f"sha256:{match[1]}" if match else None


_channel: PanelChannel | None = None


def channel() -> PanelChannel | None:
    """This kernel's channel, once ``serve`` ran."""
    return _channel


def serve(shell: Any) -> PanelChannel:
    """Register the ``querymt`` comm target (once per kernel) and announce it to the front ends."""
    global _channel
    if _channel is None or _channel.shell is not shell:
        if _channel is not None:
            _channel.close()
        _channel = PanelChannel(shell)
    kernel = getattr(shell, "kernel", None)
    if kernel is None:  # a plain IPython shell: no front end to talk to
        return _channel
    import comm

    comm.get_comm_manager().register_target(TARGET, _channel.open)
    try:
        # Tell panels already watching this kernel that they can connect now; they open their own comm.
        announce = comm.create_comm(target_name=TARGET, data={"type": "announce", "protocol": PROTOCOL})
        announce.close()
    except Exception:  # noqa: BLE001 - announcing is best effort: panels also connect when they open
        _LOG.debug("could not announce the querymt comm target", exc_info=True)
    return _channel
