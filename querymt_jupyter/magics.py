"""``%%querymt`` and ``%querymt``: prompting providers from cells, and managing the registry.

    %%querymt echo-wasm:echo-1 -p temperature=0.2 --chat notes -o reply
    Summarise {df} in one sentence.

    %%querymt openai,tinyllm --over tickets -o labelled --concurrency 8
    Classify as bug, question or praise: {title}

The cell magic streams the reply into one output (a display id updated per chunk), binds an ``Answer``
(``-o``) and returns it. The line magic's sub-commands (``%querymt help``) inspect and steer the
kernel's ``Session``. Everything here is argument handling and display; the work is done by the
session, the providers and the prompt log.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, needs_local_scope
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from . import session as sessions
from .answer import FORMATS, Answer, parse_json_reply, render
from .batch import batch
from .interpolate import interpolate
from .keys import check_keys
from .provider import Provider, call_context
from .registry import PluginRegistry
from .usage import usage_errors

__all__ = ["QueryMTMagics"]

_HELP = """\
%%querymt [NAME[:MODEL]] [options]   send the cell as a prompt (options: %%querymt?)
%%querymt NAME[,NAME] --over DF      the cell as a template for every row of DF: a DataFrame back
%querymt list                        providers: type, source, status, load errors
%querymt models NAME                 the provider's live model list
%querymt schema NAME                 the plugin's config JSON Schema
%querymt load PATH                   use another plugins.toml / .json / .yaml
%querymt reload                      re-read the config and reload every plugin
%querymt config                      edit plugins.toml in a form (widget)
%querymt chat [NAME]                 a chat widget on a provider
%querymt log [-n N | --clear]        the prompt log as a DataFrame, or emptied
%querymt history [NAME]              a conversation's exchanges
%querymt reset [NAME]                forget a conversation (all without NAME)
%querymt default NAME[:MODEL] [-f FORMAT] [--stream|--no-stream]
%querymt push SOURCE oci://HOST/REPO:TAG [--only wasm|native] [--sign-key PEM]
                                     publish a plugin's builds as one image index
%querymt pull oci://REF [--wasm]     fetch into the cache, choosing this machine's build
%querymt inspect oci://REF           the index: platforms, digests, sizes
%querymt help                        this text"""


def _target(text: str | None) -> tuple[str | None, str | None]:
    if not text:
        return None, None
    name, _, model = text.partition(":")
    return name or None, model or None


def _parse(magic: Any, line: str) -> Any:
    """Arguments split the shell's way (shlex), so quotes group words and are removed."""
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise UsageError(f"cannot parse the magic line: {error}") from None
    return magic.parser.parse_args(words)


def typed_parameters(pairs: list[str], schema: dict[str, Any], provider: str) -> dict[str, Any]:
    """``key=value`` pairs typed by the plugin's config schema; an unknown key is an UnknownKeyError."""
    properties = schema.get("properties") or {}
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise UsageError(f"-p expects key=value, got {pair!r}")
        check_keys({key: raw}, schema, provider)
        parameters[key] = _typed(raw, properties.get(key, {}), key)
    return parameters


def _typed(raw: str, schema: dict[str, Any], key: str) -> Any:
    kinds = schema.get("type", "string")
    kinds = [kinds] if isinstance(kinds, str) else [k for k in kinds if k != "null"]
    try:
        if "integer" in kinds:
            return int(raw)
        if "number" in kinds:
            return float(raw)
        if "boolean" in kinds:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("true", "1", "yes")
        if "array" in kinds or "object" in kinds:
            return json.loads(raw) if raw.strip()[:1] in "[{" else [v.strip() for v in raw.split(",")]
    except ValueError:
        raise UsageError(f"parameter {key}: {raw!r} is not a valid {' or '.join(kinds)}") from None
    return raw


class _Output:
    """One output area per prompt: displayed with the first text, updated in place after that.

    Each display message costs the kernel about a millisecond, so none is sent without new text.
    """

    def __init__(self) -> None:
        self.handle: Any = None
        self.format = ""

    def show(self, text: str, fmt: str) -> None:
        self.format = fmt
        if self.handle is None:
            self.handle = display(render(text, fmt), display_id=True)
        else:
            self.handle.update(render(text, fmt))


@magics_class
class QueryMTMagics(Magics):
    """The magics; one instance per shell, sharing the kernel's Session."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.errors: dict[int, str] = {}  # {Err[n]}: the error text of each failed cell, by prompt number
        shell.events.register("post_run_cell", self._remember_error)

    def _remember_error(self, result: Any) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is not None and result.execution_count:
            self.errors[result.execution_count] = f"{type(error).__name__}: {error}"

    # ---- the cell magic ----------------------------------------------------------------------

    @magic_arguments()
    @argument("target", nargs="?", help="NAME[:MODEL]; default: %%querymt default")
    @argument("-f", "--format", choices=FORMATS, help="how to show the reply (default: markdown)")
    @argument("-o", "--output", metavar="VAR", help="also store the Answer in this variable")
    @argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="a provider parameter, typed by the plugin's schema; repeatable")
    @argument("--system", metavar="TEXT", help="a system prompt for this call")
    @argument("--chat", metavar="NAME", help="keep a named conversation; re-running a cell replaces its turn")
    @argument("--no-stream", action="store_true", help="wait for the whole reply instead of streaming it")
    @argument("--no-interp", action="store_true", help="send the cell as written: no {name} substitution")
    @argument("--over", metavar="DF", help="a DataFrame: send the cell as a template for each row (NAME,NAME: several providers)")
    @argument("--concurrency", type=int, default=8, metavar="N", help="with --over: calls in flight at once (default 8)")
    @argument("--redo", action="store_true", help="with --over: ask every row again, answered or not")
    @argument("--dask", action="store_true", help="with --over: answer on Dask workers (a LocalCluster unless one is running)")
    @needs_local_scope
    @cell_magic
    @usage_errors
    def querymt(self, line: str, cell: str, local_ns: dict[str, Any] | None = None) -> Any:
        """Send the cell to a provider as a prompt and show the reply as it streams."""
        args = _parse(self.querymt, line)
        session = sessions.current()
        cell = cell.rstrip("\n")  # the newline that ends every cell is not part of the prompt
        if args.over:
            return self._over(session, args, cell, local_ns)
        name, model = _target(args.target)
        prompt = cell if args.no_interp else self._interpolate(cell, local_ns)
        provider = self._provider(session, name, model, args.param)
        messages = self._messages(session, args, prompt, cell)
        fmt = args.format or session.output_format
        stream = session.stream and not args.no_stream
        with call_context(source="magic", execution_count=self.shell.execution_count, conversation=args.chat):
            answer = self._ask(provider, messages, fmt, stream)
        if args.chat:
            session.conversation(args.chat).record(self._cell_key(cell), prompt, answer.text)
        if args.output:
            self.shell.user_ns[args.output] = answer
        return answer

    def _over(self, session: sessions.Session, args: Any, cell: str, local_ns: dict[str, Any] | None) -> Any:
        """``--over DF``: the cell as a batch template; columns and the notebook's names are its fields."""
        if args.chat or args.no_interp or args.no_stream:
            raise UsageError("--over answers each row on its own: it takes no --chat, --no-interp or --no-stream")
        namespace = {**self.shell.user_ns, **(local_ns or {})}
        if args.over not in namespace:
            raise UsageError(f"--over {args.over}: no variable named {args.over!r} in the notebook")
        labels = (args.target or session.default_provider).split(",")
        first = session.registry[_target(labels[0])[0] or session.default_provider]
        table = batch(
            namespace[args.over],
            cell,
            labels,
            params=typed_parameters(args.param, first.config_schema(), first.name),
            system=args.system,
            fmt="json" if args.format == "json" else "text",
            concurrency=args.concurrency,
            resume=not args.redo,
            engine="dask" if args.dask else "local",
            registry=session.registry,
            namespace={**namespace, "Err": self.errors},
        )
        if args.output:
            self.shell.user_ns[args.output] = table
        return table

    def _interpolate(self, cell: str, local_ns: dict[str, Any] | None) -> str:
        namespace = {**self.shell.user_ns, **(local_ns or {})}
        return interpolate(cell, namespace, {"Err": self.errors})

    def _provider(self, session: sessions.Session, name: str | None, model: str | None, pairs: list[str]) -> Provider:
        factory = session.registry[name or session.default_provider]
        parameters = typed_parameters(pairs, factory.config_schema(), factory.name)
        return session.provider(factory.name, model, **parameters)

    def _messages(self, session: sessions.Session, args: Any, prompt: str, cell: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        if args.system:
            messages.append({"role": "system", "content": args.system})
        if args.chat:
            messages += session.conversation(args.chat).messages(excluding=self._cell_key(cell))
        messages.append({"role": "user", "content": prompt})
        return messages

    def _cell_key(self, cell: str) -> str:
        """The running cell's id when the front end sends one, else a hash of its source."""
        kernel = getattr(self.shell, "kernel", None)
        parent = kernel.get_parent() if kernel is not None and hasattr(kernel, "get_parent") else {}
        cell_id = (parent or {}).get("metadata", {}).get("cellId")
        return cell_id or "source:" + hashlib.sha1(cell.encode()).hexdigest()[:16]

    def _ask(self, provider: Provider, messages: list[dict[str, Any]], fmt: str, stream: bool) -> Answer:
        started = time.perf_counter()
        output = _Output()
        if stream:
            text, usage = self._stream_into(output, provider, messages, fmt)
            raw = None
        else:
            reply = provider.chat(messages)
            text, usage, raw = reply.text or "", reply.usage, reply.raw
        answer = Answer(
            text,
            provider=provider.factory.name,
            model=provider.model,
            usage=usage,
            latency_ms=(time.perf_counter() - started) * 1000,
            raw=raw,
            format=fmt,
        )
        if fmt == "json":
            try:
                answer.data = parse_json_reply(text)
            except ValueError as error:
                raise UsageError(f"-f json: {error}") from None
        if not stream or output.format != fmt or output.handle is None:
            output.show(text, fmt)  # the final rendering, unless the last streamed update was it already
        answer.mark_shown()
        return answer

    @staticmethod
    def _stream_into(output: _Output, provider: Provider, messages: list[dict[str, Any]], fmt: str) -> tuple[str, Any]:
        # Markdown and HTML re-render as they grow; code and JSON show as text until complete.
        live = fmt if fmt in ("markdown", "html", "text") else "text"
        parts: list[str] = []
        usage = None
        for chunk in provider.chat_stream(messages):
            if chunk.text:
                parts.append(chunk.text)
                output.show("".join(parts), live)
            elif chunk.kind == "usage":
                usage = chunk.value
        return "".join(parts), usage

    # ---- the line magic ----------------------------------------------------------------------

    @line_magic("querymt")
    @usage_errors
    def querymt_line(self, line: str) -> Any:
        """Inspect and steer the kernel's plugin registry: %querymt help."""
        words = shlex.split(line)
        command, rest = (words[0], words[1:]) if words else ("help", [])
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            raise UsageError(f"unknown sub-command {command!r}\n{_HELP}")
        return handler(rest)

    def _cmd_help(self, _: list[str]) -> None:
        print(_HELP)

    def _cmd_list(self, _: list[str]) -> Any:
        import pandas as pd

        registry = sessions.current().registry
        registry.load_all()
        rows = []
        for spec in registry.config.providers:
            factory = registry.loaded(spec.name)
            error = registry.errors.get(spec.name)
            rows.append(
                {
                    "name": spec.name,
                    "type": factory.plugin_type if factory else (spec.source.kind if spec.source else "oci"),
                    "generation": factory.generation if factory else None,
                    "source": spec.path,
                    "status": "loaded" if factory else "error",
                    "allowed_hosts": ", ".join(factory.allowed_hosts) if factory else "",
                    "error": str(error) if error else "",
                }
            )
        return pd.DataFrame(rows).set_index("name")

    def _cmd_models(self, rest: list[str]) -> Any:
        import pandas as pd

        name = self._one_name(rest, "models")
        return pd.DataFrame({"model": sessions.current().registry[name].list_models()})

    def _cmd_schema(self, rest: list[str]) -> Any:
        from IPython.display import JSON

        return JSON(sessions.current().registry[self._one_name(rest, "schema")].config_schema())

    def _cmd_load(self, rest: list[str]) -> Any:
        session = sessions.current()
        session.use_registry(PluginRegistry.from_path(self._one_name(rest, "load")))
        return self._cmd_list([])

    def _cmd_reload(self, _: list[str]) -> Any:
        sessions.current().reload()
        return self._cmd_list([])

    def _cmd_config(self, _: list[str]) -> Any:
        from .widgets import ConfigWidget

        return ConfigWidget(session=sessions.current())

    def _cmd_chat(self, rest: list[str]) -> Any:
        from .widgets import ChatWidget

        return ChatWidget(rest[0] if rest else None, session=sessions.current())

    def _cmd_log(self, rest: list[str]) -> Any:
        log = sessions.current().log
        last = 20
        if rest == ["--clear"]:
            print(f"removed {log.clear()} rows from the prompt log ({log.path})")
            return None
        if rest[:1] == ["-n"] and len(rest) == 2 and rest[1].isdigit():
            last = int(rest[1])
        elif rest:
            raise UsageError("usage: %querymt log [-n N | --clear]")
        return log.frame(last)

    def _cmd_history(self, rest: list[str]) -> Any:
        import pandas as pd

        session = sessions.current()
        names = rest or list(session.conversations)
        rows = [
            {"conversation": name, "turn": i + 1, "prompt": e.prompt, "answer": e.answer}
            for name in names
            for i, e in enumerate(session.conversation(name).exchanges)
        ]
        return pd.DataFrame(rows, columns=["conversation", "turn", "prompt", "answer"])

    def _cmd_reset(self, rest: list[str]) -> None:
        session = sessions.current()
        for name in rest or list(session.conversations):
            session.conversation(name).reset()

    def _cmd_default(self, rest: list[str]) -> None:
        session = sessions.current()
        options = [w for w in rest if w.startswith("-")]
        targets = [w for w in rest if not w.startswith("-")]
        if "-f" in rest or "--format" in rest:
            flag = "-f" if "-f" in rest else "--format"
            position = rest.index(flag)
            fmt = rest[position + 1] if position + 1 < len(rest) else ""
            if fmt not in FORMATS:
                raise UsageError(f"format must be one of {', '.join(FORMATS)}")
            session.output_format = fmt
            targets.remove(fmt)
        if "--stream" in options or "--no-stream" in options:
            session.stream = "--stream" in options
        if targets:
            name, model = _target(targets[0])
            session.registry[name or session.default_provider]  # an unknown name fails here, listing the known
            session.default_provider, session.default_model = name or session.default_provider, model
        print(
            f"default: {session.default_provider}{':' + session.default_model if session.default_model else ''}"
            f", format {session.output_format}, {'streaming' if session.stream else 'not streaming'}"
        )

    def _cmd_push(self, rest: list[str]) -> Any:
        return self._oci("push", rest)

    def _cmd_pull(self, rest: list[str]) -> Any:
        return self._oci("pull", rest)

    def _cmd_inspect(self, rest: list[str]) -> Any:
        return self._oci("inspect", rest)

    @staticmethod
    def _oci(command: str, rest: list[str]) -> Any:
        """The console command's parser and code, with the session's config (its [oci] table, its providers)."""
        from .oci import commands  # here, not at the top: the OCI client (oras) is paid for by its users only

        try:
            args = commands.parse([command, *rest])  # a CommandLineError is a QueryMTError: a one-line UsageError
        except SystemExit:  # -h: argparse printed the help
            return None
        return commands.execute(args, sessions.current().registry.config).frame()

    @staticmethod
    def _one_name(rest: list[str], command: str) -> str:
        if len(rest) != 1:
            raise UsageError(f"usage: %querymt {command} NAME")
        return rest[0]
