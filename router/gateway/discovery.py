"""Discovery: the gateway follows a changing set of Triton endpoints without a restart.

Sources say which endpoints there are now: an upstreams file (one HOST:PORT a line, edited by
`edgecascade router upstreams add|remove`) and DNS SRV records (a headless Service's
`_grpc._tcp.<service>.<namespace>.svc.cluster.local`). Every probe interval `follow` reads
them and `Membership` applies the difference to HAProxy through its runtime API: a joining
endpoint is added with its checks (it gets requests once the agent says it is ready); a leaving
one is drained (no new requests; those in flight finish, for up to the grace period), then
deleted. A source that fails to answer keeps its last endpoints: a DNS outage drains nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.rdtypes.IN.SRV
import dns.resolver

from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.serving import check_address
from edgecascade.router.gateway.runtime import RuntimeApi, RuntimeApiError

log = logging.getLogger(__name__)

Endpoints = dict[str, str]  # HOST:PORT as named (the agent's TLS name) -> IP:PORT for HAProxy
DNS_TIMEOUT_S = 1.0


class DiscoveryError(Exception):
    """A source could not say which endpoints there are now."""


class Source(Protocol):
    async def endpoints(self) -> Endpoints: ...


def split(address: str) -> tuple[str, int]:
    """HOST:PORT (checked already) as host (IPv6 without brackets) and port."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def read_upstreams(path: Path) -> list[str]:
    """The HOST:PORT lines of an upstreams file (blank lines and # comments skipped); a
    UserError names the first line that is not HOST:PORT."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    found = []
    for number, line in enumerate(lines, 1):
        if line:
            found.append(check_address(f"{path.name} line {number}:", line))
    return found


def write_upstreams(path: Path, upstreams: Iterable[str]) -> None:
    """Replace the file at once (readers see the old list or the new one, never half)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text("".join(f"{u}\n" for u in upstreams))
    os.replace(partial, path)


class UpstreamsFile:
    """The endpoints listed in `path`, each name resolved by the system's resolver."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def endpoints(self) -> Endpoints:
        try:
            upstreams = read_upstreams(self.path)
        except (OSError, UserError) as e:
            raise DiscoveryError(f"upstreams file {self.path}: {e}") from None
        found = {}
        loop = asyncio.get_running_loop()
        for url in upstreams:
            host, port = split(url)
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as e:
                log.warning("upstream %s does not resolve (%s): skipped for now", url, e)
                continue
            ip = str(infos[0][4][0])
            found[url] = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return found


class SrvRecords:
    """The endpoints a DNS SRV name lists (target:port each), targets resolved to their A
    records; asked of `nameserver` (HOST:PORT), or of resolv.conf's servers."""

    def __init__(self, name: str, nameserver: str | None = None) -> None:
        self.name = name
        self.resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
        if nameserver is not None:
            host, port = split(nameserver)
            self.resolver.nameservers, self.resolver.port = [host], port
        self.resolver.lifetime = DNS_TIMEOUT_S

    async def endpoints(self) -> Endpoints:
        try:
            answer = await self.resolver.resolve(self.name, "SRV")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return {}  # a headless Service with no pod (or none yet)
        except dns.exception.DNSException as e:
            raise DiscoveryError(f"DNS SRV {self.name}: {e}") from None
        found = {}
        for record in answer:
            assert isinstance(record, dns.rdtypes.IN.SRV.SRV)
            target = record.target.to_text(omit_final_dot=True)
            try:
                addresses = await self.resolver.resolve(target, "A")
            except dns.exception.DNSException as e:
                log.warning("SRV target %s does not resolve (%s): skipped for now", target, e)
                continue
            found[f"{target}:{record.port}"] = f"{addresses[0].to_text()}:{record.port}"
        return found


class Agent(Protocol):
    """The health agent, which must know each endpoint that HAProxy asks it about."""

    def watch(self, name: str, url: str) -> None: ...

    async def forget(self, name: str) -> None: ...


class Membership:
    """The endpoints HAProxy balances over beyond its fixed ones, kept equal to what the
    sources say (`update`), through the runtime API; `servers(backend, name, address)` gives
    an endpoint's server lines in each of `backends`."""

    def __init__(
        self,
        api: RuntimeApi,
        servers: Callable[[str, str, str], list[str]],
        agent: Agent,
        backends: Sequence[str],
        grace_s: float,
    ) -> None:
        self.api, self.servers, self.agent = api, servers, agent
        self.backends, self.grace_s = backends, grace_s
        self._names: dict[tuple[str, str], str] = {}  # (url, address) -> server name
        self._count = itertools.count()
        self._leaving: set[asyncio.Task[None]] = set()

    @property
    def endpoints(self) -> Endpoints:
        return dict(self._names)

    async def update(self, wanted: Mapping[str, str]) -> None:
        target = set(wanted.items())
        for url, address in sorted(target - self._names.keys()):
            try:
                await self._join(url, address)
            except RuntimeApiError as e:
                log.error("Triton %s could not be added: %s", url, e)
        for key in self._names.keys() - target:
            task = asyncio.create_task(self._leave(key[0], self._names.pop(key)))
            self._leaving.add(task)
            task.add_done_callback(self._leaving.discard)

    async def _join(self, url: str, address: str) -> None:
        name = f"dyn{next(self._count)}"
        self.agent.watch(name, url)
        self._names[url, address] = name
        for backend in self.backends:
            for server in self.servers(backend, name, address):
                await self.api.add(backend, server)
        log.warning("Triton %s (%s) joined as %s", url, address, name)

    async def _leave(self, url: str, name: str) -> None:
        """Drain, wait for what is in flight (up to the grace period), delete."""
        names = {name, f"{name}-live"}
        servers = [(backend, n) for backend in self.backends for n in sorted(names)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_s
        try:
            for backend, n in servers:
                await self.api.set_state(backend, n, "drain")
            log.warning("Triton %s (%s) leaving: draining", url, name)
            while loop.time() < deadline and await self._in_flight(names):
                await asyncio.sleep(0.05)
            for backend, n in servers:
                await self.api.set_state(backend, n, "maint")
                await self.api.command(f"shutdown sessions server {backend}/{n}")
                await self.api.delete(backend, n)
        except RuntimeApiError as e:
            log.error("Triton %s (%s) could not be removed: %s", url, name, e)
            return
        finally:
            await self.agent.forget(name)
        log.warning("Triton %s (%s) drained and removed", url, name)

    async def _in_flight(self, names: set[str]) -> int:
        return sum([await self.api.in_flight(backend, names) for backend in self.backends])

    async def settled(self) -> None:
        """Wait until every leaving endpoint is gone."""
        await asyncio.gather(*self._leaving)


async def follow(
    sources: Sequence[Source], membership: Membership, interval_s: float, fixed: Iterable[str]
) -> None:
    """Apply what `sources` say every `interval_s`, forever; endpoints in `fixed` (the
    gateway's configured upstreams) are left to its configuration."""
    known: dict[int, Endpoints] = {}
    fixed = set(fixed)
    while True:
        for i, source in enumerate(sources):
            try:
                known[i] = await source.endpoints()
            except DiscoveryError as e:
                log.warning("%s; keeping its last %d endpoints", e, len(known.get(i, {})))
        wanted = {u: a for found in known.values() for u, a in found.items() if u not in fixed}
        await membership.update(wanted)
        await asyncio.sleep(interval_s)
