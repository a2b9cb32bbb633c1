"""The log output of every serving command: `default` text lines or `json` lines, at a level
set by option. A JSON line has time, level, logger and message, and trace_id and span_id when it
was logged inside a span; lines of other programs (HAProxy, gRPC's C core) keep their own
format on their own streams, or say which logger they come from."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal, get_args

from edgecascade.cloud.common.serving import LOG_FORMAT
from edgecascade.cloud.common.tracing import current_ids

LogFormat = Literal["default", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]
FORMATS: tuple[str, ...] = get_args(LogFormat)
_HANDLER = "edgecascade"  # the name of the handler `configure` puts on the root logger


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` ("default" or "json"); ValueError for another."""
    if log_format == "json":
        return JsonFormatter()
    if log_format == "default":
        return logging.Formatter(LOG_FORMAT)
    raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")


def configure(log_format: str = "default", level: str = "info") -> None:
    """Log to stderr in `log_format` from `level` up (this process's handler replaced, any
    other left alone)."""
    _install(formatter(log_format))
    logging.getLogger().setLevel(level.upper())


def current_format() -> str:
    """The format of the handler `configure` installed ("default" without one)."""
    ours = _ours()
    return "json" if ours and isinstance(ours[0].formatter, JsonFormatter) else "default"


def set_format(log_format: str) -> None:
    """Switch this process's log lines to `log_format` (the level stays); ValueError for an
    unknown format."""
    chosen = formatter(log_format)
    for handler in _ours() or [_install(chosen)]:
        handler.setFormatter(chosen)


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if h.get_name() == _HANDLER]


def _install(chosen: logging.Formatter) -> logging.Handler:
    """A stderr handler with `chosen` on the root logger, in place of the one installed before."""
    handler = logging.StreamHandler()
    handler.set_name(_HANDLER)
    handler.setFormatter(chosen)
    root = logging.getLogger()
    for old in _ours():
        root.removeHandler(old)
    root.addHandler(handler)
    return handler
