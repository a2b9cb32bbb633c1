"""The gateway's choice of Triton endpoint (no servers: channels are created, never used)."""

import asyncio

from router.gateway import Gateway


def with_gateway(check) -> None:
    async def main() -> None:
        gateway = Gateway(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])
        try:
            check(gateway, *gateway.endpoints)
        finally:
            await gateway.close()

    asyncio.run(main())


def test_least_outstanding_among_healthy_endpoints_with_ties_taking_turns():
    def check(gateway, a, b, c):
        a.healthy = b.healthy = True
        assert {gateway.pick() for _ in range(4)} == {a, b}  # c is not known to be ready
        a.outstanding = 2
        assert all(gateway.pick() is b for _ in range(4))

    with_gateway(check)


def test_failover_excludes_tried_endpoints_and_falls_back_to_unhealthy_ones():
    def check(gateway, a, b, c):
        a.healthy = True
        assert gateway.pick() is a
        assert gateway.pick({a}) in {b, c}  # health may be stale: still worth a try
        assert gateway.pick({a, b, c}) is None

    with_gateway(check)
