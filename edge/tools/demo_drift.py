"""`edgecascade demo --scenario drift`: the cascade learns from its cloud, end to end on real
servers (needs the "build" extra).

A real Triton serves the fashion cloud model; a router gateway serves a registry over ModelSync
(the family published there as v1); an edge agent follows it, audits a share of its confident
answers and collects and uploads what it escalates and audits. A camera-like stream of
Fashion-MNIST test images turns to a corruption the models were not trained on midway; once
the cloud holds enough examples, one `models adapt` round runs on them and publishes a signed
new version, which the agent rolls out while the stream goes on. Every hop is plaintext on
loopback. Output: a live table, a JSON report and a PNG over the frames.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from multiprocessing.queues import Queue
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import cv2
import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgecascade.cloud.build.adapt_recipe import Recipe
from edgecascade.cloud.build.corruptions import CORRUPTIONS, checked_severity, corrupt, corruption
from edgecascade.cloud.build.datasets import fashion
from edgecascade.cloud.common.errors import UserError
from edgecascade.cloud.common.examples import ExampleStore
from edgecascade.cloud.common.manifest import Manifest
from edgecascade.cloud.common.paths import family_dir, keys_dir
from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.cloud.registry.examples import open_received, received_files
from edgecascade.cloud.registry.store import Registry
from edgecascade.cloud.triton.repository import write_model
from edgecascade.cloud.triton.server import TritonServer
from edgecascade.edge.serving.collection import store_path
from edgecascade.edge.tools.adapt_examples import adapt, collect
from edgecascade.edge.tools.demo import paced
from edgecascade.edge.tools.drift_report import (
    AUDIT_WINDOW,
    WINDOW,
    Answer,
    Moments,
    Sample,
    agreement,
    build_report,
    plot,
)
from edgecascade.edge.tools.families import built_family
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import Frame
from edgecascade.edge.tools.stream import classify_stream
from edgecascade.router.gateway.process import GatewayProcess
from edgecascade.v1 import cascade_pb2 as pb
from edgecascade.v1 import cascade_pb2_grpc as pb_grpc

FAMILY = "fashion"
EDGE_ID = "demo-camera"
POLL_S = 0.5
UPLOAD_INTERVAL_S = 1.0
ROLLOUT_TIMEOUT_S = 120.0
console = Console()


@dataclass(frozen=True)
class DriftOptions:
    """The scenario's knobs: the corruption from frame `clean_frames` on, the examples the
    cloud must hold before the round, the frames streamed after the roll-out, the round's
    epochs, the agent's audit rate, the camera's frame rate and window, and the frames at most
    (None: the whole test split)."""

    corruption: str = "pixelate"
    severity: int = 3
    clean_frames: int = 300
    examples: int = 600
    after_frames: int = 1000
    epochs: int = Recipe.epochs
    audit_rate: float = 0.25
    fps: float = 30.0
    window: int = 1
    limit: int | None = None

    def check(self) -> None:
        """A UserError naming the option for each impossible value."""
        checked_severity(self.severity)
        if corruption(self.corruption).in_training:
            held_out = ", ".join(name for name, c in CORRUPTIONS.items() if not c.in_training)
            raise UserError(
                f"--corruption {self.corruption!r} is in the models' training: pick a held-out "
                f"one ({held_out})"
            )
        positive = {
            "--clean-frames": self.clean_frames,
            "--examples": self.examples,
            "--after-frames": self.after_frames,
            "--epochs": self.epochs,
            "--in-flight": self.window,
        }
        for option, value in positive.items():
            if value < 1:
                raise UserError(f"{option} {value}: give at least 1")
        if not 0 < self.audit_rate <= 1:
            raise UserError(f"--audit-rate {self.audit_rate}: give a share in (0, 1]")
        if self.fps < 0:
            raise UserError(f"--fps {self.fps}: give 0 (as fast as answered) or more")
        if self.limit is not None and self.limit <= self.clean_frames:
            raise UserError(
                f"--limit {self.limit}: give more frames than --clean-frames {self.clean_frames}"
            )


def drift_frames(options: DriftOptions) -> list[Frame]:
    """The test split (up to `limit`) as PNG frames, corrupted from `clean_frames` on."""
    test = fashion("test").head(options.limit)
    images = test.images.copy()
    images[options.clean_frames :] = corrupt(
        images[options.clean_frames :], options.corruption, options.severity
    )
    return [
        Frame(cv2.imencode(".png", image)[1].tobytes(), int(label))
        for image, label in zip(images, test.labels)
    ]


class CameraStream:
    """The frames through one ClassifyStream on a thread, paced at `fps`, until `end` (which
    may be moved while it runs); every answer recorded, a broken stream in `failure`."""

    def __init__(self, address: str, frames: list[Frame], fps: float, window: int) -> None:
        self.address, self.frames, self.fps, self.window = address, frames, fps, window
        self.answers: list[Answer] = []
        self.sent = 0
        self.end = len(frames)
        self.failure = ""
        self.started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)

    def start(self) -> CameraStream:
        self._thread.start()
        return self

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop_at(self, end: int) -> None:
        self.end = min(self.end, end)

    def join(self) -> None:
        self._thread.join()

    def _frames(self) -> Iterator[tuple[int, Frame]]:
        for i, frame in paced(self.frames, self.fps):
            if i >= self.end:
                return
            self.sent = i + 1
            yield i, frame

    def _run(self) -> None:
        try:
            with PLAINTEXT.channel(self.address) as channel:
                answers = classify_stream(
                    pb_grpc.CascadeStub(channel).ClassifyStream,
                    self._frames(),
                    lambda item: pb.ClassifyRequest(
                        request_id=str(item[0]), encoded_image=item[1].encoded, top_k=1
                    ),
                    self.window,
                )
                for answered in answers:
                    self.answers.append(_answer(*answered.item, answered.response))
        except grpc.RpcError as e:
            self.failure = f"{e.code().name}: {e.details()}"


def _answer(i: int, frame: Frame, r: pb.ClassifyResponse) -> Answer:
    if r.HasField("error"):
        return Answer(i, frame.label, False, False, -1, -1, "", r.error.message or "error")
    return Answer(
        frame=i,
        label=frame.label,
        sent_cloud=r.tier == pb.CLOUD or r.degraded,
        degraded=r.degraded,
        edge_class=r.edge_class_id,
        top1=r.top_k[0].class_id,
        edge_version=r.versions.edge,
    )


class Watcher:
    """The agent's audit counters and the examples kept at the edge and in the cloud, every
    POLL_S on a thread, as samples against the answers back so far."""

    def __init__(self, address: str, stream: CameraStream, edge_store: Path, cloud: Path) -> None:
        self.address, self.stream = address, stream
        self.edge_store, self.cloud = edge_store, cloud
        self.samples: list[Sample] = []
        self.status = pb.GetStatusResponse()
        self.uploaded_bytes = 0
        self._stores: dict[Path, ExampleStore] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling, poll once more (every answer is in by then) and close the stores."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            self.poll()
        except grpc.RpcError:
            pass  # the agent is gone: the samples end at the last poll
        finally:
            for store in self._stores.values():
                store.close()

    def _store(self, path: Path, received: bool = False) -> ExampleStore:
        """The agent's store (its own disk) or one `received` in the registry."""
        if path not in self._stores:
            self._stores[path] = open_received(path) if received else ExampleStore(path, 1 << 62)
        return self._stores[path]

    def poll(self) -> None:
        frame = len(self.stream.answers)
        with PLAINTEXT.channel(self.address) as channel:
            status = pb_grpc.CascadeStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
        collected = len(self._store(self.edge_store)) if self.edge_store.exists() else 0
        cloud = [self._store(path, True) for path in received_files(self.cloud, FAMILY)]
        self.status = status
        self.uploaded_bytes = sum(store.size_bytes() for store in cloud)
        self.samples.append(
            Sample(
                frame=frame,
                audited=sum(a.audited for a in status.audit),
                agreed=sum(a.agreed for a in status.audit),
                collected=collected,
                uploaded=sum(map(len, cloud)),
            )
        )

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except grpc.RpcError:
                continue  # a busy agent: the next poll


class Dashboard:
    """The live view: the stream's recent figures, the examples, the adapt round's progress."""

    def __init__(self, stream: CameraStream, watcher: Watcher, progress: Progress) -> None:
        self.stream, self.watcher, self.progress = stream, watcher, progress
        self.phase = "clean"

    def __rich__(self) -> Group:
        recent = [a for a in self.stream.answers[-WINDOW:] if not a.error]
        table = Table(title=f"edgecascade demo --scenario drift ({self.phase})")
        table.add_column(f"last {WINDOW} frames")
        table.add_column("value", justify="right")
        last = self.stream.answers[-1] if self.stream.answers else None
        table.add_row("frames answered", f"{len(self.stream.answers)} / {self.stream.end}")
        table.add_row("edge model", last.edge_version if last else "-")
        if recent:
            n = len(recent)
            table.add_row("escalation rate", f"{sum(a.sent_cloud for a in recent) / n:.1%}")
            table.add_row(
                "edge accuracy", f"{sum(a.edge_class == a.label for a in recent) / n:.1%}"
            )
            table.add_row("cascade accuracy", f"{sum(a.top1 == a.label for a in recent) / n:.1%}")
        samples = self.watcher.samples
        if samples:
            audit = agreement(samples, samples[-1].frame - AUDIT_WINDOW, samples[-1].frame + 1)
            if audit["agreement"] is not None:
                table.add_row(
                    f"audited agreement (last {AUDIT_WINDOW})",
                    f"{audit['agreement']:.1%} of {audit['audited']}",
                )
            table.add_row(
                "examples at the edge / in the cloud",
                f"{samples[-1].collected} / {samples[-1].uploaded}",
            )
        failed = sum(bool(a.error) for a in self.stream.answers)
        table.add_row("failed requests", str(failed + bool(self.stream.failure)))
        return Group(table, self.progress)


def _wait(condition: Any, stream: CameraStream, timeout_s: float | None = None) -> bool:
    """Wait while the stream runs until `condition()` holds; whether it did."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while not condition():
        if not stream.running() or (deadline is not None and time.monotonic() > deadline):
            return bool(condition())
        time.sleep(0.1)
    return True


def _adapt_child(registry_root: Path, recipe: Recipe, events: Queue[Any]) -> None:
    """The round in a process of its own, as the cloud side runs it: `models adapt` on every
    edge's uploads; each step, then the report (or the error), put on `events`."""
    try:
        registry = Registry(registry_root)
        collected = collect(received_files(registry.root, FAMILY), FAMILY)
        out = adapt(
            registry, FAMILY, collected, recipe, True, lambda *step: events.put(("step", step))
        )
        events.put(("done", out))
    except UserError as e:
        events.put(("user-error", str(e)))
    except Exception as e:  # noqa: BLE001 - reported by the parent
        events.put(("error", f"{type(e).__name__}: {e}"))


def _adapt_round(registry: Registry, epochs: int, progress: Progress) -> dict[str, Any]:
    """Run `_adapt_child` (spawned: no gRPC threads of ours in it) with the dashboard's
    progress bar; its report."""
    task = progress.add_task("adapt round: distilling", total=None, loss=0.0)
    context = multiprocessing.get_context("spawn")
    events: Queue[Any] = context.Queue()
    recipe = Recipe(epochs=epochs)
    child = context.Process(target=_adapt_child, args=(registry.root, recipe, events))
    child.start()
    try:
        while True:
            try:
                kind, value = events.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the adapt round exited with {child.exitcode}") from None
                continue
            if kind == "step":
                done, total, loss = value
                progress.update(task, completed=done, total=total, loss=loss)
            elif kind == "user-error":
                raise UserError(value)
            elif kind == "error":
                raise RuntimeError(f"the adapt round failed: {value}")
            else:
                report: dict[str, Any] = value
                return report
    finally:
        child.join(5.0)
        if child.is_alive():
            child.kill()
            child.join()


@dataclass(frozen=True)
class Round:
    """The scenario's moments, the adapt round's report and its wall time."""

    moments: Moments
    adapt: dict[str, Any]
    seconds: float


def _scenario(
    options: DriftOptions,
    registry: Registry,
    old_edge: str,
    stream: CameraStream,
    watcher: Watcher,
    dashboard: Dashboard,
    progress: Progress,
) -> Round:
    """Wait for the shift and the examples, run the round, wait for the roll-out and let the
    stream go on for `after_frames` more frames."""
    shift = options.clean_frames

    def uploaded() -> int:
        return watcher.samples[-1].uploaded if watcher.samples else 0

    _wait(lambda: len(stream.answers) > shift, stream)
    dashboard.phase = "shifted: collecting"
    console.print(f"frame {shift}: the images turn to {options.corruption} {options.severity}")
    if not _wait(lambda: uploaded() >= options.examples, stream):
        raise UserError(
            f"the stream's {stream.sent} frames gave {uploaded()} examples, fewer than "
            f"--examples {options.examples}: give more frames (--limit) or fewer --examples"
        )
    start, began = len(stream.answers), time.perf_counter()
    dashboard.phase = "adapt round in the cloud"
    console.print(f"frame {start}: the cloud holds {uploaded()} examples, adapt round begins")
    result = _adapt_round(registry, options.epochs, progress)
    seconds = time.perf_counter() - began
    end = len(stream.answers)
    version = result["published_version"]
    verdict = f"published v{version}, signed" if version else "gate refused, nothing published"
    console.print(f"frame {end}: adapt round done in {seconds:.0f} s: {verdict}")
    rollout = None
    if version:
        dashboard.phase = f"rolling out v{version}"

        def first_new() -> int | None:
            new = (a.frame for a in stream.answers[start:] if a.edge_version not in ("", old_edge))
            return next(new, None)

        _wait(lambda: first_new() is not None, stream, ROLLOUT_TIMEOUT_S)
        rollout = first_new()
        if rollout is not None:
            console.print(f"frame {rollout}: the agent answers with the new version")
    stream.stop_at((end if rollout is None else rollout) + options.after_frames)
    dashboard.phase = "adapted" if rollout is not None else "not adapted"
    return Round(Moments(shift, start, end, rollout), result, round(seconds, 1))


def _uplink(watcher: Watcher, stream: CameraStream, round_bytes: int) -> dict[str, Any]:
    """What went up: examples (count and bytes), escalated and audited images, and both per
    hour at this stream's rate."""
    examples, example_bytes = watcher.samples[-1].uploaded, watcher.uploaded_bytes
    images = int(watcher.status.bytes_to_cloud)
    seconds = time.perf_counter() - stream.started
    return {
        "examples": examples,
        "example_bytes": example_bytes,
        "round_example_bytes": round_bytes,
        "images_to_cloud_bytes": images,
        "per_hour_at_stream_rate": round((example_bytes + images) * 3600 / seconds),
    }


def run_drift(options: DriftOptions, report_path: Path) -> dict[str, Any]:
    """Run the scenario, write the JSON report and the PNG beside it; the report."""
    options.check()
    manifest = Manifest.load(built_family(FAMILY))
    frames = drift_frames(options)
    logs = report_path.parent / "logs"
    with ExitStack() as stack:
        work = Path(stack.enter_context(TemporaryDirectory()))
        repository = work / "triton"
        write_model(manifest, family_dir(FAMILY), repository)
        registry = Registry(work / "registry")
        v1 = registry.publish(FAMILY, family_dir(FAMILY)).manifest
        with console.status("starting Triton, the gateway (ModelSync) and the edge agent"):
            triton = stack.enter_context(TritonServer(repository, log_path=logs / "triton.log"))
            gateway = stack.enter_context(
                GatewayProcess([triton.grpc_url], logs / "gateway.log", registry=registry.root)
            )
            edge = stack.enter_context(
                EdgeProcess(
                    FAMILY,
                    triton.grpc_url,
                    logs / "edge.log",
                    *("--sync-url", gateway.url, "--artifacts", str(work / "edge")),
                    *("--trusted-keys", str(keys_dir()), "--edge-id", EDGE_ID),
                    *("--audit-rate", str(options.audit_rate), "--collect"),
                    *("--upload-interval", str(UPLOAD_INTERVAL_S)),
                )
            )
        console.print(
            f"Triton at {triton.grpc_url}, ModelSync at {gateway.url} (registry: {FAMILY} "
            f"v{v1.version}), edge agent at {edge.address} following it (plaintext on loopback)"
        )
        stream = CameraStream(edge.address, frames, options.fps, options.window)
        watcher = Watcher(edge.address, stream, store_path(work / "edge", FAMILY), registry.root)
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
            TimeElapsedColumn(),
            console=console,
        )
        dashboard = Dashboard(stream, watcher, progress)
        stack.callback(watcher.stop)
        stack.callback(stream.join)
        stack.callback(stream.stop_at, 0)  # on the way out: the stream first, then the watcher
        stack.enter_context(Live(dashboard, console=console, refresh_per_second=4))
        stream.start()
        watcher.start()
        done = _scenario(options, registry, v1.edge.key, stream, watcher, dashboard, progress)
        stream.join()
        watcher.stop()
        uplink = _uplink(watcher, stream, done.adapt["examples"]["bytes"])
        status = watcher.status
    report = {
        "scenario": "drift",
        "family": FAMILY,
        "options": asdict(options),
        **build_report(stream.answers, watcher.samples, done.moments, stream.sent),
        "stream_failure": stream.failure,
        "versions": {
            "edge": [v1.edge.key, status.versions.edge],
            "manifest": [v1.version, status.manifest_version],
            "cloud": status.versions.cloud,
        },
        "adapt": {**done.adapt, "seconds": done.seconds},
        "uplink_bytes": uplink,
    }
    png = report_path.with_suffix(".png")
    title = f"{FAMILY}: {options.corruption} {options.severity} from frame {options.clean_frames}"
    report["png"] = str(plot(stream.answers, watcher.samples, done.moments, title, png))
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(summary_table(report))
    console.print(f"report: {report_path}, plot: {png}")
    return report


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summary_table(report: dict[str, Any]) -> Table:
    """Each phase's figures, then the round, the versions, the uplink and the failures."""
    table = Table(title=f"edgecascade demo --scenario drift: {report['family']}")
    for column in ("phase", "frames", "escalated", "audited agreement", "edge acc", "cascade acc"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    for name, phase in report["phases"].items():
        table.add_row(
            name,
            str(phase["answered"]),
            _percent(phase["escalation_rate"]),
            _percent(phase["agreement"]),
            _percent(phase["accuracy"]["edge"]),
            _percent(phase["accuracy"]["cascade"]),
        )
    gate = report["adapt"]["gate"]
    uplink = report["uplink_bytes"]
    table.add_section()
    table.add_row(
        "adapt round",
        f"{report['adapt']['seconds']:.0f} s",
        "gate",
        "passed" if gate["passed"] else "refused",
    )
    table.add_row("edge versions", " -> ".join(report["versions"]["edge"]))
    table.add_row("uplink", f"{uplink['examples']} examples", f"{uplink['example_bytes']:,} B")
    table.add_row(
        "failed requests", str(report["failed_requests"]), "degraded", str(report["degraded"])
    )
    return table
