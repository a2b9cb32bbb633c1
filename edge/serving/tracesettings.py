"""Triton's trace settings (KServe TraceSetting, `tritonclient`'s get/update_trace_settings) over
the agent's OpenTelemetry tracing (cloud/common/tracing.py): `trace_level` OFF or TIMESTAMPS
turns the agent's spans off or on (on only with a collector: --otlp-endpoint), `trace_rate` N
samples one in N of the traces started here (--trace-ratio 1/N); `trace_mode`, `trace_count`,
`log_frequency` and `trace_file` are shown, not changed. An empty value sets a setting back to
what it was when first changed, as Triton clears a setting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgecascade.cloud.common import tracing
from edgecascade.cloud.common.errors import InvalidInput

Settings = dict[str, list[str]]
LEVELS = ("OFF", "TIMESTAMPS")
FIXED = {
    "trace_count": ["-1"],
    "log_frequency": ["0"],
    "trace_file": [""],
    "trace_mode": ["opentelemetry"],
}
_at_start: Settings = {}


def current() -> Settings:
    ratio = tracing.ratio()
    rate = round(1 / ratio) if ratio > 0 else 0  # 0: no trace is started here
    return {
        "trace_level": ["TIMESTAMPS" if tracing.making_spans() else "OFF"],
        "trace_rate": [str(rate)],
        **FIXED,
    }


def _checked(name: str, values: Sequence[str]) -> list[str]:
    """`values` of setting `name` if the agent can take them; else InvalidInput saying why."""
    values = list(values)
    if name in FIXED:
        if values != FIXED[name]:
            raise InvalidInput(f"{name} cannot be changed on an edge agent (it is {FIXED[name]})")
    elif name == "trace_level":
        if len(values) != 1 or values[0] not in LEVELS:
            raise InvalidInput(f"trace_level is one of {', '.join(LEVELS)}, got {values}")
        if values == ["TIMESTAMPS"] and not tracing.exporting():
            raise InvalidInput(
                "trace_level TIMESTAMPS: the agent exports no spans; start it with "
                f"--otlp-endpoint or {tracing.ENDPOINT_VARIABLE} to trace"
            )
    elif name == "trace_rate":
        if len(values) != 1 or not values[0].isdigit() or int(values[0]) < 1:
            raise InvalidInput(f"trace_rate is a whole number >= 1 (one trace in N), got {values}")
    else:
        known = ["trace_level", "trace_rate", *FIXED]
        raise InvalidInput(f"unknown trace setting {name!r}: the agent has {known}")
    return values


def update(settings: Mapping[str, Sequence[str]]) -> Settings:
    """Apply `settings` (Triton's names; an empty value: back to the first value), then return
    them all; InvalidInput names a setting that is unknown, of the wrong form or not
    changeable here, and nothing is changed."""
    if not _at_start:
        _at_start.update(current())
    wanted = {}
    for name, values in settings.items():
        if name not in _at_start:
            _checked(name, values)  # says it is unknown
        wanted[name] = _checked(name, values) if values else _at_start[name]
    if "trace_level" in wanted:
        tracing.set_enabled(wanted["trace_level"] == ["TIMESTAMPS"])
    if "trace_rate" in wanted:
        rate = int(wanted["trace_rate"][0])
        tracing.set_ratio(1 / rate if rate else 0.0)
    return current()
