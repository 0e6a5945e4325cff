"""The listener's request-head parser, its per-client key and its limits, without sockets."""

from __future__ import annotations

import pytest

from exporter.httpserver import ServerLimits, _head_end, _parse, _Refused, client_key

LIMITS = ServerLimits()


def parse(head: bytes, limits: ServerLimits = LIMITS) -> tuple[str, str, str, list[tuple[str, str]], bool]:
    request = _parse(head, False, limits)
    return request.method, request.target, request.version, request.headers, request.has_body


def refused(head: bytes, limits: ServerLimits = LIMITS) -> str:
    with pytest.raises(_Refused) as caught:
        _parse(head, False, limits)
    return caught.value.status


def test_a_normal_head() -> None:
    head = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a:1\r\nAccept:  text/plain \r\nX-A: 1\r\nX-A: 2\r\n\r\n"
    assert parse(head) == (
        "GET",
        "/metrics?x=1",
        "HTTP/1.1",
        [("Host", "a:1"), ("Accept", "text/plain"), ("X-A", "1"), ("X-A", "2")],
        False,
    )
    assert parse(b"HEAD / HTTP/1.0\n\n")[:3] == ("HEAD", "/", "HTTP/1.0")  # bare LF line ends


@pytest.mark.parametrize(
    ("head", "has_body"),
    [
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True),
    ],
)
def test_a_body_is_noticed(head: bytes, has_body: bool) -> None:
    assert parse(head)[4] is has_body


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /\r\n\r\n", "400"),
        (b"GET / HTTP/1.1 extra\r\n\r\n", "400"),
        (b"G\x00T / HTTP/1.1\r\n\r\n", "400"),
        (b"GET /\x01 HTTP/1.1\r\n\r\n", "400"),
        (b"GET / HTTPS/1.1\r\n\r\n", "400"),
        (b"GET / HTTP/3.0\r\n\r\n", "505"),
        (b"GET / HTTP/1.1\r\nNo-Colon\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nName : v\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400"),
    ],
)
def test_malformed_heads_are_refused(head: bytes, status: str) -> None:
    assert refused(head).startswith(status)


def test_size_limits() -> None:
    small = ServerLimits(max_line_bytes=50, max_header_lines=2, max_header_bytes=400)
    assert refused(b"GET /" + b"a" * 60 + b" HTTP/1.1\r\n\r\n", small).startswith("414")
    assert refused(b"GET / HTTP/1.1\r\nX: " + b"a" * 60 + b"\r\n\r\n", small).startswith("431")
    assert refused(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", small).startswith("431")
    assert parse(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", small)[3] == [("A", "1"), ("B", "2")]


def test_head_end() -> None:
    assert _head_end(bytearray(b"GET / HTTP/1.0\r\n")) == -1
    assert _head_end(bytearray(b"GET / HTTP/1.0\r\n\r\nbody")) == 18
    assert _head_end(bytearray(b"GET / HTTP/1.0\n\nbody")) == 16
    assert _head_end(bytearray(b"A\n\nB\r\n\r\n")) == 3


def test_client_key_groups_an_ipv6_host_by_its_slash_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("not an address") == "not an address"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        ServerLimits(idle_timeout=0)
    with pytest.raises(ValueError, match="per_client"):
        ServerLimits(max_connections=4, max_connections_per_client=8)
    assert ServerLimits().backlog >= 128
