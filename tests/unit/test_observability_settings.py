"""The log and trace settings of the agent and the gateway: defaults, and a wrong value named
with where it came from."""

import pytest

from edgecascade.edge.serving.settings import ConfigError, load_settings
from edgecascade.router.gateway.settings import load_gateway_settings

AGENT = {"insecure": True}


def test_by_default_text_logs_at_info_and_no_export():
    settings = load_settings(None, AGENT)
    assert (settings.log_format, settings.log_level) == ("default", "info")
    assert settings.otlp_endpoint is None and settings.trace_ratio == 1.0
    gateway = load_gateway_settings(None, {"upstream": ["127.0.0.1:8001"]})
    assert (gateway.log_format, gateway.log_level, gateway.access_log) == ("default", "info", False)


def test_the_agent_takes_json_logs_and_a_collector(monkeypatch):
    monkeypatch.setenv("EDGECASCADE_LOG_FORMAT", "json")
    options = {**AGENT, "otlp_endpoint": "http://127.0.0.1:4318", "trace_ratio": 0.1}
    settings = load_settings(None, options)
    assert settings.log_format == "json" and settings.otlp_endpoint == "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"log_format": "xml"}, "log_format (option --log-format): Input should be 'default' or"),
        ({"log_level": "loud"}, "log_level (option --log-level)"),
        ({"trace_ratio": 2}, "trace_ratio (option --trace-ratio): Input should be less than"),
        ({"otlp_endpoint": "127.0.0.1:4318"}, "otlp_endpoint (option --otlp-endpoint): OTLP"),
    ],
)
def test_a_wrong_value_is_named_with_its_option(options, expected: str):
    with pytest.raises(ConfigError) as err:
        load_settings(None, {**AGENT, **options})
    assert expected in str(err.value)


def test_the_gateway_refuses_an_unknown_log_format():
    with pytest.raises(ConfigError, match="log_format \\(option --log-format\\)"):
        load_gateway_settings(None, {"upstream": ["127.0.0.1:8001"], "log_format": "ISO8601"})
