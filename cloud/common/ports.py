"""Free TCP ports for servers started on loopback, and a port held for worker processes that
share it."""

from __future__ import annotations

import socket

from edgecascade.cloud.common.transport import PortInUse


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on `port` (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def reserve_shared(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free port) with SO_REUSEPORT, not listening: while it
    is held, servers of this user that set SO_REUSEPORT can listen on the port too and the
    kernel spreads connections among them; other programs cannot bind it. The port is first
    bound without SO_REUSEPORT, so one held by anything else (listening or bound, with
    SO_REUSEPORT or not) is PortInUse."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]"), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    held = socket.socket(family, kind, proto)
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            probe.bind(address)
            address = probe.getsockname()  # with the port picked when 0
        # not SO_REUSEADDR: with it, a server of SO_REUSEADDR alone could listen on the port
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(address)
    except OSError as e:
        held.close()
        raise PortInUse(f"cannot listen on {host}:{port}: the port is in use ({e.strerror})") from e
    return held
