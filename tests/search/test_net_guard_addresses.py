"""The SSRF guard's address and URL rules, without the network."""

from __future__ import annotations

import pytest

from retlink.tools.net_guard import BlockedAddressError, HostPolicy, blocked_reason, check_url


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", ""),
        ("100.64.0.1", "shared address space"),
        ("192.0.2.10", ""),  # documentation range, not routable
        # IPv4 hidden in IPv6: mapped, 6to4, NAT64
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ],
)
def test_non_public_addresses_are_refused_with_a_reason(address: str, why: str) -> None:
    reason = blocked_reason(address)
    assert reason is not None
    assert why in reason


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.216.34"]
)
def test_public_addresses_pass(address: str) -> None:
    assert blocked_reason(address) is None


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/x",
        "gopher://127.0.0.1:6379/_INFO",
        "javascript:alert(1)",
        "http://user:pass@example.org/",
        "http:///nohost",
        "not a url at all",
    ],
)
def test_check_url_refuses_what_the_text_gives_away(url: str) -> None:
    with pytest.raises(BlockedAddressError):
        check_url(url)


def test_check_url_accepts_http_and_https() -> None:
    assert check_url("https://example.org/a?b=1").host == "example.org"
    assert check_url("HTTP://Example.org").scheme == "http"


def test_host_policy_matches_the_host_as_written_and_the_port_when_given() -> None:
    policy = HostPolicy.from_entries(["127.0.0.1:8080", "Intranet.Example.", "[::1]:9000"])
    assert policy.allows("127.0.0.1", 8080)
    assert not policy.allows("127.0.0.1", 8081)
    assert not policy.allows("localhost", 8080)  # a name is not its address
    assert policy.allows("intranet.example", 80)
    assert policy.allows("intranet.example", 1234)
    assert policy.allows("::1", 9000)
    assert not policy.allows("::1", 9001)


def test_host_policy_rejects_garbage_entries() -> None:
    with pytest.raises(ValueError):
        HostPolicy.from_entries([":80"])


def test_with_hosts_adds_exactly_the_service_origin() -> None:
    policy = HostPolicy().with_hosts("http://10.0.0.5:8888/searxng")
    assert policy.allows("10.0.0.5", 8888)
    assert not policy.allows("10.0.0.5", 22)
    assert HostPolicy().with_hosts("https://search.lan").allows("search.lan", 443)
