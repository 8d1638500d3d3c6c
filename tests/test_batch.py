"""batch(): a template over every row of a DataFrame, with the bundled plugins against the loopback server.

Everything is real: the openai plugin in both builds speaks HTTP to a LoopbackOpenAI on 127.0.0.1,
the resume store is a SQLite file in tmp_path, an interrupt is a real SIGINT, a crash is a SIGKILL of a
real process, and the Dask tests run a LocalCluster of two worker processes. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from querymt_jupyter import AuthError, BatchError, PluginRegistry, TemplateFieldError, UnknownKeyError, batch
from querymt_jupyter.batch import ResultStore, RetryPolicy, cluster
from querymt_jupyter.loopback import LoopbackOpenAI

KEY = "sk-batch-test-0001"
FAST = RetryPolicy(retries=3, base_delay=0.01, max_delay=2.0)


def echo_reply(request: dict[str, Any]) -> str:
    return "re: " + request["messages"][-1]["content"]


@pytest.fixture
def server() -> Iterator[LoopbackOpenAI]:
    with LoopbackOpenAI(reply=echo_reply, api_key=KEY) as s:
        yield s


def config_text(server: LoopbackOpenAI, kind: str = "wasm", key: str = KEY) -> str:
    return textwrap.dedent(f"""\
        [[providers]]
        name = "openai"
        path = "bundled:openai.{kind}"
        [providers.config]
        base_url = "{server.base_url}"
        api_key = "{key}"
        model = "gpt-4o-mini"

        [[providers]]
        name = "echo-native"
        path = "bundled:echo.native"
        """)


@pytest.fixture
def registry_for(tmp_path: Path) -> Iterator[Callable[..., PluginRegistry]]:
    made: list[PluginRegistry] = []

    def make(server: LoopbackOpenAI, kind: str = "wasm", key: str = KEY) -> PluginRegistry:
        path = tmp_path / f"plugins-{len(made)}.toml"
        path.write_text(config_text(server, kind, key))
        made.append(PluginRegistry.from_path(path))
        return made[-1]

    yield make
    for registry in made:
        registry.close()


def tickets(n: int) -> pd.DataFrame:
    return pd.DataFrame({"title": [f"ticket {i}" for i in range(n)], "body": [f"body {i}" for i in range(n)]})


def sent_prompts(server: LoopbackOpenAI) -> list[str]:
    return [r.json["messages"][-1]["content"] for r in server.requests if r.path == "/v1/chat/completions"]


# ---- answers, in both builds -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wasm", "native"])
def test_every_row_is_answered_with_its_figures(kind, server, registry_for, tmp_path):
    frame = tickets(12).set_index(pd.Index([f"id{i}" for i in range(12)], name="id"))
    out = batch(frame, "Classify {title}: {body} {{json}}", provider="openai", registry=registry_for(server, kind),
                store=tmp_path / "s.sqlite", concurrency=4, progress=False)
    assert list(out.index) == list(frame.index)  # the input's rows, in order, index kept
    assert list(out.columns) == ["title", "body", "answer", "latency_ms", "input_tokens", "output_tokens",
                                 "attempts", "error"]
    assert out.loc["id3", "answer"] == "re: Classify ticket 3: body 3 {json}"
    assert out["error"].isna().all() and (out["attempts"] == 1).all()
    assert (out["output_tokens"] > 0).all() and (out["latency_ms"] > 0).all()
    assert sorted(sent_prompts(server)) == sorted(f"Classify ticket {i}: body {i} {{json}}" for i in range(12))


def test_rows_with_the_same_prompt_are_asked_once(server, registry_for, tmp_path):
    frame = pd.DataFrame({"title": ["a", "b", "a", "a"]})
    out = batch(frame, "{title}", provider="openai", registry=registry_for(server), store=tmp_path / "s.sqlite",
                progress=False)
    assert list(out["answer"]) == ["re: a", "re: b", "re: a", "re: a"]
    assert sorted(sent_prompts(server)) == ["a", "b"]


def test_calls_really_overlap_up_to_the_concurrency(server, registry_for, tmp_path):
    server.latency = 0.2
    registry = registry_for(server)
    batch(tickets(16), "{title}", provider="openai", registry=registry, store=tmp_path / "s.sqlite", concurrency=8,
          progress=False)
    assert server.max_in_flight == 8
    assert registry["openai"].pool_size >= 8  # one Wasm instance per call in flight


# ---- resume --------------------------------------------------------------------------------------------


def test_a_second_run_asks_nothing_and_resume_false_asks_all(server, registry_for, tmp_path):
    registry, store = registry_for(server), tmp_path / "s.sqlite"
    first = batch(tickets(6), "{title}", provider="openai", registry=registry, store=store, progress=False)
    server.clear_requests()
    again = batch(tickets(6), "{title}", provider="openai", registry=registry, store=store, progress=False)
    assert sent_prompts(server) == []
    assert again.attrs["querymt_batch"].resumed == 6 and again.attrs["querymt_batch"].asked == 0
    pd.testing.assert_frame_equal(first.drop(columns="latency_ms"), again.drop(columns="latency_ms"))
    changed = batch(tickets(6), "{title}", provider="openai", registry=registry, store=store, progress=False,
                    system="be brief")  # another question: a system prompt is part of the key
    assert len(sent_prompts(server)) == 6 and changed.attrs["querymt_batch"].resumed == 0
    server.clear_requests()
    batch(tickets(6), "{title}", provider="openai", registry=registry, store=store, progress=False, resume=False)
    assert len(sent_prompts(server)) == 6


def test_an_interrupt_keeps_finished_rows_and_the_rerun_sends_only_the_rest(server, registry_for, tmp_path, capsys):
    registry, store = registry_for(server), tmp_path / "s.sqlite"
    server.latency = 0.02
    count = 0

    def reply(request: dict[str, Any]) -> str:
        nonlocal count
        count += 1
        if count == 10:
            os.kill(os.getpid(), signal.SIGINT)  # what a kernel interrupt sends
        return echo_reply(request)

    server.reply = reply
    with pytest.raises(KeyboardInterrupt):
        batch(tickets(40), "{title}", provider="openai", registry=registry, store=store, concurrency=2, progress=False)
    assert server.in_flight == 0  # the calls in flight finished before batch() raised
    assert "run the same call again" in capsys.readouterr().err
    with ResultStore(store) as kept_store:
        kept = len(kept_store)
    assert 5 <= kept < 40
    assert kept == len(sent_prompts(server))  # every request sent was answered and kept, those in flight too
    server.reply, server.latency = echo_reply, 0.0
    server.clear_requests()
    out = batch(tickets(40), "{title}", provider="openai", registry=registry, store=store, progress=False)
    resent = set(sent_prompts(server))
    assert out.attrs["querymt_batch"].resumed == kept
    assert len(resent) == 40 - kept  # every row is answered and only the unkept were sent: none twice
    assert out["answer"].tolist() == [f"re: ticket {i}" for i in range(40)]


CRASH_SCRIPT = """
import sys
import pandas as pd
from querymt_jupyter import PluginRegistry, batch
frame = pd.DataFrame({"title": [f"ticket {i}" for i in range(60)]})
batch(frame, "{title}", provider="openai", registry=PluginRegistry.from_path(sys.argv[1]),
      store=sys.argv[2], concurrency=2, progress=False)
"""


def test_after_a_kill_the_rerun_sends_no_finished_row_again(server, tmp_path):
    config, store = tmp_path / "plugins.toml", tmp_path / "s.sqlite"
    config.write_text(config_text(server))
    server.latency = 0.05
    child = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(config), str(store)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while _stored(store) < 10 and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    stored = _stored(store)
    assert 10 <= stored < 60, "the child should have been killed part way"
    with sqlite3.connect(store) as db:
        kept_keys = {key for (key,) in db.execute("select key from answers")}
    server.latency = 0.0
    server.clear_requests()
    registry = PluginRegistry.from_path(config)
    try:
        out = batch(pd.DataFrame({"title": [f"ticket {i}" for i in range(60)]}), "{title}", provider="openai",
                    registry=registry, store=store, progress=False)
    finally:
        registry.close()
    assert len(sent_prompts(server)) == 60 - stored  # 0 finished rows re-sent
    assert out.attrs["querymt_batch"].resumed == stored
    assert out["answer"].tolist() == [f"re: ticket {i}" for i in range(60)]
    with ResultStore(store) as after:
        assert kept_keys <= set(after.keys()) and len(after) == 60


def _stored(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return int(db.execute("select count(*) from answers").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


# ---- failures ----------------------------------------------------------------------------------------------


def test_a_429_waits_as_long_as_retry_after_says_then_succeeds(server, registry_for, tmp_path):
    server.fail_next(429, retry_after=1)
    started = time.perf_counter()
    out = batch(tickets(1), "{title}", provider="openai", registry=registry_for(server), store=tmp_path / "s.sqlite",
                retry=FAST, progress=False)
    assert time.perf_counter() - started >= 1.0  # the server's Retry-After, not FAST's 10 ms backoff
    assert out.loc[0, "answer"] == "re: ticket 0" and out.loc[0, "attempts"] == 2
    assert len(sent_prompts(server)) == 2


def test_5xx_is_retried_and_a_row_out_of_retries_keeps_its_error(server, registry_for, tmp_path):
    registry, store = registry_for(server), tmp_path / "s.sqlite"
    server.fail_next(503)
    out = batch(tickets(1), "{title}", provider="openai", registry=registry, store=store, retry=FAST, progress=False)
    assert out.loc[0, "attempts"] == 2 and pd.isna(out.loc[0, "error"])
    server.fail_next(500, times=4)  # the first row asked fails 1 + 3 retries
    out = batch(tickets(3), "{title} again", provider="openai", registry=registry, store=store, retry=FAST,
                concurrency=1, progress=False)
    failed = out[out["error"].notna()]
    assert len(failed) == 1 and failed["attempts"].iloc[0] == 4
    assert failed["error"].iloc[0].startswith("HttpStatusError") and failed["answer"].isna().all()
    assert out["answer"].notna().sum() == 2 and out.attrs["querymt_batch"].failed == 1
    server.clear_requests()
    out = batch(tickets(3), "{title} again", provider="openai", registry=registry, store=store, retry=FAST,
                progress=False)
    assert len(sent_prompts(server)) == 1 and out["error"].isna().all()  # only the failed row is asked again


def test_a_permanent_failure_is_not_retried(server, registry_for, tmp_path):
    server.fail_next(400)
    out = batch(tickets(2), "{title}", provider="openai", registry=registry_for(server), store=tmp_path / "s.sqlite",
                retry=FAST, concurrency=1, progress=False)
    assert out["error"].str.startswith("InvalidRequestError").sum() == 1 and len(sent_prompts(server)) == 2


def test_a_wrong_key_stops_the_batch_instead_of_failing_every_row(server, registry_for, tmp_path):
    with pytest.raises(AuthError):
        batch(tickets(30), "{title}", provider="openai", registry=registry_for(server, key="sk-wrong"),
              store=tmp_path / "s.sqlite", concurrency=2, progress=False)
    assert len(sent_prompts(server)) < 30
    assert server.in_flight == 0  # no call still runs on a plugin the caller may now close


# ---- checked before any request ------------------------------------------------------------------------------


def test_a_template_field_that_is_no_column_fails_before_any_request(server, registry_for, tmp_path):
    registry = registry_for(server)
    with pytest.raises(TemplateFieldError) as failure:
        batch(tickets(5), "Classify {titel}: {body}", provider="openai", registry=registry, store=tmp_path / "s")
    message = str(failure.value)
    assert "{titel}" in message and "did you mean {title}?" in message and "{{titel}}" in message
    assert failure.value.field == "titel" and failure.value.columns == ("title", "body")
    assert server.requests == [] and not (tmp_path / "s").exists()
    out = batch(tickets(1), 'Literal {{titel}} and {"a": 1} {title}', provider="openai", registry=registry,
                store=tmp_path / "s", progress=False)  # escaped braces and JSON pass
    assert out.loc[0, "answer"] == 're: Literal {titel} and {"a": 1} ticket 0'


@pytest.mark.parametrize(
    "arguments, error, words",
    [
        ({"data": [1, 2]}, BatchError, "DataFrame"),
        ({"fmt": "yaml"}, BatchError, "text, json"),
        ({"engine": "spark"}, BatchError, "local, dask"),
        ({"concurrency": 0}, BatchError, "at least 1"),
        ({"provider": ["openai", "openai"]}, BatchError, "twice"),
        ({"params": {"temperatur": 0.5}}, UnknownKeyError, "did you mean 'temperature'"),
    ],
)
def test_bad_arguments_are_named_errors_before_any_request(server, registry_for, tmp_path, arguments, error, words):
    call = {"data": tickets(3), "template": "{title}", "provider": "openai", **arguments}
    with pytest.raises(error, match=words):
        batch(call.pop("data"), call.pop("template"), registry=registry_for(server), store=tmp_path / "s", **call)
    assert server.requests == []


# ---- several providers, JSON --------------------------------------------------------------------------------------


def test_several_providers_give_side_by_side_columns(server, registry_for, tmp_path):
    out = batch(tickets(3), "{title}", provider=["openai", "echo-native"], registry=registry_for(server),
                store=tmp_path / "s.sqlite", progress=False)
    assert out["answer[openai]"].tolist() == [f"re: ticket {i}" for i in range(3)]
    assert out["answer[echo-native]"].tolist() == [f"echo: ticket {i}" for i in range(3)]
    for figure in ("latency_ms", "input_tokens", "output_tokens", "attempts", "error"):
        assert f"{figure}[openai]" in out.columns and f"{figure}[echo-native]" in out.columns
    assert "answer" not in out.columns and out.attrs["querymt_batch"].asked == 6


def test_json_replies_give_a_column_per_key_and_a_bad_reply_is_not_asked_again(server, registry_for, tmp_path):
    def reply(request: dict[str, Any]) -> str:
        title = request["messages"][-1]["content"]
        if title == "ticket 2":
            return "I cannot classify this."
        return "```json\n" + json.dumps({"label": "bug" if title < "ticket 2" else "praise", "title": 1}) + "\n```"

    server.reply = reply
    registry, store = registry_for(server), tmp_path / "s.sqlite"
    out = batch(tickets(4), "{title}", provider="openai", output="label", fmt="json", registry=registry, store=store,
                progress=False)
    assert out["label"].tolist() == ["bug", "bug", "I cannot classify this.", "praise"]
    assert out["label.title"].tolist()[:2] == [1, 1]  # "title" is an input column: the key is prefixed
    assert out["error"].isna().tolist() == [True, True, False, True]
    assert out.loc[2, "error"].startswith("ResponseFormatError: the reply is not JSON")
    server.clear_requests()
    batch(tickets(4), "{title}", provider="openai", output="label", fmt="json", registry=registry, store=store,
          progress=False)
    assert sent_prompts(server) == []  # the text was stored: a parse failure costs no second request


# ---- Dask ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    client = cluster.default_client()  # a LocalCluster of 2 worker processes
    yield client
    cluster.close_default_client()


def test_dask_workers_load_their_own_plugins_and_answer_like_one_kernel(server, registry_for, tmp_path, dask_client):
    import dask.dataframe as dd

    assert len(dask_client.scheduler_info()["workers"]) == 2
    server.latency = 0.05
    registry, store = registry_for(server), tmp_path / "s.sqlite"
    frame = tickets(24)
    out = batch(dd.from_pandas(frame, npartitions=3), "{title}", provider=["openai", "echo-native"],
                registry=registry, store=store, engine="dask", concurrency=3, progress=False)
    overlap = server.max_in_flight
    local = batch(frame, "{title}", provider=["openai", "echo-native"], registry=registry, store=tmp_path / "l",
                  progress=False)
    columns = [c for c in out.columns if not c.startswith("latency_ms")]
    pd.testing.assert_frame_equal(out[columns], local[columns], check_dtype=False)  # dask: pyarrow strings
    assert 3 < overlap <= 6  # both workers asked at once, each with 3 calls in flight
    assert sorted(dask_client.run(lambda: len(cluster._registries)).values()) == [1, 1]
    with ResultStore(store) as stored:
        assert len(stored) == 48  # the driver wrote every row the workers answered
    server.clear_requests()
    again = batch(frame, "{title}", provider="openai", registry=registry, store=store, engine="dask", progress=False)
    assert sent_prompts(server) == [] and again.attrs["querymt_batch"].resumed == 24


def test_dask_retries_in_the_worker_and_keeps_a_failed_rows_error(server, registry_for, tmp_path, dask_client):
    server.fail_next(503, times=2)
    out = batch(tickets(4), "{title}", provider="openai", registry=registry_for(server), store=tmp_path / "s",
                engine="dask", concurrency=1, retry=FAST, progress=False)
    assert out["error"].isna().all() and out["attempts"].sum() == 6


def test_without_dask_installed_the_error_says_what_to_install(monkeypatch, server, registry_for, tmp_path):
    monkeypatch.setattr(cluster, "_local", None)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if the extra were not installed
    with pytest.raises(BatchError, match=r"querymt-jupyter\[dask\]"):
        batch(tickets(2), "{title}", provider="openai", registry=registry_for(server), store=tmp_path / "s",
              engine="dask", progress=False)
