"""Allowed hosts and the Origin rule (hosts.py), without sockets."""

from __future__ import annotations

import pytest

from runcast.hosts import default_allowed_hosts, host_allowed, origin_matches, split_host


def test_default_allowed_hosts_are_the_bind_host_and_localhost() -> None:
    assert default_allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "::1"]
    assert default_allowed_hosts("hub.internal") == ["hub.internal", "localhost", "127.0.0.1", "::1"]
    assert default_allowed_hosts("0.0.0.0") is None and default_allowed_hosts("::") is None


@pytest.mark.parametrize(
    "value, parsed",
    [
        ("Example.COM:8080", ("example.com", 8080)),
        ("example.com", ("example.com", None)),
        ("[::1]:8765", ("::1", 8765)),
        ("::1", ("::1", None)),
        ("example.com.", ("example.com", None)),
        ("a:b", None),
        ("a:99999", None),
        ("", None),
        ("evil.com/x", None),
        ("user@host", None),
        ("[::1", None),
        ("[::1]x", None),
    ],
)
def test_split_host(value: str, parsed: tuple[str, int | None] | None) -> None:
    assert split_host(value) == parsed


def test_host_allowed() -> None:
    allowed = ["hub.example.com", "*.corp.example", "localhost", "::1"]
    for ok in (
        "hub.example.com",
        "HUB.example.com:443",
        "a.corp.example",
        "x.y.corp.example:1",
        "localhost:8765",
        "[::1]:8765",
    ):
        assert host_allowed(ok, allowed), ok
    for bad in ("evil.example", "corp.example", "hub.example.com.evil", "", "127.0.0.1", "evilcorp.example"):
        assert not host_allowed(bad, allowed), bad
    assert host_allowed("anything", None) and host_allowed("anything", ["*"])


@pytest.mark.parametrize(
    "origin, scheme, host, ok",
    [
        ("http://127.0.0.1:8765", "ws", "127.0.0.1:8765", True),
        ("https://hub.example", "wss", "hub.example", True),
        ("https://hub.example:443", "wss", "hub.example", True),
        ("http://hub.example", "ws", "hub.example:80", True),
        ("https://127.0.0.1:8765", "ws", "127.0.0.1:8765", False),  # https page, plain http hub
        ("http://127.0.0.1:8765", "wss", "127.0.0.1:8765", False),
        ("http://127.0.0.1:9999", "ws", "127.0.0.1:8765", False),  # another port
        ("http://127.0.0.1", "ws", "127.0.0.1:8765", False),
        ("http://evil.example:8765", "ws", "127.0.0.1:8765", False),
        ("null", "ws", "127.0.0.1:8765", False),
        ("http://127.0.0.1:8765/path", "ws", "127.0.0.1:8765", False),
        ("http://[::1]:8765", "ws", "[::1]:8765", True),
        ("http://127.0.0.1:bad", "ws", "127.0.0.1:8765", False),
    ],
)
def test_origin_compares_scheme_host_and_port(origin: str, scheme: str, host: str, ok: bool) -> None:
    assert origin_matches(origin, scheme, host) is ok
