"""The project's `langgraph.json` in LangGraph's own dev server (`langgraph dev`, the in-memory
LangGraph API server of langgraph-cli[inmem]): every graph it names is registered as an assistant,
its nodes are the linking graph's, and one link runs through the server on the embedded default's
models (demo KB, local search corpus), its state checkpointed by the server's own checkpointer.

Offline: the dev server's outside calls are all optional and switched off here (no browser, no
CLI analytics, no PyPI version check, no LangSmith tracing; the license beacon only runs with a
key). langgraph.json sets the checkpointer's `pickle_fallback: false`, so the server can only
store and reload the state if it is plain data (pixels, pydantic models, the budget's spec).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import DEMO, REPO, fast_config, skip_or_fail
from tests.loopback import free_port
from tests.waiting import answers_200, wait_until

LANGGRAPH = Path(sys.executable).parent / "langgraph"
OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
    "HF_HUB_OFFLINE": "1",
}

if not LANGGRAPH.exists():
    skip_or_fail("langgraph-cli[inmem] is not installed (the dev extra)")


@pytest.fixture(scope="module")
def dev_server(demo_kb_path, tmp_path_factory):
    """`langgraph dev` on the repository's langgraph.json, the graph built from a test config
    ($RETLINK_CONFIG: the embedded default on the demo KB, short generations)."""
    tmp = tmp_path_factory.mktemp("langgraph-dev")
    config = tmp / "agent.yaml"
    config.write_text(yaml.safe_dump(fast_config(demo_kb_path, enhancer={"enabled": False})))
    port = free_port()
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port),
         "--config", "langgraph.json"],
        cwd=REPO, env={**os.environ, **OFFLINE_ENV, "RETLINK_CONFIG": str(config)}, stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        tail = lambda: (tmp / "server.log").read_text()[-4000:]  # noqa: E731
        # 240 s: imports and the graph's first build on a loaded machine
        wait_until(answers_200(f"{url}/ok", proc, tail), "langgraph dev to start", 240, interval_s=0.5, detail=tail)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow  # a server process of its own, then a link with the real models
def test_langgraph_json_loads_in_the_dev_server_and_links(dev_server):
    url = dev_server
    graphs = json.loads((REPO / "langgraph.json").read_text())["graphs"]
    assistants = httpx.post(f"{url}/assistants/search", json={"limit": 100}, timeout=60).json()
    registered = {a["graph_id"]: a for a in assistants}
    assert set(graphs) <= set(registered), registered.keys()

    drawn = httpx.get(f"{url}/assistants/{registered['retlink']['assistant_id']}/graph", timeout=300)
    assert drawn.status_code == 200, drawn.text
    nodes = {n["id"] for n in drawn.json()["nodes"]}
    assert {"validate", "detect", "caption", "retrieve", "rank", "plan_queries", "search", "reason", "finalize"} <= nodes

    thread = httpx.post(f"{url}/threads", json={}, timeout=60).json()["thread_id"]
    link = {"image": str(DEMO / "images" / "coffee.jpg"), "mention": "Java",
            "context": "A fresh cup of [Java] on the saucer."}
    run = httpx.post(f"{url}/threads/{thread}/runs/wait", json={"assistant_id": "retlink", "input": link},
                     timeout=900)
    assert run.status_code == 200, run.text[:2000]
    result = run.json()["result"]
    assert result["entity"]["id"] == "java_coffee", result
    assert result["evidence"]  # the search fan-out ran (its Sends checkpointed)

    # the server's checkpointer stored and reloads the state without pickle (langgraph.json)
    state = httpx.get(f"{url}/threads/{thread}/state", timeout=60)
    assert state.status_code == 200, state.text[:2000]
    saved = state.json()
    assert saved["next"] == [] and saved["values"]["result"]["entity"]["id"] == "java_coffee"
    steps = [e["node"] for e in saved["values"]["trace"]]
    assert steps[0] == "validate" and steps[-1] == "finalize" and "search" in steps
