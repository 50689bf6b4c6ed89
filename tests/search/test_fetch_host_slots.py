"""The fetcher's per-host concurrency limit, and the bound on the map that holds it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

from retlink.tools.net_guard import HostPolicy
from retlink.tools.scrape.fetch import Fetcher, FetchSettings, HostSlots


async def loopback_dns(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


def _fetcher(search_cfg, hosts: list[str], port: int, **settings) -> Fetcher:
    # connect timeout: the test server's listen backlog is 5, so a burst of new connections on a
    # busy machine may wait for a SYN retransmit (1 s)
    cfg = search_cfg(connect_timeout_s=5.0, read_timeout_s=5.0, page_timeout_s=10.0)
    return Fetcher(
        FetchSettings.from_config(cfg, content_types=("text/plain",), **settings),
        HostPolicy.from_entries(f"{h}:{port}" for h in hosts),
        resolver=loopback_dns,
    )


async def test_many_distinct_hosts_do_not_grow_the_semaphore_map(servers, search_cfg) -> None:
    server = servers[0]
    hosts = [f"h{i}.slots.test" for i in range(120)]
    fetcher = _fetcher(search_cfg, hosts, server.port, max_concurrency=8, per_host_concurrency=2)
    seen: list[int] = []

    def route(h, rest, q) -> None:  # runs in a server thread while the request is in flight
        seen.append(len(fetcher._states[loop].hosts))
        h.send_plain(200, "text/plain", b"ok")

    server.routes.insert(0, ("/slots-many", route))
    loop = asyncio.get_running_loop()
    pages = await asyncio.gather(*(fetcher.get(f"http://{h}:{server.port}/slots-many") for h in hosts))
    assert [p.body for p in pages] == [b"ok"] * len(hosts)
    assert len(seen) == len(hosts)
    assert 1 <= max(seen) <= 8  # never more hosts than requests in flight (the total limit)
    assert len(fetcher._states[loop].hosts) == 0  # and none left once they are done
    await fetcher.aclose()


async def test_per_host_limit_still_holds(servers, search_cfg) -> None:
    server = servers[0]
    changed = threading.Condition()
    now: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    def route(h, rest, q) -> None:
        # Each request is held until its host has two in flight (the limit), so the peak is
        # reached however slowly a loaded machine sends them; a broken limit shows as more than
        # two, since the held requests leave room for the rest to arrive. Bounded, never a hang.
        host = h.headers["Host"].split(":")[0]
        with changed:
            now[host] += 1
            peak[host] = max(peak[host], now[host])
            changed.notify_all()
            changed.wait_for(lambda: peak[host] >= 2, timeout=20)
        time.sleep(0.02)
        with changed:
            now[host] -= 1
        h.send_plain(200, "text/plain", b"ok")

    server.routes.insert(0, ("/slots-limit", route))
    hosts = ["a.slots.test", "b.slots.test"]
    fetcher = _fetcher(search_cfg, hosts, server.port, max_concurrency=8, per_host_concurrency=2)
    urls = [f"http://{h}:{server.port}/slots-limit" for h in hosts for _ in range(8)]
    await asyncio.gather(*(fetcher.get(u) for u in urls))
    assert peak == {"a.slots.test": 2, "b.slots.test": 2}
    assert len(fetcher._states[asyncio.get_running_loop()].hosts) == 0
    await fetcher.aclose()


async def test_a_cancelled_waiter_leaves_no_entry() -> None:
    slots = HostSlots(1)
    release = asyncio.Event()

    async def holder() -> None:
        async with slots.hold("x.test"):
            await release.wait()

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0)
    assert len(slots) == 1  # one host, two users: one holding, one waiting
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert len(slots) == 1
    release.set()
    await first
    assert len(slots) == 0
