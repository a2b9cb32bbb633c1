"""ports.reserve_shared: a port held for worker processes, which only SO_REUSEPORT listeners of
this user can join; a port anything else holds is PortInUse."""

import socket
from collections.abc import Iterator

import pytest

from edgecascade.cloud.common.ports import reserve_shared
from edgecascade.cloud.common.transport import PortInUse


def _listener(port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


@pytest.fixture
def held() -> Iterator[socket.socket]:
    sock = reserve_shared("127.0.0.1", 0)
    yield sock
    sock.close()


def test_workers_listen_on_the_held_port_and_connections_reach_them(held):
    port = held.getsockname()[1]
    assert port > 0
    workers = [_listener(port, reuse_port=True) for _ in range(2)]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # a worker accepted it (the held socket does not listen)
    finally:
        for worker in workers:
            worker.close()


def test_a_server_without_reuseport_cannot_take_the_held_port(held):
    with pytest.raises(OSError):
        _listener(held.getsockname()[1], reuse_port=False)


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "reuseport"])
def test_a_port_another_program_holds_is_in_use(reuse_port):
    other = _listener(0, reuse_port)
    port = other.getsockname()[1]
    try:
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port}: the port is in use"):
            reserve_shared("127.0.0.1", port)
    finally:
        other.close()


def test_a_held_port_cannot_be_held_twice(held):
    with pytest.raises(PortInUse):
        reserve_shared("127.0.0.1", held.getsockname()[1])
