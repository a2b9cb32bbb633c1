"""Upload of an edge's collected examples to ModelSync (`UploadExamples`), resumable: the id of
the last example the cloud side acknowledged is kept in a cursor file next to the store, so a
broken connection or a restart sends again from there, and the cloud side's dedup by sha256
keeps what a broken upload had already delivered only once."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator

import grpc

from edgecascade.cloud.common.example_messages import to_message
from edgecascade.cloud.common.examples import ExampleStore
from edgecascade.v1 import model_sync_pb2 as pb
from edgecascade.v1 import model_sync_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
UPLOAD_BATCH = 256  # examples per UploadExamples call


class ExampleUploader:
    def __init__(self, store: ExampleStore, edge_id: str, batch: int = UPLOAD_BATCH) -> None:
        self.store = store
        self.edge_id = edge_id
        self.batch = batch
        self.cursor_file = store.path.with_name(store.path.name + ".uploaded")
        self.uploaded = self.duplicates = 0  # kept by the cloud side; already kept there
        self.failures = 0  # uploads that stopped with an error
        self.error = ""  # why the last upload failed ("" when it did not)

    @property
    def cursor(self) -> int:
        """The id of the last example the cloud side acknowledged (0: none yet)."""
        try:
            return int(self.cursor_file.read_text())
        except FileNotFoundError:
            return 0

    def _acknowledged(self, cursor: int) -> None:
        partial = self.cursor_file.with_name(self.cursor_file.name + ".partial")
        partial.write_text(str(cursor))
        os.replace(partial, self.cursor_file)

    async def upload(self, stub: pb_grpc.ModelSyncStub, timeout_s: float = 60.0) -> int:
        """Send everything kept since the cursor, a batch per call; the number sent. A failed
        call raises grpc.aio.AioRpcError, the cursor at the last acknowledged batch."""
        sent = 0
        while rows := await asyncio.to_thread(self.store.after, self.cursor, self.batch):
            messages: Iterator[pb.UploadedExample] = (
                to_message(self.edge_id, example) for _, example in rows
            )
            response = await stub.UploadExamples(messages, timeout=timeout_s)
            self._acknowledged(rows[-1][0])
            self.uploaded += response.kept
            self.duplicates += response.duplicates
            sent += len(rows)
        return sent

    async def run(self, channel: grpc.aio.Channel, interval_s: float) -> None:
        """Upload every `interval_s` seconds, for ever; a failure is logged and tried again."""
        stub = pb_grpc.ModelSyncStub(channel)
        while True:
            try:
                await self.upload(stub)
                self.error = ""
            except grpc.aio.AioRpcError as e:
                self.failures += 1
                self.error = f"{e.code().name}: {e.details()}"
                log.warning("example upload stopped, again in %.0fs: %s", interval_s, self.error)
            await asyncio.sleep(interval_s)
