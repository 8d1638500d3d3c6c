"""The teaching notebooks in notebooks/: stored clean, and executed in a real kernel with their claims checked.

Every notebook runs top to bottom with nbclient in a fresh ``python3`` kernel. Its working directory is a
temporary copy of notebooks/, so nothing is written into the repository, and the prompt log
(``QUERYMT_JUPYTER_LOG``) goes to a temporary file. Running without an exception is not enough to pass.
``CLAIMS`` lists, for each notebook, text that its outputs must contain: the things the notebook tells its
reader it shows (a host was blocked, a file could not be read from Wasm, the answers were byte-identical...).
``ABSENT`` lists text that must never appear. A notebook that is not listed in ``CLAIMS`` fails: add its claims there.

Notebooks are stored without outputs (execution_count null, outputs []), so that diffs show only what a
person changed. That is enforced here for every notebook, whoever wrote it.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))

# Regular expressions searched in the text of all of a notebook's outputs (stream text, text/plain and
# text/markdown of results and displays, joined with newlines).
CLAIMS: dict[str, list[str]] = {
    "01-quickstart.ipynb": [
        r"tinyllm\s+(native|wasm)\s+B\s+bundled:tinyllm\s+loaded",  # the bundled language model, offline
        r"Answer\(['\"].+, provider='tinyllm', model=[^,]+, \d+ tokens, \d+ ms\)",  # a reply, with its usage
        r"echo: Explain Wasm sandboxes like a dict \{'a': 1\} would\.",  # {topic} filled in, other braces kept
        r"echo: same\? \| echo: same\? \| True",
        r"skipped: no OpenAI-compatible endpoint is configured\. Set OPENAI_BASE_URL",  # CI unsets it
    ],
    "04-measuring-the-cost.ipynb": [
        r"Wasm/native median ratio by operation:",
        r"noop +\d+\.\d+x",
        r"embed +\d+\.\d+x",
        r"the boundary costs Wasm more than compute does: True",
        r"wasm / native",
    ],
    "02-two-kinds-of-plugin.ipynb": [
        r"(ELF shared object|Mach-O dylib|PE DLL)",
        r"WebAssembly module",
        r"sandboxed\s+False\s+True",
        r"load, median \(ms\)",
        r"all identical: True",  # name, schema, models, chat, complete, embed and every stream chunk
        r"embed\s+\d+\s+([0-9a-f]{16})\s+\1\s+True",
        r"echo: One source, two builds\.",
    ],
    "03-the-sandbox.ipynb": [
        r"127\.0\.0\.1:\d+/v1/models\s+-> HTTP 200",
        r"HostBlockedError: plugin 'sandbox-native' may not reach host 'localhost'",
        r"HostBlockedError: plugin 'sandbox-wasm' may not reach host 'localhost'",
        r'hint: add "localhost" to allowed_hosts',
        r"blocked requests that reached the server: 0",
        r"native -> 'the key is under the doormat\\n'",
        r"wasm   -> 'IoError: sandbox-wasm: io_error: fopen\([^)]*secret\.txt\)",
        r"extism:host/user:\n\s+qmt_http_request\n",  # the module's only way out
        r"native -> HTTP/1\.1 200 OK",
        r"blocked host refused for both builds: True",
        r"native read the file: True",
        r"wasm read the file: False",
        r"native socket bypassed allowed_hosts: True",
        r"wasm opened a socket: False",
    ],
    "05-configuration.ipynb": [
        r"same providers from TOML, JSON and YAML: True",
        r"GREETING unset -> hello: one two three\n",  # ${VAR:-default}, and max_tokens = 3 applied
        r"GREETING=ahoy  -> ahoy: one two three\n",
        r"what the file still says: \$\{GREETING:-hello\}: ",
        r"dimensions\s+integer\s+256",  # the schema as a table
        r"model set in the file: False -> provider\.model: echo-1",
        r"dimensions set in the file: False -> embedding length: 256",
        r"typo\.toml:\d+ \[providers\[0\] \(greeter\)\.config\.max_token\]: the config of 'greeter' has no key "
        r"'max_token'; did you mean 'max_tokens'\?",  # the file, the line, the fix
        r"UnknownKeyError -> greeter has no key 'temperatur'; did you mean 'temperature'\?",
        r"sent to the plugin:\s+\{'prefix': 'ahoy: ', 'max_tokens': 3\}",
        r"top_k or allowed_hosts reached the plugin: False",
        r"api_key_name: OPENAI_API_KEY",
        r"without the variable -> AuthError: local-openai: auth_error",
        r"with the variable    -> The key came from the environment\.",
        r"the server received a bearer key: True \| it matches: True",
        r"load status after save: \{'greeter': 'loaded'\}",
        r"-max_tokens = 3 +# echo replies with at most this many words\n\+max_tokens = 5 +# echo replies",
        r"comments kept: True",
        r"after the save, the kernel's greeter says: ahoy: one two three four five\n",
    ],
    "06-the-interface.ipynb": [
        r"b'echo'",
        r'"text":"you said: Hello, boundary!"',
        r"same bytes from the native build: True",
        r'exit code 1 -> \{"payload":\{"type":"json_error"',
        r"JsonError -> \{'type': 'json_error'",
        r"host → plugin\s+chat_stream\n(plugin → host\s+↳ yield_chunk\n)+",  # host functions inside the export
        r"host → plugin\s+from_config\nhost → plugin\s+chat_request\nhost → plugin\s+parse_chat_response",
        r"POST http://127\.0\.0\.1:\d+/v1/chat/completions",
        r"data: \[DONE\]⏎",
        r'\{"chunk":\{"done":\{"finish_reason":"Stop"\}\}',
        r"host → plugin\s+chat\nplugin → host\s+↳ http_request",
        r"same answer: True",
    ],
    "07-write-a-plugin.ipynb": [
        r"building shout \(wasm\)",
        r"error: call to undeclared function 'qmt_buf_putz'",
        r"loaded: shout-native, shout-wasm, echo-native, echo-wasm",
        r"exports: _initialize, chat, chat_stream, config_schema, from_config, init_logging, list_models, name",
        r"HELLO FROM PYTHON!!!",
        r"MAKE SOME NOISE!!!",
        r"IS THIS THING ON\?!",
        r"InvalidRequestError - shout-native: invalid_request: there is no user message to shout",
        r"shout-wasm\s+wasm\s+\d",
        r"echo-native\s+native\s+\d",
    ],
    "08-distribution.ipynb": [
        r"registry listening on 127\.0\.0\.1:\d+",
        r"index\s+application/vnd\.oci\.image\.index\.v1\+json",  # inspect: the index and both builds
        r"(linux|darwin|windows)/\w+\s+native\s+application/vnd\.oci\.image\.layer\.v1\.tar\+gzip",
        r"wasi/wasm\s+wasm\s+application/vnd\.wasm\.v1\.layer\+wasm",
        r"cached before: \[\]",
        r"echo-oci: native build \(\w+/\w+\) from ",
        r"with allow_native = false: wasm build \(wasi/wasm\)",
        r"cached now: \['\S+', 'plugin\.wasm'\]",
        r"downloaded\s+False\noffline\s+False",
        r"second pull downloaded: False",
        r"the tag now gives:\s+wasm build\nthe pinned digest gives: native build",
        r"registry stopped: True",
        r"pinned reference loaded with the registry stopped: True",
    ],
    "09-a-language-model.ipynb": [
        r"[\d,]+ parameters: \d+ layers, \d+ numbers per token, a vocabulary of \d+ tokens, a context of \d+ tokens",
        r"streamed in \d+ pieces: \['",
        r"the pieces add up to the whole reply: True",
        r"\d+ characters -> \d+ tokens",
        r"id\s+piece\n0\s+1\s+'<s>'\n1\s+\d+\s+' I",  # the start token, then the first word with its space
        r"logits: \(\d+, \d+\) = \(tokens in the prompt, tokens in the vocabulary\)",
        r"next token\s+probability\n0\s+['\"].+['\"]\s+0\.\d+\n",
        r"temperature 0, no seed, three calls -> different texts: 1\n",  # the Wasm build's call included
        r"temperature 0 starts with the likeliest next token: True",
        r"three seeds -> different texts: 3\n",
        r"native: (['\"]).+\1\nwasm:   (['\"]).+\2\nidentical: True",
        r"wasm-no-grant -> InvalidRequestError: wasm-no-grant: invalid_request: cannot open checkpoint "
        r"`[^`]*tinyllm-kjv\.bin`: No such file or directory \(a Wasm plugin sees only the directories that "
        r"plugins\.toml grants it with `allowed_paths`\)",
        r"wasm-granted +-> ['\"].+['\"]\nnative +-> ['\"].+['\"]",  # replies, not errors
        r"the checkpoint is on this machine: True",
        r"the granted Wasm build and the native build agree: True",
        r"provider\s+size\s+n\s+median\s+tokens/s\s+ratio\n0\s+tinyllm-native\s+64\s+5\s",
        r"tinyllm-native +\d+\.\d tokens/s\ntinyllm-wasm +\d+\.\d tokens/s",
        r"Wasm/native: \d+\.\d\dx the time per token",
        r"5 texts -> vectors of \d+ numbers, lengths \[1\. 1\. 1\. 1\. 1\.\]",  # unit vectors
        r"the Wasm build's vectors are the same bits: True",
        r"creation\s+firmament\s+shepherd\s+pastures\s+router\ncreation\s+1\.0",  # the similarity table
    ],
    "10-batch.ipynb": [
        r"title\s+label\s+confidence\s+latency_ms\s+attempts\s+error\n0\s+App crashes on start\s+bug\s+0\.9",
        r"Dark mode\?\s+other\s+0\.4",  # one column per JSON key
        r"TemplateFieldError: the template's field \{titel\} is not a column of the table; did you mean \{title\}\?"
        r"\n  hint: columns: title, body; write \{\{titel\}\} for literal braces\nrequests sent: 0",
        r"(?s)title\s+answer\[openai\].{0,400}answer\[tinyllm\]",  # side by side (pandas may wrap the table)
        r"the batch was interrupted",
        r"interrupted: \d+ answered rows are kept in \S+batches\.sqlite; run the same call again",
        r"resumed from the store: [1-9]\d* rows; asked now: [1-9]\d*\nfinished rows asked twice: 0\n"
        r"every row answered: True",
        r"0\s+App crashes on start\s+\{\"label\": \"bug\", \"confidence\": 0\.9\}\s+3",  # 429, 503, then ok
        r"columns: \['answer\[openai\]', 'answer\[tinyllm\]'\]",
        r"16\s+\d+\.\d\s+\d+\.\d\n",  # the concurrency sweep
        r"on 2 Dask workers: 24 rows\nsame answers as one kernel: True",
        r"2 Dask workers, 1 thread each\s+\d+\.\d",
    ],
}

# Regular expressions that must not appear in any output, HTML included.
ABSENT: dict[str, list[str]] = {
    "05-configuration.ipynb": [r"sk-notebook-demo-0{8}"],  # the key read from the environment is never shown
    "06-the-interface.ipynb": [r"sk-notebook-not-a-real-key"],  # the fake key is masked wherever it is shown
    "10-batch.ipynb": [r"sk-notebook-loopback", r"Traceback"],
}

_OFFLINE_UNSET = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL")


def _ids(path: Path) -> str:
    return path.stem


def outputs_text(notebook: nbformat.NotebookNode, mimes: tuple[str, ...] = ("text/plain", "text/markdown")) -> str:
    """Every output of every code cell as text, in order (rich outputs in the given MIME types)."""
    parts: list[str] = []
    for cell in notebook.cells:
        previous = None
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and previous is not None and previous.get("name") == output.name:
                parts[-1] += output.text  # one print split across two messages reads as one, as on screen
            elif output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                data = output.get("data", {})
                parts += [data[mime] for mime in mimes if mime in data]
            elif output.output_type == "error":
                parts.append(f"{output.ename}: {output.evalue}")
            previous = output if output.output_type == "stream" else None
    return "\n".join(parts)


def folder_listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if ".ipynb_checkpoints" not in p.parts}


def test_there_are_notebooks_and_each_has_claims() -> None:
    names = {path.name for path in NOTEBOOKS}
    assert "01-quickstart.ipynb" in names
    assert not names - CLAIMS.keys(), f"add what these notebooks claim to CLAIMS: {sorted(names - CLAIMS.keys())}"
    assert not CLAIMS.keys() - names, f"CLAIMS names notebooks that do not exist: {sorted(CLAIMS.keys() - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} were saved with outputs or execution counts; clear them"
    timed = [index for index, cell in enumerate(notebook.cells) if "execution" in cell.metadata]
    assert not timed, f"{path.name}: cells {timed} carry execution timings in their metadata"
    assert "widgets" not in notebook.metadata, f"{path.name}: saved widget state in the notebook metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs_and_shows_what_it_claims(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS_DIR, folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    before = folder_listing(folder)
    monkeypatch.setenv("QUERYMT_JUPYTER_LOG", str(tmp_path / "prompts.sqlite"))
    for name in _OFFLINE_UNSET:  # the offline path, whatever the machine running the tests has configured
        monkeypatch.delenv(name, raising=False)

    notebook = nbformat.read(folder / path.name, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    started = time.perf_counter()
    client.execute()  # a failing cell raises CellExecutionError, naming the cell and its traceback
    elapsed = time.perf_counter() - started
    print(f"{path.name}: {elapsed:.1f} s")

    text = outputs_text(notebook)
    missing = [claim for claim in CLAIMS.get(path.name, []) if not re.search(claim, text)]
    assert not missing, f"{path.name}: the outputs do not show {missing}\n--- outputs ---\n{text}"
    everything = outputs_text(notebook, ("text/plain", "text/markdown", "text/html"))  # what a reader sees
    present = [bad for bad in ABSENT.get(path.name, []) if re.search(bad, everything)]
    assert not present, f"{path.name}: the outputs show {present}"
    errors = [o for cell in notebook.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{path.name}: cells ended in errors: {[f'{e.ename}: {e.evalue}' for e in errors]}"
    written = folder_listing(folder) - before
    assert not written, f"{path.name} wrote {sorted(written)} beside itself; use a temporary folder"
