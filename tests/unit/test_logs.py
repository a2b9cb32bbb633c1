"""Log lines as text or JSON, with the trace of the span they were logged in."""

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from edgecascade.cloud.common import logs
from edgecascade.edge.serving import logsettings


@pytest.fixture(autouse=True)
def _root_as_it_was() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def record(message: str, *args: object, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(
        "edgecascade.edge", logging.WARNING, __file__, 1, message, args, exc_info
    )


def test_a_json_line_has_time_level_logger_and_message():
    line = json.loads(logs.JsonFormatter().format(record("cloud %s is slow: %d ms", "é", 900)))
    assert line.keys() == {"time", "level", "logger", "message"}
    assert line["level"] == "WARNING" and line["logger"] == "edgecascade.edge"
    assert line["message"] == "cloud é is slow: 900 ms"
    assert line["time"].endswith("+00:00") and "T" in line["time"]


def test_inside_a_span_the_line_carries_its_trace_and_span_ids():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("Classify") as span:
        line = json.loads(logs.JsonFormatter().format(record("answered")))
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_an_exception_is_in_the_line():
    try:
        raise RuntimeError("the model went away")
    except RuntimeError:
        line = json.loads(logs.JsonFormatter().format(record("failed", exc_info=sys.exc_info())))
    assert "RuntimeError: the model went away" in line["exception"]


def test_configure_replaces_its_own_handler_only_and_sets_the_level():
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    logs.configure("json", "warning")
    logs.configure("json", "debug")
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h.formatter, logs.JsonFormatter)]
    assert len(ours) == 1 and other in root.handlers and root.level == logging.DEBUG
    assert logs.current_format() == "json"
    logs.set_format("default")
    assert logs.current_format() == "default" and not isinstance(
        ours[0].formatter, logs.JsonFormatter
    )


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="'xml' is not one of default, json"):
        logs.formatter("xml")


def test_triton_log_settings_switch_the_agents_lines_to_json_and_back():
    logs.configure("default", "info")
    assert logsettings.current()["log_format"] == "default"
    assert logsettings.update({"log_format": "json"})["log_format"] == "json"
    assert logs.current_format() == "json"
    assert logsettings.update({"log_format": "default"})["log_format"] == "default"
