"""`follow` merges what the sources say, leaves the configured upstreams alone, and keeps the
last endpoints of a source that fails (a DNS outage drains nothing)."""

import asyncio

import pytest

from edgecascade.router.gateway.discovery import DiscoveryError, Endpoints, follow


class Answers:
    """A source that says, in turn, each of `answers` (an exception is raised), then the last."""

    def __init__(self, *answers: Endpoints | Exception) -> None:
        self.answers = list(answers)

    async def endpoints(self) -> Endpoints:
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Recorded:
    """Stands in for Membership: what each round asked for."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, str]] = []

    async def update(self, wanted: dict[str, str]) -> None:
        self.rounds.append(dict(wanted))


def rounds(*sources: Answers, n: int, fixed: tuple[str, ...] = ()) -> list[dict[str, str]]:
    membership = Recorded()

    async def main() -> None:
        task = asyncio.create_task(follow(list(sources), membership, 0.001, fixed))
        while len(membership.rounds) < n:
            await asyncio.sleep(0.001)
        task.cancel()

    asyncio.run(main())
    return membership.rounds[:n]


def test_a_failing_source_keeps_its_last_endpoints(caplog: pytest.LogCaptureFixture) -> None:
    dns = Answers(
        {"t0:8001": "10.0.0.1:8001", "t1:8001": "10.0.0.2:8001"},
        DiscoveryError("DNS SRV triton: timed out"),
        {"t1:8001": "10.0.0.2:8001"},
    )
    found = rounds(dns, n=3)
    assert found[0] == found[1] == {"t0:8001": "10.0.0.1:8001", "t1:8001": "10.0.0.2:8001"}
    assert found[2] == {"t1:8001": "10.0.0.2:8001"}  # only an answer removes one
    assert "DNS SRV triton: timed out; keeping its last 2 endpoints" in caplog.text


def test_sources_are_merged_and_configured_upstreams_left_out() -> None:
    listed = Answers({"127.0.0.1:8001": "127.0.0.1:8001", "127.0.0.1:8002": "127.0.0.1:8002"})
    dns = Answers({"t0:8001": "10.0.0.1:8001"})
    (found,) = rounds(listed, dns, n=1, fixed=("127.0.0.1:8001",))
    assert found == {"127.0.0.1:8002": "127.0.0.1:8002", "t0:8001": "10.0.0.1:8001"}


def test_a_source_that_never_answered_contributes_nothing() -> None:
    (found,) = rounds(Answers(DiscoveryError("no file")), Answers({"t:1": "10.0.0.9:1"}), n=1)
    assert found == {"t:1": "10.0.0.9:1"}
