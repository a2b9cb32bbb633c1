"""`edge run`: frames from a source, through an edge agent's ClassifyStream, out as JSON
lines (and optionally to a gRPC ResultSink)."""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, TextIO

import grpc

from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.transport import PLAINTEXT, Transport
from edgecascade.edge.sources.base import SourceFrame, open_source
from edgecascade.edge.sources.reader import FrameBuffer, FrameReader
from edgecascade.edge.tools.stream import classify_stream
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc
from edgecascade.v1 import sink_pb2 as sink_pb
from edgecascade.v1 import sink_pb2_grpc as sink_grpc

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    source: str
    frames_read: int = 0
    answered: int = 0
    errors: int = 0
    dropped: int = 0
    reconnects: int = 0
    sink_received: int | None = None


def frame_request(frame: SourceFrame, top_k: int) -> pb.ClassifyRequest:
    """Raw RGB pixels: no encoding on the way to the agent."""
    raw = pb.RawImage(shape=list(frame.image.shape), data=frame.image.tobytes())
    return pb.ClassifyRequest(request_id=str(frame.index), raw_image=raw, top_k=top_k)


def frame_record(result: sink_pb.FrameResult, round_trip_ms: float) -> dict[str, Any]:
    """One JSON line: where the frame came from and what the cascade said about it."""
    r = result.response
    record: dict[str, Any] = {
        "frame": result.frame_index,
        "position_ms": result.position_ms if result.HasField("position_ms") else None,
        "captured_at": round(result.captured_at, 6),
        "dropped": result.dropped,
    }
    if r.HasField("error"):
        return record | {"error": {"code": r.error.code, "message": r.error.message}}
    top_k = [{"class_id": p.class_id, "name": p.name, "score": round(p.score, 6)} for p in r.top_k]
    return record | {
        "top1": top_k[0] if top_k else None,
        "top_k": top_k,
        "tier": pb.Tier.Name(r.tier).lower(),
        "edge_confidence": round(r.edge_confidence, 6),
        "versions": {
            "family": r.versions.family,
            "edge": r.versions.edge,
            "cloud": r.versions.cloud,
        },
        "timings_ms": {
            "edge": round(r.timings.edge_ms, 3),
            "cloud": round(r.timings.cloud_ms, 3),
            "agent": round(r.timings.total_ms, 3),
            "round_trip": round(round_trip_ms, 3),
        },
        "degraded_reason": r.degraded_reason or None,
    }


class _SinkPublisher:
    """Streams FrameResults to a ResultSink from a background call; `close` returns the ack."""

    def __init__(self, address: str, transport: Transport):
        self.address = address
        self._channel = transport.channel(address)
        self._queue: queue.Queue[sink_pb.FrameResult | None] = queue.Queue()
        stub = sink_grpc.ResultSinkStub(self._channel)
        self._call = stub.Publish.future(iter(self._queue.get, None))

    def publish(self, result: sink_pb.FrameResult) -> None:
        self._queue.put(result)

    def close(self, timeout_s: float = 10.0) -> int:
        self._queue.put(None)
        try:
            ack: sink_pb.PublishAck = self._call.result(timeout=timeout_s)
            return ack.received
        except grpc.RpcError as e:
            raise UserError(
                f"result sink {self.address} did not take the results: {e.code().name}: "
                f"{e.details()}"
            ) from None
        finally:
            self._channel.close()


def run(
    source_spec: str,
    agent_address: str,
    out: TextIO,
    *,
    kind: str | None = None,
    transport: Transport = PLAINTEXT,
    sink: str | None = None,
    sink_transport: Transport | None = None,
    max_fps: float | None = None,
    buffer_size: int = 2,
    window: int = 2,
    top_k: int = 5,
    reconnect_timeout_s: float | None = 30.0,
    stop: threading.Event | None = None,
) -> RunStats:
    """Read `source_spec` (as `kind`, default: the kind that claims it) until it ends (or
    `stop` is set) and write one JSON line per frame. An agent that cannot be reached, or a
    source that never comes (back), is a UserError.

    At most `window` frames await an answer; behind them a buffer of `buffer_size` frames
    drops its oldest when the agent falls behind a live (or `max_fps`-paced) source, so
    latency stays bounded. Files and folders read unpaced wait instead: every frame counts.
    `transport` (TLS, token) is how the agent is called, `sink_transport` (default the same)
    how the sink is."""
    source = open_source(source_spec, kind)
    buffer = FrameBuffer(buffer_size, drop_oldest=source.live or bool(max_fps))
    reader = FrameReader(source, buffer, max_fps, reconnect_timeout_s)
    stats = RunStats(str(source))
    publisher = _SinkPublisher(sink, sink_transport or transport) if sink else None

    if stop is not None:

        def stop_reading() -> None:
            stop.wait()
            reader.stop()

        threading.Thread(target=stop_reading, daemon=True).start()
    reader.start()
    try:
        with transport.channel(agent_address) as channel:
            answers = classify_stream(
                pb_grpc.CascadeStub(channel).ClassifyStream,
                iter(buffer.get, None),
                lambda frame: frame_request(frame, top_k),
                window,
            )
            for answer in answers:
                frame, response = answer.item, answer.response
                result = sink_pb.FrameResult(
                    source=source_spec,
                    frame_index=frame.index,
                    position_ms=frame.position_ms,
                    captured_at=frame.captured_at,
                    dropped=buffer.dropped,
                    response=response,
                )
                out.write(json.dumps(frame_record(result, answer.round_trip_ms)) + "\n")
                out.flush()
                stats.errors += response.HasField("error")
                stats.answered += not response.HasField("error")
                if publisher:
                    publisher.publish(result)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        raise UserError(f"edge agent {agent_address} is unreachable: {e.details()}") from None
    finally:
        reader.stop()
        reader.join(timeout=5.0)
        stats.frames_read, stats.dropped = reader.frames_read, buffer.dropped
        stats.reconnects = reader.reconnects
        if publisher:
            stats.sink_received = publisher.close()
    return stats
