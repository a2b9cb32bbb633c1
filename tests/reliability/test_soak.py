"""A soak: camera streams as fast as an agent answers them (its calibrated threshold, escalating
to the real Triton) for EDGECASCADE_SOAK_S seconds (`make reliability`: 1800; unset, as in `make
test`: 20), the agent's RSS, open fds and threads sampled every second. After a warm-up (the
first quarter), a run of 10 minutes or more fails on growth (RSS slope of 1 MB per 10 minutes or
more, fds or threads growing); a shorter one on any fd or thread growth or 32 MB more RSS. The
figures go into the reliability report (`soak`)."""

import os
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from edgecascade.cloud.common.transport import PLAINTEXT
from edgecascade.edge.tools.process import EdgeProcess
from edgecascade.edge.tools.samples import labelled_frames
from tests.reliability.report import Report, agent_figures
from tests.traffic import Traffic, summary

SOAK_VARIABLE = "EDGECASCADE_SOAK_S"
SECONDS = float(os.environ.get(SOAK_VARIABLE, "20"))
pytestmark = [pytest.mark.integration, pytest.mark.timeout(SECONDS + 600)]
STREAMS = 4
LONG_RUN_S = 600.0  # from here the slope is judged
MB = 1 << 20
RSS_SLOPE_MB_PER_10_MIN = 1.0
SHORT_RUN_RSS_MB = 32.0  # RSS swings by about 15 MB within a minute here


@pytest.fixture(scope="module")
def soaked(triton, tmp_path_factory) -> Iterator[EdgeProcess]:
    log = tmp_path_factory.mktemp("soak") / "edge.log"
    with EdgeProcess("fashion", triton.grpc_url, log) as edge:
        yield edge


def sample(agent: EdgeProcess, samples: list[tuple[float, dict[str, int]]], done) -> None:
    started = time.perf_counter()
    while not done.wait(1.0):
        samples.append((time.perf_counter() - started, agent_figures(agent)))


def slope(times: np.ndarray, values: np.ndarray) -> float:
    """Least-squares growth per second."""
    return float(np.polyfit(times, values, 1)[0])


def test_streams_for_the_soak_time_leave_rss_fds_and_threads_flat(
    soaked: EdgeProcess, report: Report
) -> None:
    samples: list[tuple[float, dict[str, int]]] = []
    done = threading.Event()
    sampler = threading.Thread(target=sample, args=(soaked, samples, done))
    frames = labelled_frames("fashion", 200)
    with PLAINTEXT.channel(soaked.address) as channel:
        traffic = Traffic(channel, frames, streams=STREAMS, unary=0, interval_s=0.0).start()
        sampler.start()
        time.sleep(SECONDS)
        outcomes = traffic.stop()
        done.set()
        sampler.join(10)
    warm = [(t, s) for t, s in samples if t >= SECONDS / 4]
    assert len(warm) >= 5, f"{len(samples)} samples in {SECONDS} s"
    t = np.array([t for t, _ in warm])
    series = {k: np.array([s[k] for _, s in warm], dtype=float) for k in warm[0][1]}
    figures = {
        "seconds": SECONDS,
        "streams": STREAMS,
        **summary(outcomes),
        "frames_per_s": round(len(outcomes) / SECONDS, 1),
        "rss_mb": {
            "start": round(samples[0][1]["rss_bytes"] / MB, 1),
            "after_warm_up": round(series["rss_bytes"][0] / MB, 1),
            "end": round(series["rss_bytes"][-1] / MB, 1),
            "slope_mb_per_10_min": round(slope(t, series["rss_bytes"]) * 600 / MB, 3),
        },
        **{
            name: {
                "after_warm_up": int(series[name][0]),
                "max": int(series[name].max()),
                "end": int(series[name][-1]),
                "slope_per_10_min": round(slope(t, series[name]) * 600, 3),
            }
            for name in ("open_fds", "threads")
        },
    }
    report.figures["soak"] = figures
    assert figures["failed"] == 0, figures
    for name in ("open_fds", "threads"):  # a stream's worker threads come and go: +2 at most
        assert figures[name]["max"] <= figures[name]["after_warm_up"] + 2, (name, figures)
    rss = figures["rss_mb"]
    if SECONDS >= LONG_RUN_S:
        assert rss["slope_mb_per_10_min"] < RSS_SLOPE_MB_PER_10_MIN, figures
    else:
        assert rss["end"] - rss["after_warm_up"] < SHORT_RUN_RSS_MB, figures
