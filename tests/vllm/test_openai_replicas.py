"""A served role on several replicas (`base_url` as a list): requests spread by least in flight, a
failing replica is left out for a back-off period and its request retried on another, and the
attempts stay bounded by `max_retries + 1`.

The replicas are real HTTP servers on 127.0.0.1 speaking the OpenAI chat protocol
(`FakeChatServer`, canned answers: what is tested is the client's routing, not a model). The
faults are injected and named as such: `FaultyChatServer` answers 503 to every chat request, a
replica is killed by shutting its server down (its port then refuses), and `FaultProxy` in hang
mode accepts connections and never answers. No vLLM venv needed; the real two-vLLM failover is
in test_vllm_replicas.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from retlink.agent.backends import shared_captioner, shared_llm
from retlink.agent.config import load_config
from retlink.core.errors import BackendError, ConfigError
from retlink.core.schema import CaptionerConfig, LLMConfig
from retlink.tools.llm.openai_client import OpenAICompatClient
from retlink.tools.llm.openai_llm import OpenAILLM
from tests.loopback import LoopbackHTTP, free_port
from tests.vllm.conftest import FaultProxy
from tests.vllm.fake_chat_server import MESSAGES, MODEL, FakeChatServer


class CountingChat(FakeChatServer):
    """The fake chat server, holding each answer `server.delay` seconds and recording how many
    it held at once (`server.peak`)."""

    def do_POST(self) -> None:
        srv = self.server
        with srv.lock:
            srv.in_flight = getattr(srv, "in_flight", 0) + 1
            srv.peak = max(getattr(srv, "peak", 0), srv.in_flight)
        time.sleep(getattr(srv, "delay", 0.0))
        # no longer in flight before the answer goes out: counted after it, the client's next
        # request to this replica could arrive while this handler still counts itself
        with srv.lock:
            srv.in_flight -= 1
        super().do_POST()


class FaultyChatServer(FakeChatServer):
    """Fault injection: a replica that lists the model but answers 503 to every chat request."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.record(self.path)
        self.send_body(503, "application/json", b'{"error": {"message": "injected fault", "type": "server_error"}}')


class AnswersOnceThen503(CountingChat):
    """Fault injection: a replica whose first request is held and answered, and every later one
    gets 503 at once (it goes bad while it still owes an answer)."""

    def do_POST(self) -> None:
        srv = self.server
        with srv.lock:
            srv.posts = getattr(srv, "posts", 0) + 1
            first = srv.posts == 1
        if first:
            super().do_POST()
        else:
            FaultyChatServer.do_POST(self)


class Replicas(LoopbackHTTP):
    """A listen backlog for bursts of connections (the default 5 drops SYNs, retried 1 s later)."""

    request_queue_size = 64


@pytest.fixture
def replicas() -> Iterator[list[LoopbackHTTP]]:
    with ExitStack() as stack:
        yield [stack.enter_context(Replicas(CountingChat)) for _ in range(3)]


def urls(servers) -> list[str]:
    return [s.url("/v1") for s in servers]


def chats(srv: LoopbackHTTP) -> int:
    return srv.hits["/v1/chat/completions"]


# -- configuration ----------------------------------------------------------------------------


def test_base_url_takes_a_list_of_replicas_in_yaml(tmp_path):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        "reasoner:\n  llm:\n    backend: openai\n    model: m\n    replica_backoff_s: 3\n"
        "    base_url:\n      - http://127.0.0.1:8011/v1\n      - http://127.0.0.1:8012/v1/\n"
    )
    llm = load_config(cfg_file).reasoner.llm
    assert llm.base_url == ("http://127.0.0.1:8011/v1", "http://127.0.0.1:8012/v1")
    assert llm.base_urls == llm.base_url and hash(llm) == hash(llm.model_copy())
    client = OpenAICompatClient.from_config(llm)
    assert [r.base_url for r in client.replicas] == list(llm.base_url)
    assert (client.max_concurrency, client.replica_backoff_s) == (16, 3)  # 8 per replica
    one = load_config({"reasoner": {"llm": {"base_url": ["http://127.0.0.1:8011/v1"]}}}).reasoner.llm
    assert one.base_url == "http://127.0.0.1:8011/v1" and one.base_urls == (one.base_url,)
    # frozen configs stay hashable (the backends cache one model per config)
    cap = CaptionerConfig(backend="openai_vlm", model="v", base_url=["http://a:1/v1", "http://b:1/v1"])
    assert hash(cap) == hash(cap.model_copy())


@pytest.mark.parametrize(
    ("value", "message"),
    [([], "an empty list of replicas"), (["http://a:1/v1", "http://a:1/v1/"], "a replica is listed twice")],
)
def test_bad_replica_lists_are_config_errors_naming_the_key(value, message):
    with pytest.raises(ConfigError, match=rf"reasoner\.llm\.base_url: .*{message}"):
        load_config({"reasoner": {"llm": {"backend": "openai", "model": "m", "base_url": value}}})
    with pytest.raises(ConfigError, match=r"reasoner\.llm\.replica_backoff_s"):
        load_config({"reasoner": {"llm": {"replica_backoff_s": 0}}})


# -- spreading ---------------------------------------------------------------------------------


def test_sequential_requests_take_the_replicas_in_turn(replicas):
    client = OpenAICompatClient(MODEL, urls(replicas), max_retries=0)
    for _ in range(9):
        assert client.chat(MESSAGES, max_tokens=4).choices[0].message.content
    assert [chats(s) for s in replicas] == [3, 3, 3]
    assert [r.served for r in client.replicas] == [3, 3, 3]


def test_concurrent_requests_go_to_the_least_busy_replica(replicas):
    for s in replicas:
        s.delay = 0.3
    replicas[0].delay = 1.2  # a slow replica: it should get fewer requests, never more than its share at once
    llm = OpenAILLM(OpenAICompatClient(MODEL, urls(replicas), max_retries=0, max_concurrency=2))
    assert llm.client.max_concurrency == 6
    out = llm.generate_batch([MESSAGES] * 18, max_tokens=8)
    assert len(out) == 18 and all(g.text for g in out)
    counts = [chats(s) for s in replicas]
    assert sum(counts) == 18 and all(s.peak <= 2 for s in replicas), (counts, [s.peak for s in replicas])
    assert counts[0] < counts[1] and counts[0] < counts[2], counts


# -- failover ----------------------------------------------------------------------------------


def test_a_replica_killed_mid_run_is_left_out_and_every_request_completes():
    with Replicas(CountingChat) as alive, Replicas(CountingChat) as doomed:
        for s in (alive, doomed):
            s.delay = 0.05
        client = OpenAICompatClient(MODEL, urls([alive, doomed]), max_retries=1, max_concurrency=2, replica_backoff_s=30)
        llm = OpenAILLM(client)
        results: list[str] = []
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            for _ in range(n):
                try:
                    results.append(llm.generate(MESSAGES, max_tokens=8).text)
                except BaseException as e:  # collected and asserted below
                    errors.append(e)

        threads = [threading.Thread(target=worker, args=(10,)) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while chats(doomed) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        served_before_kill = chats(doomed)
        doomed.shutdown()  # the replica goes away mid-run: its port refuses from now on
        doomed.server_close()
        for t in threads:
            t.join(timeout=30)
        assert not errors and len(results) == 40
        assert served_before_kill >= 4 and chats(alive) >= 40 - chats(doomed)
        dead = client.replicas[1]
        assert dead.failures >= 1 and dead.down_until > time.monotonic() + 20  # left out for its back-off
        # while it is out, nothing is sent its way: every further request is answered by the live one
        before = chats(alive)
        for _ in range(3):
            llm.generate(MESSAGES, max_tokens=8)
        assert chats(alive) == before + 3 and dead.failures == client.replicas[1].failures


def test_a_late_answer_from_a_replica_that_has_since_failed_does_not_bring_it_back():
    """The race behind a flaky failover: a replica answers a request it was sent before it failed
    another one; that answer must not clear the failure's back-off."""
    with Replicas(AnswersOnceThen503) as going_bad, Replicas(CountingChat) as good:
        going_bad.delay = good.delay = 1.0
        client = OpenAICompatClient(MODEL, urls([going_bad, good]), max_retries=1, replica_backoff_s=30)
        out: list[str] = []

        def one() -> None:
            out.append(client.chat(MESSAGES, max_tokens=4).choices[0].message.content)

        threads = []
        for expected_in_flight in ([1, 0], [1, 1]):  # 1st to going_bad (in turn), 2nd to good (least busy)
            threads.append(threading.Thread(target=one))
            threads[-1].start()
            deadline = time.monotonic() + 5
            while [r.in_flight for r in client.replicas] != expected_in_flight and time.monotonic() < deadline:
                time.sleep(0.005)
            assert [r.in_flight for r in client.replicas] == expected_in_flight
        one()  # a tie, going_bad first in turn: 503, left out, retried on good
        for t in threads:
            t.join(timeout=10)
        assert len(out) == 3 and chats(going_bad) == 2 and chats(good) == 2
        bad = client.replicas[0]
        assert bad.served == 1 and bad.failures == 1  # its late answer counted, its failure kept
        assert bad.down_until > time.monotonic() + 20  # still out for the back-off


def test_an_injected_5xx_replica_is_backed_off_then_tried_again():
    with Replicas(FaultyChatServer) as faulty, Replicas(CountingChat) as good:
        client = OpenAICompatClient(MODEL, urls([faulty, good]), max_retries=1, replica_backoff_s=1.5)
        for _ in range(4):
            client.chat(MESSAGES, max_tokens=4)  # each succeeds: the failed attempt moves to `good`
        assert chats(faulty) == 1 and chats(good) == 4  # out for 1.5 s after its first 503
        bad = client.replicas[0]
        assert bad.failures == 1
        time.sleep(max(0.0, bad.down_until - time.monotonic()) + 0.05)  # back-off over: tried again, fails again
        for _ in range(2):
            client.chat(MESSAGES, max_tokens=4)
        assert chats(faulty) == 2 and chats(good) == 6
        assert bad.failures == 2 and 1.5 < bad.down_until - time.monotonic() <= 3.0  # doubled to 3 s


def test_a_hanging_replica_times_out_and_its_request_moves_on():
    hang = FaultProxy(free_port())
    hang.mode = "hang"  # accepts, never answers
    try:
        with Replicas(CountingChat) as good:
            client = OpenAICompatClient(MODEL, [hang.base_url, good.url("/v1")], timeout_s=0.5, max_retries=1)
            t = time.monotonic()
            assert client.chat(MESSAGES, max_tokens=4).choices[0].message.content
            assert client.chat(MESSAGES, max_tokens=4).choices[0].message.content
            assert time.monotonic() - t < 10  # no hang: one 0.5 s timeout, then the replica is out
            assert chats(good) == 2 and client.replicas[0].failures == 1
    finally:
        hang.cut()


def test_attempts_stay_bounded_when_every_replica_fails():
    with Replicas(FaultyChatServer) as a, Replicas(FaultyChatServer) as b:
        client = OpenAICompatClient(MODEL, urls([a, b]), max_retries=2, backoff_s=0.01)
        with pytest.raises(BackendError, match=r"failed after 3 attempt\(s\)"):
            client.chat(MESSAGES, max_tokens=4)
        assert chats(a) + chats(b) == 3 and chats(a) >= 1 and chats(b) >= 1
        lone = OpenAICompatClient(MODEL, [a.url("/v1")], max_retries=0)
        with pytest.raises(BackendError, match=r"failed after 1 attempt\(s\)"):
            lone.chat(MESSAGES, max_tokens=4)
        assert chats(a) + chats(b) == 4


def test_check_passes_while_one_replica_answers_and_names_every_one_when_none_does():
    dead_url = f"http://127.0.0.1:{free_port()}/v1"
    with Replicas(CountingChat) as good:
        client = OpenAICompatClient(MODEL, [dead_url, good.url("/v1")], max_retries=0)
        client.check()
        assert client.replicas[0].failures == 1  # found down by the check, so requests skip it
        assert client.chat(MESSAGES, max_tokens=4) and chats(good) == 1
    other_dead = f"http://127.0.0.1:{free_port()}/v1"
    client = OpenAICompatClient(MODEL, [dead_url, other_dead], max_retries=0)
    with pytest.raises(BackendError, match=rf"cannot reach the model server at {dead_url}.*{other_dead}|"
                                           rf"cannot reach the model server at {other_dead}.*{dead_url}"):
        client.check()


def test_roles_built_from_a_config_use_every_replica(replicas):
    llm_cfg = LLMConfig(backend="openai", model=MODEL, base_url=urls(replicas), max_retries=0)
    llm = shared_llm(llm_cfg)
    for _ in range(3):
        llm.generate(MESSAGES, max_tokens=4)
    captioner = shared_captioner(CaptionerConfig(backend="openai_vlm", model=MODEL, base_url=urls(replicas[:2])))
    assert [r.base_url for r in captioner.client.replicas] == urls(replicas[:2])
    assert [chats(s) for s in replicas] == [1, 1, 1]
