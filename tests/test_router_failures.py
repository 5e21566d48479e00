"""A bug in a plugin handler or a request handler costs one error line with its traceback per address and 10 s,
not one per datagram: the receive path and the log survive a bug that every datagram hits."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from oscbridge.api.endpoint import collect, request
from oscbridge.osc.codec import Message, decode_message, encode_message
from oscbridge.osc.transport import UdpSocket
from oscbridge.router import Router
from oscbridge.typedefs import Addr


class _Broken:
    @request("/bridge/test/broken")
    def broken(self) -> tuple[str]:
        raise KeyError("a bug")


def _broken_handler(message: Message, addr: Addr, data: bytes) -> None:
    raise ZeroDivisionError("another bug")


class _Peer:
    kind = "tcp"
    addr = ("127.0.0.1", 1)

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


@pytest.fixture
def router() -> Iterator[Router]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield Router(collect(_Broken()), {"/aiplayer/telemetry": _broken_handler}, UdpSocket(sock))
    finally:
        sock.close()


def _lines(caplog: pytest.LogCaptureFixture, event: str) -> list[Any]:
    return [r for r in caplog.records if event in r.getMessage()]


async def test_a_failing_handler_logs_once_with_its_traceback_and_counts_every_failure(
        router: Router, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(500):
        router.on_udp(encode_message("/aiplayer/telemetry", ["TR1", 0.5]), ("127.0.0.1", 9000))
    assert router.counters["handler_errors"] == 500
    failed = _lines(caplog, "plugin_handler_failed")
    assert len(failed) == 1 and failed[0].levelname == "ERROR" and "another bug" in failed[0].getMessage()
    assert "'exc_info': True" in failed[0].getMessage()  # with its traceback (rendered: tests/test_log_format.py)


async def test_a_failing_request_answers_internal_each_time_and_logs_once(
        router: Router, caplog: pytest.LogCaptureFixture) -> None:
    peer = _Peer()
    for n in range(200):
        router.on_tcp(encode_message("/bridge/test/broken", [f"r{n}"]), peer)  # type: ignore[arg-type]
    await router.drain(2.0)
    answers = [decode_message(p).args for p in peer.sent]
    assert len(answers) == 200 and all(a[1:3] == ["error", "internal"] for a in answers)
    failed = _lines(caplog, "request_failed")
    assert len(failed) == 1 and failed[0].levelname == "ERROR" and "a bug" in failed[0].getMessage()
    assert "'exc_info': True" in failed[0].getMessage()
