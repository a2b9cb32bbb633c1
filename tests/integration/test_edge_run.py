"""`edgecascade edge run` end to end: a real video file, a real edge agent (started by the
command), JSON lines out and a real gRPC ResultSink in."""

import http.server
import json
import subprocess
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecascade.cloud.build import datasets
from edgecascade.cloud.common import certs
from edgecascade.cloud.common.launcher import edgecascade_command
from edgecascade.cloud.common.transport import Tls, Transport
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.v1 import sink_pb2 as sink_pb
from edgecascade.v1 import sink_pb2_grpc as sink_grpc

pytestmark = pytest.mark.integration
N = 40


class CollectingSink(sink_grpc.ResultSinkServicer):
    def __init__(self):
        self.results: list[sink_pb.FrameResult] = []

    def Publish(self, request_iterator, context):
        for result in request_iterator:
            self.results.append(result)
        return sink_pb.PublishAck(received=len(self.results))


@pytest.fixture
def sink(tmp_path: Path):
    """A ResultSink serving TLS with a certificate of a CA of its own: (address, collector,
    the CA's certificate)."""
    folder = tmp_path / "sink-certs"
    certs.init(folder)
    issued = certs.issue(folder, "sink")
    collector = CollectingSink()
    transport = Transport(tls=Tls(cert=issued.cert, key=issued.key))
    server = transport.sync_server(2)
    sink_grpc.add_ResultSinkServicer_to_server(collector, server)
    port = transport.listen(server, "127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", collector, folder / certs.CA_CERT
    server.stop(None)


def write_video(path: Path) -> np.ndarray:
    """N Fashion-MNIST test images, upscaled to 112x112, as an MJPG .avi; returns labels."""
    test = datasets.fashion("test").head(N)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (112, 112))
    for image in test.images:
        writer.write(cv2.cvtColor(cv2.resize(image, (112, 112)), cv2.COLOR_GRAY2BGR))
    writer.release()
    return np.asarray(test.labels)


def edge_run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = edgecascade_command("edge", "run", *args)
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)


def test_video_file_is_classified_frame_by_frame(fashion_manifest, tmp_path, sink):
    labels = write_video(tmp_path / "camera.avi")
    address, collector, sink_ca = sink
    out = tmp_path / "frames.jsonl"
    done = edge_run(  # the agent it starts serves mutual TLS; the sink is called over TLS
        "--source",
        str(tmp_path / "camera.avi"),
        "--output",
        str(out),
        "--sink",
        address,
        "--ca",
        str(sink_ca),
        "--top-k",
        "3",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(N))
    positions = [line["position_ms"] for line in lines]
    assert positions == sorted(positions) and positions[-1] > positions[0]
    for line in lines:
        assert len(line["top_k"]) == 3 and line["top1"] == line["top_k"][0]
        assert line["tier"] == "edge" and 0 < line["edge_confidence"] <= 1
        assert line["versions"]["edge"] == fashion_manifest.edge.key
        assert line["timings_ms"]["round_trip"] >= line["timings_ms"]["agent"] > 0
        assert line["dropped"] == 0
    top1 = np.array([line["top1"]["class_id"] for line in lines])
    assert (top1 == labels).mean() > 0.7  # MJPG and the upscale cost little accuracy
    # no cloud: the unsure frames come back degraded, and say so
    unsure = [line for line in lines if line["degraded_reason"]]
    assert all(line["degraded_reason"] == "cloud-unavailable" for line in unsure)
    assert [r.frame_index for r in collector.results] == list(range(N))
    assert collector.results[5].response.top_k[0].class_id == lines[5]["top1"]["class_id"]


def test_file_that_appears_late_is_picked_up(fashion_manifest, tmp_path):
    write_video(tmp_path / "recording.avi")
    target = tmp_path / "camera.avi"
    out = tmp_path / "frames.jsonl"
    with EdgeProcess("fashion", None, tmp_path / "edge.log") as agent:
        appear = threading.Timer(4.0, (tmp_path / "recording.avi").rename, args=(target,))
        appear.start()
        done = edge_run(
            "--source", str(target), "--agent", agent.address, "--insecure", "--output", str(out)
        )
        appear.join()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "cannot open" in done.stderr and "retrying in" in done.stderr
    assert [json.loads(line)["frame"] for line in out.read_text().splitlines()] == list(range(N))


class OneShotVideo(http.server.BaseHTTPRequestHandler):
    """Serves `video` to the first GET, then 404: a stream that ends and goes away."""

    video = b""
    served = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).served += 1
        if type(self).served > 1:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.send_header("Content-Length", str(len(self.video)))
        self.end_headers()
        self.wfile.write(self.video)

    def log_message(self, *args) -> None:
        pass


def test_http_stream_is_read_live_then_given_up_when_it_is_gone(fashion_manifest, tmp_path):
    labels = write_video(tmp_path / "camera.avi")
    OneShotVideo.video = (tmp_path / "camera.avi").read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OneShotVideo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/camera.avi"
    out = tmp_path / "frames.jsonl"
    try:
        done = edge_run(
            "--source", url, "--output", str(out), "--buffer", str(N), "--reconnect-timeout", "2"
        )
    finally:
        server.shutdown()
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(N))  # a big buffer drops nothing
    assert all(line["position_ms"] is None for line in lines)  # live: no position in a file
    top1 = np.array([line["top1"]["class_id"] for line in lines])
    assert (top1 == labels).mean() > 0.7
    assert "stopped delivering frames" in done.stderr and OneShotVideo.served > 1
    assert done.returncode != 0 and f"cannot open {url}" in done.stderr  # gave up after 2 s
