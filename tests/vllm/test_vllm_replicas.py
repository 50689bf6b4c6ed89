"""The agent's served reasoner on two real vLLM replicas, started together by
`VLLM_REPLICAS=2 scripts/vllm.sh start` (what `make vllm VLLM_REPLICAS=2` runs), one killed
(SIGKILL) mid-run: every link still completes through the other, the reasoner answering every
one (none falls back for want of a server)."""

from __future__ import annotations

import threading

import pytest

from retlink.tools.llm.openai_llm import OpenAILLM
from tests.vllm.conftest import VLLMServer, require_vllm
from tests.vllm.vllm_configs import DEMO, EXAMPLES, vllm_config
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.mark.timeout(1800)  # two servers to start and eight links: many minutes on 2 loaded cores
def test_one_of_two_replicas_killed_mid_run_and_every_link_completes():
    from retlink.agent.linker import Linker

    require_vllm()
    with VLLMServer("smollm2", replicas=2) as servers:
        assert len(servers.base_urls) == 2
        cfg = vllm_config(tuple(servers.base_urls), timeout_s=60, max_retries=2, replica_backoff_s=600)
        linker = Linker.from_config(cfg)
        llm = linker.components.reasoner_llm
        assert isinstance(llm, OpenAILLM) and len(llm.client.replicas) == 2
        survivor, dead = llm.client.replicas
        samples = EXAMPLES[:8]
        out: list = []
        run = threading.Thread(
            target=lambda: out.extend(
                linker.link_many([(DEMO / e["image"], e["mention"], e["context"]) for e in samples], concurrency=4)
            )
        )
        run.start()
        wait_until(lambda: dead.served >= 2 or not run.is_alive(), "the replica to answer twice", 300)
        assert dead.served >= 2 and run.is_alive(), "the replica must die mid-run, after it has answered"
        servers.kill(replica=1)
        run.join(timeout=1200)
        assert not run.is_alive() and len(out) == len(samples)
        for r in out:
            reason = [t for t in r.trace if t.node == "reason"]
            # the reasoner answered every link (a failed one would say "reasoner failed" and fall back)
            assert reason and not any("reasoner failed" in (t.skipped or "") for t in reason), reason
        assert dead.failures >= 1 and survivor.served > dead.served
