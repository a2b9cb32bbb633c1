"""HAProxy's runtime API (its admin socket): servers added, drained and deleted while it runs."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path


class RuntimeApiError(RuntimeError):
    """HAProxy refused a runtime command; the message is its answer."""


class RuntimeApi:
    """One command per connection to the `stats socket ... level admin` at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def command(self, line: str) -> str:
        """HAProxy's answer to `line`, stripped."""
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            return (await reader.read()).decode(errors="replace").strip()
        finally:
            writer.close()

    async def _expect(self, line: str, answer: str = "") -> None:
        got = await self.command(line)
        if got != answer:
            raise RuntimeApiError(f"HAProxy refused `{line.split(' ', 3)[:3]}`: {got}")

    async def add(self, backend: str, server: str) -> None:
        """Add `server` (name, address, options as on a `server` line) to `backend` and put it
        in service with its checks (HAProxy adds it in maintenance, checks off)."""
        name = server.split(" ", 1)[0]
        await self._expect(f"add server {backend}/{server}", "New server registered.")
        if " check " in f"{server} ":
            await self._expect(f"enable health {backend}/{name}")
        if " agent-check" in server:
            await self._expect(f"enable agent {backend}/{name}")
        await self.set_state(backend, name, "ready")

    async def set_state(self, backend: str, name: str, state: str) -> None:
        """`ready`, `drain` (no new requests, those in flight go on) or `maint`."""
        await self._expect(f"set server {backend}/{name} state {state}")

    async def delete(self, backend: str, name: str) -> None:
        """Delete a server in maintenance that has no connection left."""
        await self._expect(f"del server {backend}/{name}", "Server deleted.")

    async def in_flight(self, backend: str, names: set[str]) -> int:
        """Requests that `backend`'s servers `names` are serving now (HAProxy's scur)."""
        rows = csv.DictReader((await self.command("show stat")).lstrip("# ").splitlines())
        return sum(
            int(row["scur"] or 0)
            for row in rows
            if row["pxname"] == backend and row["svname"] in names
        )
